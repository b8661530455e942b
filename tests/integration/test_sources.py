"""Source adapters (pipelines/sources, docs/sources.md): FHIR R4 and OMOP CDM exports load into
the same canonical raw tables as Synthea CSV, with nothing lost, and give the same study.

Real third-party samples in ../shared/fhir and ../shared/omop (see their READMEs); expected
counts are recomputed here straight from the files with Python's json/csv modules.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from conftest import SHARED

from pipelines import warehouse as wh
from pipelines.codesystems import DEFAULT_SYSTEM, canonical_system
from pipelines.errors import IngestError
from pipelines.flags import FLAGS
from pipelines.generator.params import PlantedParameters
from pipelines.models import build_models
from pipelines.settings import StudySettings
from pipelines.sources import detect_format, load_source

FHIR = SHARED / "fhir"
OMOP = SHARED / "omop"
EVINETT_FHIR = FHIR / "evinett_synthea_AUC"
EVINETT_CSV = SHARED / "synthea" / "Evinett_synthea_AUC"
QUIET = {"log": lambda message: None}


def table(con, sql: str, params=None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def counts(warehouse: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(rows per raw table, quarantined rows per table)."""
    with wh.open_warehouse(warehouse, read_only=True) as con:
        rows = dict(table(con, "SELECT table_name, n_rows FROM meta.source_tables"))
        bad = dict(
            table(
                con,
                "SELECT coalesce(table_name, '(file)'), count(*) FROM meta.quarantine GROUP BY ALL",
            )
        )
    return rows, bad


# ---------------------------------------------------------------- FHIR: expected from the files

FHIR_TABLES = {
    "Patient": "patients",
    "Encounter": "encounters",
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationRequest": "medications",
    "MedicationStatement": "medications",
    "Procedure": "procedures",
    "ImagingStudy": "imaging_studies",
}


def fhir_resources(folder: Path) -> list[dict]:
    """Every resource of the export, read with the json module (Bundles and NDJSON)."""
    out = []
    for path in sorted(folder.iterdir()):
        if path.name.endswith((".ndjson", ".ndjson.gz")) and path.name != "log.ndjson":
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                out += [json.loads(line) for line in f if line.strip()]
        elif path.suffix == ".json":
            bundle = json.loads(path.read_text(encoding="utf-8"))
            out += [e["resource"] for e in bundle.get("entry", [])]
    return out


def expected_fhir_rows(folder: Path) -> Counter:
    """Canonical rows each resource should give: one per coding of the matched concept, one
    per component of a component-only Observation, one per instance of an ImagingStudy."""
    expected: Counter = Counter()
    for r in fhir_resources(folder):
        t = FHIR_TABLES.get(r["resourceType"])
        if t is None:
            continue
        if t == "conditions" or t == "procedures":
            n = max(1, len(r.get("code", {}).get("coding", [])))
        elif t == "observations":
            parts = r.get("component", [])
            has_value = any(k.startswith("value") for k in r)
            items = ([r] if has_value or not parts else []) + parts
            n = sum(max(1, len(p.get("code", {}).get("coding", []))) for p in items)
        elif t == "imaging_studies":
            n = sum(max(1, len(s.get("instance", []))) for s in r.get("series", [])) or 1
        else:
            n = 1
        expected[t] += n
    return expected


@pytest.fixture(scope="module")
def fhir_loaded(tmp_path_factory) -> dict[str, Path]:
    """Each real FHIR sample loaded (auto-detected) into its own warehouse."""
    out = {}
    for folder in sorted(p for p in FHIR.iterdir() if p.is_dir()):
        warehouse = tmp_path_factory.mktemp(folder.name) / "warehouse.duckdb"
        load_source(folder, warehouse, "auto", **QUIET)
        out[folder.name] = warehouse
    return out


def test_every_real_fhir_sample_is_detected_as_fhir():
    for folder in (p for p in FHIR.iterdir() if p.is_dir()):
        assert detect_format(folder) == "fhir", folder.name


def test_real_fhir_samples_load_with_no_record_lost(fhir_loaded):
    for name, warehouse in fhir_loaded.items():
        rows, bad = counts(warehouse)
        expected = expected_fhir_rows(FHIR / name)
        assert bad == {}, name  # these samples hold no bad record
        assert {t: n for t, n in rows.items() if n} == dict(expected), name


def test_bulk_ndjson_without_observation_reports_observations_absent(fhir_loaded):
    with wh.open_warehouse(fhir_loaded["smart_bulk_10_patients"], read_only=True) as con:
        present = dict(table(con, "SELECT table_name, is_present FROM meta.source_tables"))
    assert present["observations"] is False and present["imaging_studies"] is False
    assert present["medications"] is True and present["procedures"] is True


