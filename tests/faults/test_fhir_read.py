"""How the FHIR adapter reads NDJSON (pipelines/sources/fhir.py, docs/sources.md): a clean
file of a type the study reads goes through DuckDB's typed read_json once; only a file with
a problem is read line by line, and there a bad line costs that line only; a file of a type
the study does not use is not read at all."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import SHARED
from recording import RecordingConnection

from pipelines import warehouse as wh
from pipelines.sources import fhir, load_source

BULK = SHARED / "fhir" / "smart_bulk_10_patients"
USED = ("Patient.000.ndjson", "Encounter.000.ndjson", "Condition.000.ndjson")
QUIET = {"log": lambda message: None}


def rows(warehouse: Path, sql: str) -> list[tuple]:
    with wh.open_warehouse(warehouse, read_only=True) as con:
        return con.execute(sql).fetchall()


def bulk_copy(tmp_path: Path, *extra: str) -> Path:
    folder = tmp_path / "bulk"
    folder.mkdir()
    for name in (*USED, *extra):
        shutil.copyfile(BULK / name, folder / name)
    return folder


def edit_lines(path: Path, edit) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def test_a_clean_ndjson_file_is_not_read_line_by_line(tmp_path, monkeypatch):
    """The line-by-line path is for a file with a problem only: a clean export loads
    without it, and a broken file is the only one read so."""
    read_by_line = []
    line_reader = fhir._land_lines
    monkeypatch.setattr(
        fhir, "_land_lines", lambda con, p: (read_by_line.append(p.name), line_reader(con, p))
    )
    folder = bulk_copy(tmp_path)
    load_source(folder, tmp_path / "clean.duckdb", "fhir", **QUIET)
    assert read_by_line == []
    edit_lines(folder / "Condition.000.ndjson", lambda lines: lines.insert(3, "{not json"))
    load_source(folder, tmp_path / "broken.duckdb", "fhir", **QUIET)
    assert read_by_line == ["Condition.000.ndjson"]
    assert rows(tmp_path / "broken.duckdb", "SELECT source_line, reason FROM meta.quarantine") == [
        (4, "malformed_json")
    ]


def test_a_file_of_a_type_the_study_does_not_use_is_not_read(tmp_path):
    """AllergyIntolerance is not used: a broken line there stops nothing and is not parsed
    (before, every line of every NDJSON file was parsed and counted)."""
    folder = bulk_copy(tmp_path, "AllergyIntolerance.000.ndjson")
    edit_lines(folder / "AllergyIntolerance.000.ndjson", lambda lines: lines.insert(0, "{oops"))
    warehouse = tmp_path / "warehouse.duckdb"
    said = []
    summary = load_source(folder, warehouse, "fhir", log=said.append)
    assert rows(warehouse, "SELECT count(*) FROM meta.quarantine") == [(0,)]
    assert "AllergyIntolerance.000.ndjson" in summary.ignored_files
    assert "AllergyIntolerance.000.ndjson" not in summary.files_loaded
    assert any("not used by the study: AllergyIntolerance" in line for line in said)
    assert rows(warehouse, "SELECT count(*) FROM raw.conditions")[0][0] > 500


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        # a value of another shape than FHIR's (subject is a Reference object): the typed
        # read fails on it, the line-by-line read makes it NULL: the resource has no patient
        ('{"resourceType": "Condition", "subject": "Patient/x", "code": {"coding": []}}',
         "missing_value"),
        ("null", "malformed_json"),  # JSON, but not a resource object
        ("[1, 2]", "malformed_json"),
    ],
)  # fmt: skip
def test_a_line_the_typed_read_cannot_take_costs_that_line_only(tmp_path, bad_line, reason):
    folder = bulk_copy(tmp_path)
    lines = edit_lines(folder / "Condition.000.ndjson", lambda lines: lines.insert(5, bad_line))
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    assert rows(warehouse, "SELECT source_line, reason FROM meta.quarantine") == [(6, reason)]
    loaded = {line for (line,) in rows(warehouse, "SELECT source_line FROM raw.conditions")}
    assert loaded == set(range(1, len(lines) + 1)) - {6}


def test_a_resource_of_another_type_in_a_typed_file_is_loaded_as_its_own_type(tmp_path):
    """A Bulk file holds one type; one that holds another anyway is read line by line, so
    the stray resource is mapped as what it is, at its line."""
    folder = bulk_copy(tmp_path)
    patient = json.loads((folder / "Patient.000.ndjson").read_text().splitlines()[0])
    stray = {"resourceType": "Condition", "subject": {"reference": f"Patient/{patient['id']}"},
             "onsetDateTime": "2020-01-01", "code": {"coding": [{"code": "279039007"}]}}  # fmt: skip
    lines = edit_lines(folder / "Patient.000.ndjson", lambda lines: lines.append(json.dumps(stray)))
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    assert rows(
        warehouse, "SELECT code FROM raw.conditions WHERE source_file = 'Patient.000.ndjson'"
    ) == [("279039007",)]
    assert rows(warehouse, "SELECT count(*) FROM raw.patients") == [(len(lines) - 1,)]
    assert rows(warehouse, "SELECT count(*) FROM meta.quarantine") == [(0,)]


def test_mapped_rows_go_straight_into_raw_without_a_temp_table_of_them(tmp_path):
    """No temp table holds every mapped row of a table beside the landed resources (at 100k
    patients that copy of the Observations made the load spill about 5 GB): each mapping is
    an INSERT into raw.*; a row with a problem still reaches meta.quarantine with its line,
    reason and text, and leaves no trace in raw."""
    from pipelines.sources import common

    folder = bulk_copy(tmp_path)
    edit_lines(
        folder / "Condition.000.ndjson",
        lambda lines: lines.__setitem__(
            1, lines[1].replace('"onsetDateTime":"', '"onsetDateTime":"not a date ', 1)
        ),
    )
    con = wh.connect(tmp_path / "w.duckdb")
    try:
        landed = fhir.land(con, folder)
        con.execute("BEGIN TRANSACTION")
        common.reset_warehouse(con)
        spy = RecordingConnection(con)
        fhir.load_tables(spy, landed, QUIET["log"])
        quarantined = con.execute(
            "SELECT table_name, source_file, source_line, column_name, reason, raw_line"
            " FROM meta.quarantine"
        ).fetchall()
        in_raw = con.execute(
            "SELECT count(*) FROM raw.conditions WHERE source_line = 2 OR source_line IS NULL"
        ).fetchone()[0]
        con.execute("ROLLBACK")
    finally:
        con.close()
    mappings = [s for s in spy.sql if "FROM fhir_map" in s]
    assert mappings and all(s.lstrip().startswith(("INSERT INTO", "DELETE")) for s in mappings), [
        s.split("(")[0] for s in mappings
    ]
    assert [q[:5] for q in quarantined] == [
        ("conditions", "Condition.000.ndjson", 2, "start_date", "unparseable_date")
    ]
    assert "not a date" in quarantined[0][5]
    assert in_raw == 0


def _coded(*codes: str) -> dict:
    return {"coding": [{"system": "http://loinc.org", "code": c} for c in codes]}


def test_an_observation_and_its_components_are_mapped_from_one_scan_with_their_lines(tmp_path):
    """The Observation mapping reads the landed Observations once (part 0 the Observation
    itself, part i its i-th component; it was a UNION ALL of two scans), with the same rows:
    one per coding of the Observation when it has a value or no components, one per coding
    of each component, each with its line; a component without a code still quarantines its
    line."""
    folder = bulk_copy(tmp_path)
    observations = [
        {"component": [{"code": _coded("8480-6"), "valueQuantity": {"value": 120}},
                       {"code": _coded("8462-4"), "valueQuantity": {"value": 80}}]},
        {"valueQuantity": {"value": 7.5}, "component": [{"code": _coded("c1"), "valueString": "x"}]},
        {"component": []},
        {"component": [{"code": {"text": "no coding"}, "valueString": "y"}]},
        {"code": _coded("a", "b"), "valueString": "z"},
    ]  # fmt: skip
    patient = json.loads((folder / "Patient.000.ndjson").read_text().splitlines()[0])["id"]
    lines = [
        json.dumps({"resourceType": "Observation", "subject": {"reference": f"Patient/{patient}"},
                    "effectiveDateTime": "2020-01-01T00:00:00Z", "code": _coded(f"own{n}"), **o})
        for n, o in enumerate(observations, 1)
    ]  # fmt: skip
    (folder / "Observation.000.ndjson").write_text("\n".join(lines) + "\n")
    warehouse = tmp_path / "w.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    assert rows(
        warehouse, "SELECT source_line, code, value FROM raw.observations ORDER BY ALL"
    ) == [
        (1, "8462-4", "80"), (1, "8480-6", "120"),
        (2, "c1", "x"), (2, "own2", "7.5"),
        (3, "own3", None),
        (5, "a", "z"), (5, "b", "z"),
    ]  # fmt: skip
    assert rows(
        warehouse,
        "SELECT table_name, source_line, column_name, reason FROM meta.quarantine"
        " WHERE source_file = 'Observation.000.ndjson'",
    ) == [("observations", 4, "code", "missing_value")]
    con = wh.connect(tmp_path / "plan.duckdb")
    try:
        fhir.land(con, folder)
        plan = "\n".join(
            r[1] for r in con.execute(f"EXPLAIN {fhir.MAPPINGS['observations']}").fetchall()
        )
    finally:
        con.close()
    # the landed Observation file (fhir_f<n>, one clean file) is scanned once
    assert len(re.findall(r"Table: \S*fhir_f[0-9]+\b", plan)) == 1, plan