def test_a_study_run_on_bulk_ndjson_reports_observation_flags_not_ascertainable(tmp_path):
    from pipelines import study

    warehouse = tmp_path / "warehouse.duckdb"
    result = study.run_study(
        FHIR / "smart_bulk_10_patients", warehouse, StudySettings(sensitivity_analyses=()),
        report=tmp_path / "report.html", say=lambda _: None,
    )  # fmt: skip
    assert result.status == "succeeded" and (tmp_path / "report.html").exists()
    # the run dropped its build after publishing: build the models again to read one
    study.step_models(warehouse, StudySettings(sensitivity_analyses=()))
    with wh.open_warehouse(warehouse, read_only=True) as con:
        ascertainable = dict(
            table(
                con,
                "SELECT flag, is_ascertainable FROM intermediate__build.int_flag_ascertainability",
            )
        )
    assert ascertainable["weight_loss"] is False and ascertainable["elevated_alp"] is False
    assert ascertainable["failed_conservative_therapy"] is True


def test_batch_bundles_of_minors_give_a_clear_empty_cohort(fhir_loaded):
    warehouse = fhir_loaded["nimbus_covid19_juvenile"]
    with wh.open_warehouse(warehouse) as con:
        build_models(con, StudySettings())
        assert table(con, "SELECT count(*) FROM raw.patients") == [(10,)]
        assert table(con, "SELECT count(*) FROM mart.cohort") == [(0,)]


def test_a_malformed_ndjson_line_is_quarantined_and_the_rest_of_the_file_loads(tmp_path):
    folder = tmp_path / "bulk"
    folder.mkdir()
    src = FHIR / "smart_bulk_10_patients"
    for name in ("Patient.000.ndjson", "Encounter.000.ndjson", "Condition.000.ndjson"):
        (folder / name).write_bytes((src / name).read_bytes())
    lines = (src / "Condition.000.ndjson").read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4][: len(lines[4]) // 2]  # an interrupted copy: half a resource
    lines[7] = ""  # a blank line does not shift the numbers of the lines after it
    lines[11] = '{"id": "no resource type"}'  # JSON, but not a FHIR resource
    (folder / "Condition.000.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    with wh.open_warehouse(warehouse, read_only=True) as con:
        assert table(
            con, "SELECT source_file, source_line, reason FROM meta.quarantine ORDER BY ALL"
        ) == [
            ("Condition.000.ndjson", 5, "malformed_json"),
            ("Condition.000.ndjson", 12, "missing_value"),
        ]
        loaded = table(con, "SELECT source_line FROM raw.conditions ORDER BY source_line")
    assert [line for (line,) in loaded] == [i + 1 for i in range(len(lines)) if i not in (4, 7, 11)]


def test_a_resource_without_a_code_or_patient_is_quarantined_with_its_reason(tmp_path):
    folder = tmp_path / "bulk"
    folder.mkdir()
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-02-03"}
    encounter = {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"},
                 "period": {"start": "2020-01-01T10:00:00+02:00"}}  # fmt: skip
    conditions = [
        {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
         "onsetDateTime": "2020-01-01", "code": {"text": "back pain, not coded"}},
        {"resourceType": "Condition", "subject": {"reference": "Patient/nobody"},
         "onsetDateTime": "2020-01-01", "code": {"coding": [{"code": "279039007"}]}},
        {"resourceType": "Condition", "subject": {"reference": "urn:uuid:p1"},
         "onsetDateTime": "2020-02-30", "code": {"coding": [{"code": "279039007"}]}},
        {"resourceType": "Condition", "subject": {"reference": "https://x.org/fhir/Patient/p1"},
         "onsetDateTime": "2020-03-01", "code": {"coding": [
             {"system": "http://snomed.info/sct", "code": "279039007"},
             {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.5"}]}},
    ]  # fmt: skip
    for name, resources in (
        ("Patient.ndjson", [patient]),
        ("Encounter.ndjson", [encounter]),
        ("Condition.ndjson", conditions),
    ):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in resources))
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    with wh.open_warehouse(warehouse, read_only=True) as con:
        assert table(
            con, "SELECT source_line, column_name, reason FROM meta.quarantine ORDER BY ALL"
        ) == [
            (1, "code", "missing_value"),
            (2, "patient_id", "unknown_patient"),
            (3, "start_date", "unparseable_date"),
        ]
        assert table(
            con, "SELECT patient_id, start_date, code_system, code, source_line FROM raw.conditions"
        ) == [
            ("p1", dt.date(2020, 3, 1), "http://snomed.info/sct", "279039007", 4),
            ("p1", dt.date(2020, 3, 1), "http://hl7.org/fhir/sid/icd-10-cm", "M54.5", 4),
        ]
        # a timestamp with an offset is stored in UTC, as the Synthea CSV writes it
        assert table(con, "SELECT start_at, sex FROM raw.encounters, raw.patients") == [
            (dt.datetime(2020, 1, 1, 8, 0), "F")
        ]


def test_fhir_components_medication_statements_and_references_map_as_documented(tmp_path):
    folder = tmp_path / "bulk"
    folder.mkdir()
    resources = {
        "Patient": [{"resourceType": "Patient", "id": "p1", "gender": "male",
                     "birthDate": "1950-01-01", "deceasedDateTime": "2024-05-06T23:30:00-05:00"}],
        "Observation": [
            {"resourceType": "Observation", "subject": {"reference": "Patient/p1/_history/2"},
             "effectiveDateTime": "2023-01-02T03:04:05Z",
             "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
             "component": [
                 {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                  "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
                 {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                  "valueQuantity": {"value": 80.5, "unit": "mm[Hg]"}}]},
            {"resourceType": "Observation", "subject": {"reference": "Patient/p1"},
             "effectivePeriod": {"start": "2023-01-03T00:00:00+01:00"},
             "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
             "valueQuantity": {"value": 70.2, "unit": "kg"}},
        ],
        "MedicationStatement": [
            {"resourceType": "MedicationStatement", "subject": {"reference": "Patient/p1"},
             "effectivePeriod": {"start": "2023-02-01T08:00:00Z", "end": "2023-03-01T08:00:00Z"},
             "medicationReference": {"reference": "Medication/m1"}}],
        "Medication": [{"resourceType": "Medication", "id": "m1", "code": {"coding": [
            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "313782"}]}}],
        # required tables must have rows (pipelines/guards.py)
        "Encounter": [{"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"},
                       "period": {"start": "2023-01-02T03:00:00Z", "end": "2023-01-02T04:00:00Z"},
                       "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003"}]}]}],
        "Condition": [{"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                       "onsetDateTime": "2023-01-02T03:00:00Z",
                       "code": {"coding": [{"system": "http://snomed.info/sct", "code": "278860009"}]}}],
    }  # fmt: skip
    for name, items in resources.items():
        (folder / f"{name}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in items))
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "auto", **QUIET)
    with wh.open_warehouse(warehouse, read_only=True) as con:
        assert table(con, "SELECT patient_id, death_date, sex FROM raw.patients") == [
            ("p1", dt.date(2024, 5, 6), "M")  # the date as written, not shifted to UTC
        ]
        assert table(
            con,
            "SELECT patient_id, observed_at, code, value, units, value_type FROM raw.observations"
            " ORDER BY code",
        ) == [
            ("p1", dt.datetime(2023, 1, 2, 23, 0), "29463-7", "70.2", "kg", "numeric"),
            ("p1", dt.datetime(2023, 1, 2, 3, 4, 5), "8462-4", "80.5", "mm[Hg]", "numeric"),
            ("p1", dt.datetime(2023, 1, 2, 3, 4, 5), "8480-6", "120", "mm[Hg]", "numeric"),
        ]
        assert table(con, "SELECT patient_id, start_at, stop_at, code FROM raw.medications") == [
            ("p1", dt.datetime(2023, 2, 1, 8), dt.datetime(2023, 3, 1, 8), "313782")
        ]
        assert table(con, "SELECT count(*) FROM meta.quarantine") == [(0,)]


# ---------------------------------------------------------------- FHIR: the CSV twin

# The Evinett FHIR Bundles and CSV files come from two runs of the same seeds 2 h 12 min 14 s
# apart (hospitalInformation1758159635210 vs ...167569434): every CSV timestamp is that much
# later, and a date written from a timestamp may fall on the next day.
TWIN_SHIFT = dt.timedelta(milliseconds=1758167569434 - 1758159635210)


@pytest.fixture(scope="module")
def twins(fhir_loaded, tmp_path_factory):
    """(fhir connection, csv connection) on the Evinett twin, models built on both."""
    csv_warehouse = tmp_path_factory.mktemp("evinett_csv") / "warehouse.duckdb"
    load_source(EVINETT_CSV, csv_warehouse, "auto", **QUIET)
    cons = []
    for warehouse in (fhir_loaded["evinett_synthea_AUC"], csv_warehouse):
        con = wh.connect(warehouse)
        build_models(con, StudySettings())
        cons.append(con)
    yield tuple(cons)
    for con in cons:
        con.close()


def canonical_codes(con, name: str) -> Counter:
    """(patient, encounter, canonical code system, code) of every row of a raw table."""
    rows = table(con, f"SELECT patient_id, encounter_id, code_system, code FROM raw.{name}")
    return Counter(
        (p, e, canonical_system(s) if s else DEFAULT_SYSTEM[name], c) for p, e, s, c in rows
    )


@pytest.mark.parametrize("name", ["conditions", "procedures", "medications"])
def test_fhir_bundles_give_the_same_coded_records_as_their_csv_twin(twins, name):
    fhir, csv = twins
    assert canonical_codes(fhir, name) == canonical_codes(csv, name)


def test_fhir_bundles_give_the_same_encounters_and_patients_as_their_csv_twin(twins):
    fhir, csv = twins
    sql = (
        "SELECT encounter_id, patient_id, code, reason_code, start_at, stop_at FROM raw.encounters"
    )
    f = {r[0]: r for r in table(fhir, sql)}
    c = {r[0]: r for r in table(csv, sql)}
    assert f.keys() == c.keys()
    for key in f:
        assert f[key][:4] == c[key][:4]
        # the two runs' clocks differ by TWIN_SHIFT (to the second, rounding of milliseconds)
        assert abs(c[key][4] - f[key][4] - TWIN_SHIFT) <= dt.timedelta(seconds=1)
    sql = "SELECT patient_id, sex, birth_date, death_date FROM raw.patients ORDER BY 1"
    for (pf, sf, bf, df), (pc, sc, bc, dc) in zip(table(fhir, sql), table(csv, sql), strict=True):
        assert (pf, sf, df is None) == (pc, sc, dc is None)
        assert (bc - bf).days in (0, 1)


def test_fhir_imaging_studies_give_the_same_rows_as_their_csv_twin(twins):
    fhir, csv = twins
    sql = (
        "SELECT imaging_study_id, patient_id, encounter_id, body_site_code, modality_code,"
        " procedure_code FROM raw.imaging_studies"
    )
    assert Counter(table(fhir, sql)) == Counter(table(csv, sql))


def test_fhir_observations_the_study_reads_are_those_of_the_csv_twin(twins):
    """Body weight and alkaline phosphatase (LOINC): the same rows. The CSV writes numbers with
    one decimal (39.7), FHIR as computed (39.672); it also has rows FHIR carries elsewhere
    (QALY/DALY/QOLS, see the README) and writes commas in text values as two spaces."""
    fhir, csv = twins
    sql = (
        "SELECT patient_id, encounter_id, code, round(try_cast(value AS DOUBLE), 1), units"
        " FROM raw.observations WHERE code IN ('29463-7', '6768-6')"
    )
    f, c = Counter(table(fhir, sql)), Counter(table(csv, sql))
    assert f == c
    assert sum(f.values()) > 100
    everything = "SELECT patient_id, encounter_id, code FROM raw.observations"
    f, c = Counter(table(fhir, everything)), Counter(table(csv, everything))
    assert sum((f - c).values()) < 0.02 * sum(f.values())


def test_fhir_bundles_give_the_same_cohort_and_flags_as_their_csv_twin(twins):
    """Equal, except that a date may be one day later in the CSV (TWIN_SHIFT: here the index
    record, written at 22:xx local time in the FHIR run, falls after midnight in the CSV run)."""
    fhir, csv = twins
    for mart in ("mart.cohort", "mart.red_flags"):
        f = table(fhir, f"SELECT * FROM {mart} ORDER BY ALL")
        c = table(csv, f"SELECT * FROM {mart} ORDER BY ALL")
        assert len(f) == len(c) == 1, mart
        for vf, vc in zip(f[0], c[0], strict=True):
            if isinstance(vf, dt.date) and isinstance(vc, dt.date):
                assert (vc - vf).days in (0, 1), mart
            else:
                assert vf == vc, mart
    assert table(fhir, "SELECT patient_id FROM mart.cohort") == [
        ("92675303-ca5b-136a-169b-e764c5753f06",)
    ]


# ---------------------------------------------------------------- OMOP


def omop_rows(folder: Path, name: str) -> list[dict[str, str]]:
    path = next(p for p in folder.iterdir() if p.name.lower() == f"{name}.csv")
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def omop_id(value: str | None) -> str:
    return (value or "").removesuffix(".0")


def expected_omop_rows(folder: Path) -> Counter:
    """Canonical rows each CDM record should give: one per distinct concept (standard, source)
    found in the concept table, or one with its source value when none is found."""
    concepts = {omop_id(r["concept_id"]): r["vocabulary_id"] for r in omop_rows(folder, "concept")}
    concepts.pop("0", None)
    expected: Counter = Counter({"patients": len(omop_rows(folder, "person"))})
    expected["encounters"] = len(omop_rows(folder, "visit_occurrence"))
    prefixes = {
        "condition_occurrence": ("condition", "conditions"),
        "drug_exposure": ("drug", "medications"),
        "procedure_occurrence": ("procedure", "procedures"),
        "measurement": ("measurement", "observations"),
        "observation": ("observation", None),
    }
    for cdm_table, (prefix, target) in prefixes.items():
        if not any(p.name.lower() == f"{cdm_table}.csv" for p in folder.iterdir()):
            continue
        for r in omop_rows(folder, cdm_table):
            ids = {omop_id(r[f"{prefix}_concept_id"]), omop_id(r[f"{prefix}_source_concept_id"])}
            found = [concepts[i] for i in ids if i in concepts] or ["unmapped"]
            for vocabulary in found:
                into = target or ("observations" if vocabulary == "LOINC" else "conditions")
                expected[into] += 1
    return expected


@pytest.fixture(scope="module")
def omop_loaded(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for folder in sorted(p for p in OMOP.iterdir() if p.is_dir()):
        warehouse = tmp_path_factory.mktemp(folder.name) / "warehouse.duckdb"
        load_source(folder, warehouse, "auto", **QUIET)
        out[folder.name] = warehouse
    return out


def test_real_omop_samples_load_with_no_record_lost(omop_loaded):
    for name, warehouse in omop_loaded.items():
        rows, bad = counts(warehouse)
        assert bad == {}, name
        assert {t: n for t, n in rows.items() if n} == dict(expected_omop_rows(OMOP / name)), name


def test_omop_drug_records_with_ndc_or_cvx_source_codes_pass_the_input_contracts(omop_loaded):
    """GiBleed's drug records carry an NDC source concept beside the RxNorm one; the contract
    "code is RxNorm" applies to RxNorm (or system-less, Synthea) codes only."""
    from pipelines.contracts import validate_raw

    report = validate_raw(omop_loaded["gibleed_5.3"], raise_on_failure=False)
    assert report.success, report.format()
    with wh.open_warehouse(omop_loaded["gibleed_5.3"], read_only=True) as con:
        assert table(con, "SELECT count(*) FROM raw.medications WHERE code_system = 'NDC'")[0][0]


def test_omop_double_ids_and_concepts_become_plain_codes(omop_loaded):
    with wh.open_warehouse(omop_loaded["gibleed_5.3"], read_only=True) as con:
        assert table(con, "SELECT count(*) FROM raw.patients WHERE patient_id LIKE '%.%'") == [(0,)]
        assert table(
            con,
            "SELECT code_system, code, source_line FROM raw.conditions WHERE patient_id = '263'"
            " AND start_date = DATE '2015-10-02'",
        ) == [("SNOMED", "195662009", 2)]
        sexes = dict(table(con, "SELECT sex, count(*) FROM raw.patients GROUP BY ALL"))
        assert set(sexes) == {"F", "M"}
        periods = table(con, "SELECT count(*) FROM meta.observation_periods")
    assert periods == [(len(omop_rows(OMOP / "gibleed_5.3", "observation_period")),)]


def test_omop_without_measurement_reports_observations_absent(omop_loaded):
    with wh.open_warehouse(omop_loaded["omoplite_synthea1k"], read_only=True) as con:
        present = dict(table(con, "SELECT table_name, is_present FROM meta.source_tables"))
        unmapped = table(
            con, "SELECT count(*) FROM raw.medications WHERE code_system = 'OMOP source value'"
        )
    assert present["observations"] is False and present["medications"] is True
    # drug_concept_id 0 (27% of rows) mostly resolves through the source concept; the rest
    # still load, coded with their source value
    assert 0 < unmapped[0][0] < 1000


def test_omop_as_a_duckdb_database_or_parquet_gives_the_same_raw_tables(omop_loaded, tmp_path):
    """GiBleed as Eunomia ships it (a DuckDB file, DOUBLE ids) and as Parquet files."""
    source = OMOP / "gibleed_5.3"
    as_db, as_parquet = tmp_path / "db", tmp_path / "parquet"
    as_db.mkdir()
    as_parquet.mkdir()
    con = duckdb.connect(str(as_db / "cdm.duckdb"))
    for name in ("person", "visit_occurrence", "condition_occurrence", "concept", "death",
                 "drug_exposure", "measurement", "observation", "procedure_occurrence"):  # fmt: skip
        con.execute(
            f"CREATE TABLE {name} AS SELECT * FROM read_csv(?, header = true)",
            [str(source / f"{name}.csv")],
        )
        con.execute(f"COPY {name} TO '{as_parquet / (name + '.parquet')}' (FORMAT parquet)")
    con.close()
    want = {}
    with wh.open_warehouse(omop_loaded["gibleed_5.3"], read_only=True) as con:
        for t in ("patients", "conditions", "medications", "observations"):
            want[t] = table(
                con, f"SELECT * EXCLUDE (source_file, source_line) FROM raw.{t} ORDER BY ALL"
            )
    for folder in (as_db, as_parquet):
        warehouse = tmp_path / f"{folder.name}.duckdb"
        said = []
        load_source(folder, warehouse, "auto", log=said.append)
        assert said[0].startswith("source format: omop"), said
        with wh.open_warehouse(warehouse, read_only=True) as con:
            for t, rows in want.items():
                got = table(
                    con, f"SELECT * EXCLUDE (source_file, source_line) FROM raw.{t} ORDER BY ALL"
                )
                assert got == rows, (folder.name, t)


# ---------------------------------------------------------------- detection and errors


def test_a_folder_of_no_known_layout_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(IngestError, match="no Synthea CSV .* OMOP CDM .* or FHIR"):
        load_source(tmp_path, tmp_path / "w.duckdb", "auto", **QUIET)
    assert not (tmp_path / "w.duckdb").exists()


def test_a_folder_of_two_layouts_is_a_clear_error(tmp_path):
    (tmp_path / "patients.csv").write_bytes((EVINETT_CSV / "patients.csv").read_bytes())
    for name in ("Patient", "Encounter", "Condition"):  # the required tables (schema.py)
        src = FHIR / "smart_bulk_10_patients" / f"{name}.000.ndjson"
        (tmp_path / f"{name}.000.ndjson").write_bytes(src.read_bytes())
    with pytest.raises(IngestError, match=r"several layouts \(synthea, fhir\)"):
        load_source(tmp_path, tmp_path / "w.duckdb", "auto", **QUIET)
    assert counts_after(tmp_path / "w.duckdb", "fhir")["patients"] == 13  # explicit: fine


def counts_after(warehouse: Path, fmt: str) -> dict[str, int]:
    load_source(warehouse.parent, warehouse, fmt, **QUIET)
    return counts(warehouse)[0]


def test_auto_detection_says_what_it_found(tmp_path):
    said = []
    load_source(FHIR / "nimbus_covid19_juvenile", tmp_path / "w.duckdb", "auto", log=said.append)
    assert said[0] == "source format: fhir (auto-detected: FHIR R4: 12 JSON Bundle file(s))"


def test_a_fhir_load_replaces_a_csv_load_and_a_csv_load_after_it_rereads_every_file(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    load_source(EVINETT_CSV, warehouse, "synthea", **QUIET)
    # a different, smaller export: accepted knowingly (pipelines/guards.py)
    load_source(FHIR / "nimbus_covid19_juvenile", warehouse, "fhir", accept_shrink=True, **QUIET)
    assert counts(warehouse)[0]["patients"] == 10
    load_source(EVINETT_CSV, warehouse, "synthea", **QUIET)
    rows, _ = counts(warehouse)
    assert rows["patients"] == 11 and rows["encounters"] == 467


def test_a_failed_fhir_load_leaves_the_previous_raw_tables(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    # a different, smaller export: accepted knowingly (pipelines/guards.py)
    load_source(FHIR / "nimbus_covid19_juvenile", warehouse, "fhir", accept_shrink=True, **QUIET)
    folder = tmp_path / "no_patients"
    folder.mkdir()
    (folder / "Condition.ndjson").write_text('{"resourceType": "Condition"}\n')
    with pytest.raises(IngestError, match="no Patient resources"):
        load_source(folder, warehouse, "fhir", **QUIET)
    assert counts(warehouse)[0]["patients"] == 10
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT count(*) FROM raw.encounters").fetchone()[0] == 139
    con.close()


# ---------------------------------------------------------------- one population, three layouts

THREE_PATIENTS, THREE_SEED = 1500, 7  # every red flag fires at this size (checked below)
# the registry's flags that the generator plants (all of them, unless one was just added)
FLAG_NAMES = tuple(f for f in FLAGS if f in PlantedParameters().flags)


@pytest.fixture(scope="module")
def three_layouts(tmp_path_factory):
    """{layout: (connection, patient id of each raw id)}: one generated population written
    as Synthea CSV, OMOP CDM and FHIR NDJSON, each loaded (auto-detected) and built."""
    from pipelines.generator.convert import convert, generate_in_format

    root = tmp_path_factory.mktemp("three_layouts")
    generate_in_format(
        root / "synthea", "synthea", patients=THREE_PATIENTS, seed=THREE_SEED,
        progress=lambda _: None,
    )  # fmt: skip
    for fmt in ("omop", "fhir"):
        convert(root / "synthea", root / fmt, fmt)
        assert (root / fmt / "truth.json").read_bytes() == (
            root / "synthea" / "truth.json"
        ).read_bytes()
    out = {}
    for fmt in ("synthea", "omop", "fhir"):
        said = []
        load_source(root / fmt, root / f"{fmt}.duckdb", "auto", log=said.append)
        assert said[0].startswith(f"source format: {fmt} "), said
        con = wh.connect(root / f"{fmt}.duckdb")
        build_models(con, StudySettings())
        ids = {}
        if fmt == "omop":  # person_id is an integer; the Synthea id is person_source_value
            ids = {
                r["person_id"]: r["person_source_value"] for r in omop_rows(root / fmt, "person")
            }
        out[fmt] = (con, ids)
    yield out
    for con, _ in out.values():
        con.close()


def rows_with_patients(layout, sql: str) -> list[tuple]:
    """Rows of `sql` (first column a patient id, mapped back to the Synthea id), sorted."""
    con, ids = layout
    rows = [(ids.get(r[0], r[0]), *r[1:]) for r in table(con, sql)]
    return sorted(rows, key=lambda r: tuple((v is None, str(v)) for v in r))


@pytest.mark.parametrize("fmt", ["omop", "fhir"])
def test_one_population_gives_the_same_cohort_and_red_flags_in_every_layout(three_layouts, fmt):
    for mart in ("mart.cohort", "mart.red_flags"):
        want = rows_with_patients(three_layouts["synthea"], f"SELECT * FROM {mart}")
        assert rows_with_patients(three_layouts[fmt], f"SELECT * FROM {mart}") == want, mart
    fired = table(
        three_layouts[fmt][0],
        "SELECT " + ", ".join(f"count_if(flag_{f})" for f in FLAG_NAMES) + " FROM mart.red_flags",
    )[0]
    assert all(n > 0 for n in fired), dict(zip(FLAG_NAMES, fired, strict=True))


@pytest.mark.parametrize("fmt", ["omop", "fhir"])
def test_one_population_gives_the_same_flag_accuracy_in_every_layout(three_layouts, fmt):
    from pandas.testing import assert_frame_equal

    from pipelines.analysis import flag_accuracy_table, load_episodes

    settings = StudySettings()
    want = flag_accuracy_table(load_episodes(three_layouts["synthea"][0]), settings)
    got = flag_accuracy_table(load_episodes(three_layouts[fmt][0]), settings)
    assert len(want) > 0
    assert_frame_equal(got, want)


# (patient, canonical code system, code, date) of each coded raw table
CODED_SQL = {
    "conditions": "SELECT patient_id, code_system, code, start_date, stop_date FROM raw.conditions",
    "observations": (
        "SELECT patient_id, code_system, code, observed_at, try_cast(value AS DECIMAL(18, 4)),"
        " units FROM raw.observations"
    ),
    "medications": "SELECT patient_id, code_system, code, start_at FROM raw.medications",
    "procedures": "SELECT patient_id, code_system, code, start_at, stop_at FROM raw.procedures",
}


def coded_rows(layout, name: str) -> Counter:
    return Counter(
        (p, canonical_system(s) if s else DEFAULT_SYSTEM[name], c.upper().replace(".", ""), *rest)
        for p, s, c, *rest in rows_with_patients(layout, CODED_SQL[name])
    )


def test_fhir_gives_the_same_raw_records_as_the_csv_it_was_made_from(three_layouts):
    csv_layout, fhir_layout = three_layouts["synthea"], three_layouts["fhir"]
    for name in CODED_SQL:
        assert coded_rows(fhir_layout, name) == coded_rows(csv_layout, name), name
    for sql in (
        "SELECT patient_id, birth_date, death_date, sex FROM raw.patients",
        "SELECT patient_id, encounter_id, start_at, stop_at, reason_code FROM raw.encounters",
        "SELECT patient_id, imaging_study_id, studied_at, body_site_code, modality_code,"
        " procedure_code FROM raw.imaging_studies",
    ):
        assert rows_with_patients(fhir_layout, sql) == rows_with_patients(csv_layout, sql), sql


def test_omop_gives_the_same_raw_records_as_the_csv_it_was_made_from(three_layouts):
    """Except where the CDM has no place for them: an encounter's reason is a condition on the
    visit day, an imaging study a procedure (docs/sources.md)."""
    csv_layout, omop_layout = three_layouts["synthea"], three_layouts["omop"]
    for name in ("observations", "medications"):
        assert coded_rows(omop_layout, name) == coded_rows(csv_layout, name), name
    reasons = Counter(
        (p, "SNOMED", c, d, d)
        for p, c, d in rows_with_patients(
            csv_layout,
            "SELECT patient_id, reason_code, CAST(start_at AS DATE) FROM raw.encounters"
            " WHERE reason_code IS NOT NULL",
        )
    )
    assert coded_rows(omop_layout, "conditions") == coded_rows(csv_layout, "conditions") + reasons
    imaging = Counter(
        (p, "SNOMED", c, t, None)
        for p, c, t in rows_with_patients(
            csv_layout, "SELECT patient_id, procedure_code, studied_at FROM raw.imaging_studies"
        )
    )
    assert coded_rows(omop_layout, "procedures") == coded_rows(csv_layout, "procedures") + imaging
    for sql in (
        "SELECT patient_id, birth_date, death_date, sex FROM raw.patients",
        "SELECT patient_id, start_at, stop_at FROM raw.encounters",
    ):
        assert rows_with_patients(omop_layout, sql) == rows_with_patients(csv_layout, sql), sql


def test_a_bad_omop_csv_line_is_quarantined_and_the_rest_of_the_file_loads(tmp_path):
    folder = tmp_path / "cdm"
    shutil.copytree(OMOP / "omoplite_synthea1k", folder)
    path = folder / "CONDITION_OCCURRENCE.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[9] += ",an,extra,field"  # line 10: too many fields
    lines[20] = lines[20].split(",", 1)[0]  # line 21: too few
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "omop", **QUIET)
    with wh.open_warehouse(warehouse, read_only=True) as con:
        assert table(con, "SELECT table_name, source_line, reason FROM meta.quarantine") == [
            ("conditions", 10, "wrong_field_count"),
            ("conditions", 21, "wrong_field_count"),
        ]
        loaded = {
            line
            for (line,) in table(
                con, "SELECT source_line FROM raw.conditions WHERE source_file = ?", [path.name]
            )
        }
    assert loaded == set(range(2, len(lines) + 1)) - {10, 21}


def test_every_study_command_takes_source_format_defaulting_to_auto():
    from pipelines.cli import build_parser

    parser = build_parser()
    base = {
        "ingest": ["--source", "s", "--warehouse", "w"],
        "run": ["--source", "s", "--warehouse", "w"],
        "serve": ["--source", "s", "--warehouse", "w"],
        "demo": [],
    }
    for command, arguments in base.items():
        assert parser.parse_args([command, *arguments]).source_format == "auto", command
        args = parser.parse_args([command, *arguments, "--source-format", "omop"])
        assert args.source_format == "omop", command
    with pytest.raises(SystemExit):
        parser.parse_args(["ingest", *base["ingest"], "--source-format", "csv"])


def test_an_explicit_format_that_does_not_fit_the_folder_is_a_clear_error(tmp_path):
    with pytest.raises(IngestError, match=r"no OMOP CDM tables \(person, concept"):
        load_source(FHIR / "smart_bulk_10_patients", tmp_path / "w.duckdb", "omop", **QUIET)
    with pytest.raises(IngestError, match=r"no FHIR R4 files \(Type.ndjson"):
        load_source(OMOP / "gibleed_5.3", tmp_path / "w.duckdb", "fhir", **QUIET)
    with pytest.raises(IngestError, match="unknown source format"):
        load_source(OMOP / "gibleed_5.3", tmp_path / "w.duckdb", "csv", **QUIET)


def test_gzipped_bulk_ndjson_loads_like_plain(fhir_loaded, tmp_path):
    src = FHIR / "smart_bulk_10_patients"
    for path in src.glob("*.000.ndjson"):
        (tmp_path / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
    load_source(tmp_path, tmp_path / "w.duckdb", "auto", **QUIET)
    assert counts(tmp_path / "w.duckdb") == counts(fhir_loaded["smart_bulk_10_patients"])


def test_fhir_mappings_read_each_resource_parsed_once():
    # The resources are parsed once into fhir.STRUCTURE (json_transform); a JSON path in a
    # mapping would parse every resource again per column (issue 13: 3x the plain read).
    from pipelines.sources import fhir

    for table, sql in fhir.MAPPINGS.items():
        for parse_again in ("->>", "->", "json_extract", "json_exists", "json_array_length"):
            assert parse_again not in sql.replace("lambda x:", ""), (table, parse_again)


def test_a_malformed_line_deep_in_a_big_ndjson_file_costs_its_line_only(tmp_path):
    # thousands of lines (several of DuckDB's 2048-row chunks): the tolerant re-read
    # quarantines the broken line with its exact number and loads every other line
    folder = tmp_path / "bulk"
    folder.mkdir()
    patient = {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1950-01-01"}
    encounter = {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"},
                 "period": {"start": "2020-01-01T10:00:00Z"}}  # fmt: skip
    (folder / "Patient.ndjson").write_text(json.dumps(patient) + "\n")
    (folder / "Encounter.ndjson").write_text(json.dumps(encounter) + "\n")
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                 "onsetDateTime": "2020-01-01", "code": {"coding": [{"code": "279039007"}]}}  # fmt: skip
    lines = [json.dumps(condition)] * 7000
    lines[5000] = lines[5000][:40]  # cut short
    lines[6000] = ""
    (folder / "Condition.ndjson").write_text("\n".join(lines) + "\n")
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    with wh.open_warehouse(warehouse, read_only=True) as con:
        assert table(con, "SELECT source_file, source_line, reason FROM meta.quarantine") == [
            ("Condition.ndjson", 5001, "malformed_json")
        ]
        loaded = table(con, "SELECT source_line FROM raw.conditions ORDER BY source_line")
    assert [line for (line,) in loaded] == [i + 1 for i in range(7000) if i not in (5000, 6000)]


def test_fhir_reference_fast_path_gives_what_the_regular_expression_gives():
    # _ref cuts `Patient/<id>` and `urn:uuid:<id>` with string functions and leaves every
    # other form to the regular expression: the same id (or '') for each
    from pipelines.sources import fhir

    refs = ["Patient/abc", "urn:uuid:abc-1", "https://x.org/fhir/Patient/p1", "Patient/",
            "Patient/p1/_history/2", "Patient?identifier=x", "urn:uuid:", "Group/g1",
            "patient/abc", "abc", "", None, "Patient/a/b", "urn:uuid:a?b", "Patient/a?b",
            "urn:uuid:a/b", "Encounter/e1"]  # fmt: skip
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT {'subject': {'reference': x}} AS r FROM unnest($refs) u(x)",
        {"refs": refs},
    )
    fast, regex = fhir._ref("subject"), fhir._REF.format("r.subject.reference")
    rows = con.execute(f"SELECT {fast}, {regex} FROM t").fetchall()
    assert [a for a, _ in rows] == [b for _, b in rows]
    assert rows[0] == ("abc", "abc") and rows[1] == ("abc-1", "abc-1")
