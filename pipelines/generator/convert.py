"""The generated population in the OMOP CDM and FHIR R4 layouts (`redflags generate --format`).

The export is generated as Synthea CSV as always (the one place the population and its
truth are made), loaded into a scratch warehouse with the CSV ingest, and its canonical
raw tables are written out in the other layout with DuckDB SQL. truth.json and
truth_episodes.csv are copied unchanged: the same patients, records and planted truth.

What a layout cannot carry is written the way that layout's users would (docs/sources.md):
- OMOP: person_id, visit_occurrence_id and concept_id are integers (the Synthea ids are kept
  as person_source_value and visit_source_value); concepts are local (ids from 2,000,000,001,
  vocabulary_id SNOMED, LOINC, RxNorm, ICD10CM); an ICD-10-CM code is a source concept with
  standard concept 0; an encounter's reason code becomes a condition_occurrence on the visit
  day (start = end = visit date), since visit_occurrence has no reason; an imaging study
  becomes a procedure_occurrence of its procedure code (the CDM has no imaging table).
- FHIR: Bulk Data NDJSON, one file per resource type, references `Patient/<id>`; timestamps
  in UTC (`...Z`); a medication's STOP is not written (MedicationRequest has no end).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import duckdb

from pipelines import codesystems
from pipelines.ingest import ingest_export
from pipelines.warehouse import MEMORY_LIMIT_ENV, default_memory_limit

FORMATS = ("synthea", "omop", "fhir")
TRUTH_FILES = ("truth.json", "truth_episodes.csv")
LOCAL_CONCEPTS = 2_000_000_000  # OMOP reserves concept ids above 2 billion for local concepts
OMOP_VOCABULARY = {
    codesystems.SNOMED: "SNOMED",
    codesystems.LOINC: "LOINC",
    codesystems.RXNORM: "RxNorm",
    codesystems.ICD10CM: "ICD10CM",
    codesystems.DICOM: "DICOM",
}
FHIR_SYSTEM = {
    codesystems.SNOMED: "http://snomed.info/sct",
    codesystems.LOINC: "http://loinc.org",
    codesystems.RXNORM: "http://www.nlm.nih.gov/research/umls/rxnorm",
    codesystems.ICD10CM: "http://hl7.org/fhir/sid/icd-10-cm",
    codesystems.DICOM: "http://dicom.nema.org/resources/ontology/DCM",
}
GENDER_CONCEPTS = {"M": 8507, "F": 8532}
VISIT_CONCEPTS = {"inpatient": 9201, "emergency": 9203}  # anything else: outpatient 9202
# DuckDB's budget for the conversion unless REDFLAGS_MEMORY_LIMIT is set: past it the sorts
# and joins spill to the scratch folder (a 20,000-patient FHIR conversion once reached 9 GB)
CONVERT_MEMORY_LIMIT = "2GB"
OMOP_TEMP_TABLES = ("numbered", "concepts", "persons", "visits")  # made by write_omop
_SNOMED_URL = f"'{FHIR_SYSTEM[codesystems.SNOMED]}'"  # SQL literal: a constant URL


def convert(synthea_dir: Path, out_dir: Path, fmt: str) -> None:
    """Write the Synthea CSV export in `synthea_dir` to `out_dir` in layout `fmt`."""
    convert_layouts(synthea_dir, {fmt: out_dir})


def convert_layouts(synthea_dir: Path, outputs: dict[str, Path]) -> None:
    """Write the Synthea CSV export in `synthea_dir` in each layout of `outputs` ({layout:
    folder}), one after the other from one load of the export (at 100k patients the CSV
    ingest is a large part of a conversion).

    Every output streams from the raw tables: code systems and concepts are small tables
    joined by equality (a correlated subquery per record was decorrelated into a join that
    materialised every row before the write), no output is sorted, and DuckDB may write rows
    in any order (preserve_insertion_order = false)."""
    writers = {"omop": write_omop, "fhir": write_fhir}
    unknown = sorted(set(outputs) - set(writers))
    if unknown:
        raise ValueError(f"unknown layout {unknown[0]!r}: choose one of omop, fhir")
    with tempfile.TemporaryDirectory(prefix="redflags-convert-") as scratch:
        warehouse = (
            Path(scratch) / "scratch.duckdb"
        )  # not raw.duckdb: a catalog named raw hides the schema
        ingest_export(Path(synthea_dir), warehouse, log=lambda _: None)
        con = duckdb.connect(str(warehouse))
        memory_limit = (
            default_memory_limit() if os.environ.get(MEMORY_LIMIT_ENV) else CONVERT_MEMORY_LIMIT
        )
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
        con.execute("SET temp_directory = ?", [str(Path(scratch) / "spill")])
        con.execute("SET preserve_insertion_order = false")
        try:
            _code_systems(con)
            for fmt, out_dir in outputs.items():
                out_dir = Path(out_dir)
                out_dir.mkdir(parents=True, exist_ok=True)
                writers[fmt](con, out_dir)
                for name in OMOP_TEMP_TABLES:  # free their memory before the next layout
                    con.execute(f"DROP TABLE IF EXISTS {name}")
                # the truth files last: a folder with truth.json is a finished export
                for name in TRUTH_FILES:
                    shutil.copyfile(Path(synthea_dir) / name, out_dir / name)
        finally:
            con.close()


def generate_in_format(out_dir: Path, fmt: str = "synthea", **arguments):
    """`generate(out_dir, **arguments)` in layout `fmt`: the Synthea CSV export is generated in
    a scratch folder and converted, so every layout holds the same population and truth."""
    from pipelines.generator.core import generate

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "synthea":
        return generate(out_dir, **arguments)
    with tempfile.TemporaryDirectory(prefix="redflags-generate-") as scratch:
        result = generate(Path(scratch) / "synthea", **arguments)
        convert(Path(scratch) / "synthea", Path(out_dir), fmt)
    result.out_dir = Path(out_dir)
    result.files = {"all": sorted(p.name for p in Path(out_dir).iterdir())}
    return result


def _code_systems(con: duckdb.DuckDBPyConnection) -> None:
    """temp.aliases: every spelling -> canonical name; temp.systems: canonical name -> its OMOP
    vocabulary and FHIR URL. Both are joined by equality (a hash join that streams)."""
    aliases = {
        codesystems._alias_key(spelling): name
        for name, spellings in codesystems.SPELLINGS.items()
        for spelling in spellings
    }
    con.execute("CREATE TEMP TABLE aliases (alias VARCHAR PRIMARY KEY, name VARCHAR)")
    con.executemany("INSERT INTO aliases VALUES (?, ?)", list(aliases.items()))
    con.execute(
        "CREATE TEMP TABLE systems (name VARCHAR PRIMARY KEY, vocabulary VARCHAR, url VARCHAR)"
    )
    con.executemany(
        "INSERT INTO systems VALUES (?, ?, ?)",
        [(name, OMOP_VOCABULARY[name], FHIR_SYSTEM[name]) for name in codesystems.SPELLINGS],
    )


def _system(table: str, column: str = "code_system") -> str:
    """SQL: the rows of raw `table` with their canonical code `system` (the table's default
    when the file has no system), its OMOP `vocabulary` and FHIR `url`, and `rid` (rowid)."""
    default = codesystems.DEFAULT_SYSTEM.get(table)
    system_sql = f"'{default}'" if default and default.isidentifier() else "NULL"
    return f"""(SELECT t.*, t.rowid AS rid, coalesce(a.name, {system_sql}) AS system,
               s.vocabulary, s.url
        FROM raw.{table} t
        LEFT JOIN aliases a ON a.alias = upper(trim(t.{column}))
        LEFT JOIN systems s ON s.name = coalesce(a.name, {system_sql}))"""


def _copy_csv(con: duckdb.DuckDBPyConnection, sql: str, path: Path) -> None:
    con.execute(f"COPY ({sql}) TO $path (FORMAT csv, HEADER true)", {"path": str(path)})


# ---------------------------------------------------------------- OMOP CDM 5.4 (CSV)

# Each kind of coded record as one SELECT over its raw table, in the columns of `coded`
# (with `rid`, the raw rowid, to join a record back to its number)
CODED = {
    "conditions": f"""
        SELECT 'conditions' AS kind, t.rid, t.patient_id, t.encounter_id,
               t.start_date AS start_at, t.stop_date AS stop_at, t.system, t.code,
               t.description, NULL AS value, NULL AS units, t.source_file, t.source_line
        FROM {_system("conditions")} t""",
    "reasons": """
        SELECT 'reasons', t.rowid, t.patient_id, t.encounter_id, CAST(t.start_at AS DATE),
               CAST(t.start_at AS DATE), 'SNOMED', t.reason_code, t.reason_description, NULL,
               NULL, t.source_file, t.source_line
        FROM raw.encounters t WHERE nullif(trim(t.reason_code), '') IS NOT NULL""",
    "observations": f"""
        SELECT 'observations', t.rid, t.patient_id, t.encounter_id, t.observed_at, NULL,
               t.system, t.code, t.description, t.value, t.units, t.source_file, t.source_line
        FROM {_system("observations")} t""",
    "medications": f"""
        SELECT 'medications', t.rid, t.patient_id, t.encounter_id, t.start_at, t.stop_at,
               t.system, t.code, t.description, NULL, NULL, t.source_file, t.source_line
        FROM {_system("medications")} t""",
    "procedures": f"""
        SELECT 'procedures', t.rid, t.patient_id, t.encounter_id, t.start_at, t.stop_at,
               t.system, t.code, t.description, NULL, NULL, t.source_file, t.source_line
        FROM {_system("procedures")} t""",
    "imaging": """
        SELECT 'imaging', t.rowid, t.patient_id, t.encounter_id, t.studied_at, NULL, 'SNOMED',
               t.procedure_code, NULL, NULL, NULL, t.source_file, t.source_line
        FROM raw.imaging_studies t WHERE nullif(trim(t.procedure_code), '') IS NOT NULL""",
}


CODED_COLUMNS = (
    "kind, rid, patient_id, encounter_id, start_at, stop_at, system, code, description, value,"
    " units, source_file, source_line"
)


def _coded(kinds) -> str:
    """SQL: the coded records of `kinds` (a FROM item with the columns of CODED_COLUMNS)."""
    union = " UNION ALL ".join(CODED[kind] for kind in kinds)
    return f"(SELECT * FROM ({union}) AS coded({CODED_COLUMNS}))"


def _records(con: duckdb.DuckDBPyConnection, kinds: tuple[str, ...]) -> str:
    """SQL: the coded records of `kinds` with person, visit and concept ids and `id`, their
    number in (file, line) order. Only the narrow keys are sorted (temp.numbered); the wide
    rows stream and are joined to their number by (kind, rowid)."""
    coded = _coded(kinds)
    con.execute("DROP TABLE IF EXISTS numbered")
    con.execute(
        f"""CREATE TEMP TABLE numbered AS
        SELECT c.kind, c.rid,
               row_number() OVER (ORDER BY c.source_file, c.source_line, k.concept_id) AS id
        FROM (SELECT kind, rid, patient_id, system, code, source_file, source_line
              FROM {coded}) c
        JOIN persons p USING (patient_id)
        JOIN concepts k ON k.system = c.system AND k.code = c.code"""
    )
    return f"""
        SELECT n.id, p.person_id, v.visit_occurrence_id, c.*, k.concept_id,
               CASE WHEN c.system = 'ICD10CM' THEN 0 ELSE k.concept_id END AS standard_id
        FROM {coded} c
        JOIN numbered n ON n.kind = c.kind AND n.rid = c.rid
        JOIN persons p USING (patient_id)
        LEFT JOIN visits v USING (encounter_id)
        JOIN concepts k ON k.system = c.system AND k.code = c.code"""


def write_omop(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    # the concept table: every (system, code) of the coded records, numbered in that order
    coded = _coded(CODED)
    con.execute(
        f"""CREATE TEMP TABLE concepts AS
        SELECT {LOCAL_CONCEPTS} + row_number() OVER (ORDER BY c.system, c.code) AS concept_id,
               c.system, c.code, s.vocabulary AS vocabulary_id,
               coalesce(c.description, c.code) AS concept_name
        FROM (SELECT system, code, min(description) AS description
              FROM (SELECT system, code, description FROM {coded}) GROUP BY ALL) c
        LEFT JOIN systems s ON s.name = c.system"""
    )
    con.execute(
        "CREATE TEMP TABLE persons AS SELECT row_number() OVER (ORDER BY patient_id) AS person_id,"
        " * FROM raw.patients"
    )
    # narrow: the encounter id's number; the encounter's other columns are read from raw
    con.execute(
        "CREATE TEMP TABLE visits AS SELECT row_number() OVER (ORDER BY encounter_id)"
        " AS visit_occurrence_id, encounter_id, rowid AS rid FROM raw.encounters"
    )
    genders = " ".join(f"WHEN '{k}' THEN {v}" for k, v in GENDER_CONCEPTS.items())
    _copy_csv(
        con,
        f"""SELECT person_id, CASE sex {genders} ELSE 0 END AS gender_concept_id,
               year(birth_date) AS year_of_birth, month(birth_date) AS month_of_birth,
               day(birth_date) AS day_of_birth, CAST(birth_date AS TIMESTAMP) AS birth_datetime,
               0 AS race_concept_id, 0 AS ethnicity_concept_id, patient_id AS person_source_value,
               sex AS gender_source_value, race AS race_source_value,
               ethnicity AS ethnicity_source_value
        FROM persons""",
        out / "person.csv",
    )
    _copy_csv(
        con,
        """SELECT person_id, death_date, CAST(death_date AS TIMESTAMP) AS death_datetime,
               32817 AS death_type_concept_id
        FROM persons WHERE death_date IS NOT NULL""",
        out / "death.csv",
    )
    visit = " ".join(f"WHEN '{k}' THEN {v}" for k, v in VISIT_CONCEPTS.items())
    _copy_csv(
        con,
        f"""SELECT v.visit_occurrence_id, p.person_id,
               CASE lower(e.encounter_class) {visit} ELSE 9202 END AS visit_concept_id,
               CAST(e.start_at AS DATE) AS visit_start_date, e.start_at AS visit_start_datetime,
               CAST(e.stop_at AS DATE) AS visit_end_date, e.stop_at AS visit_end_datetime,
               32817 AS visit_type_concept_id, e.encounter_id AS visit_source_value
        FROM (SELECT *, rowid AS rid FROM raw.encounters) e
        JOIN visits v USING (rid)
        JOIN persons p USING (patient_id)""",
        out / "visit_occurrence.csv",
    )
    # first visit to the last visit or the death, whichever is later: the observation end the
    # study gives the CSV layout (death, else last encounter). A death date the staging drops as
    # implausible (in the future) does not extend the period.
    _copy_csv(
        con,
        """SELECT person_id, min(CAST(start_at AS DATE)) AS observation_period_start_date,
               greatest(max(CAST(start_at AS DATE)),
                        CASE WHEN any_value(death_date) <= current_date THEN any_value(death_date) END)
                   AS observation_period_end_date,
               32817 AS period_type_concept_id
        FROM raw.encounters JOIN persons USING (patient_id) GROUP BY person_id""",
        out / "observation_period.csv",
    )
    _copy_csv(
        con,
        f"""SELECT id AS condition_occurrence_id, person_id, standard_id AS condition_concept_id,
               CAST(start_at AS DATE) AS condition_start_date,
               CAST(start_at AS TIMESTAMP) AS condition_start_datetime,
               CAST(stop_at AS DATE) AS condition_end_date, 32817 AS condition_type_concept_id,
               visit_occurrence_id, code AS condition_source_value,
               concept_id AS condition_source_concept_id,
               CASE kind WHEN 'reasons' THEN 'visit reason' END AS condition_status_source_value
        FROM ({_records(con, ("conditions", "reasons"))})""",
        out / "condition_occurrence.csv",
    )
    _copy_csv(
        con,
        f"""SELECT id AS measurement_id, person_id, standard_id AS measurement_concept_id,
               CAST(start_at AS DATE) AS measurement_date, start_at AS measurement_datetime,
               32817 AS measurement_type_concept_id, try_cast(value AS DOUBLE) AS value_as_number,
               visit_occurrence_id, code AS measurement_source_value,
               concept_id AS measurement_source_concept_id, units AS unit_source_value,
               value AS value_source_value
        FROM ({_records(con, ("observations",))})""",
        out / "measurement.csv",
    )
    _copy_csv(
        con,
        f"""SELECT id AS drug_exposure_id, person_id, standard_id AS drug_concept_id,
               CAST(start_at AS DATE) AS drug_exposure_start_date,
               start_at AS drug_exposure_start_datetime,
               CAST(stop_at AS DATE) AS drug_exposure_end_date,
               stop_at AS drug_exposure_end_datetime, 32817 AS drug_type_concept_id,
               visit_occurrence_id, code AS drug_source_value,
               concept_id AS drug_source_concept_id
        FROM ({_records(con, ("medications",))})""",
        out / "drug_exposure.csv",
    )
    _copy_csv(
        con,
        f"""SELECT id AS procedure_occurrence_id, person_id,
               standard_id AS procedure_concept_id, CAST(start_at AS DATE) AS procedure_date,
               start_at AS procedure_datetime, CAST(stop_at AS DATE) AS procedure_end_date,
               stop_at AS procedure_end_datetime, 32817 AS procedure_type_concept_id,
               visit_occurrence_id, code AS procedure_source_value,
               concept_id AS procedure_source_concept_id
        FROM ({_records(con, ("procedures", "imaging"))})""",
        out / "procedure_occurrence.csv",
    )
    _copy_csv(
        con,
        """SELECT concept_id, concept_name, NULL AS domain_id, vocabulary_id,
               NULL AS concept_class_id, CASE WHEN system = 'ICD10CM' THEN NULL ELSE 'S' END
                   AS standard_concept,
               code AS concept_code, DATE '1970-01-01' AS valid_start_date,
               DATE '2099-12-31' AS valid_end_date, NULL AS invalid_reason
        FROM concepts
        UNION ALL
        SELECT * FROM (VALUES
            (8507, 'MALE', 'Gender', 'Gender', 'Gender', 'S', 'M', DATE '1970-01-01',
             DATE '2099-12-31', NULL),
            (8532, 'FEMALE', 'Gender', 'Gender', 'Gender', 'S', 'F', DATE '1970-01-01',
             DATE '2099-12-31', NULL),
            (9201, 'Inpatient Visit', 'Visit', 'Visit', 'Visit', 'S', 'IP', DATE '1970-01-01',
             DATE '2099-12-31', NULL),
            (9202, 'Outpatient Visit', 'Visit', 'Visit', 'Visit', 'S', 'OP', DATE '1970-01-01',
             DATE '2099-12-31', NULL),
            (9203, 'Emergency Room Visit', 'Visit', 'Visit', 'Visit', 'S', 'ER',
             DATE '1970-01-01', DATE '2099-12-31', NULL),
            (32817, 'EHR', 'Type Concept', 'Type Concept', 'Type Concept', 'S', 'OMOP4976890',
             DATE '1970-01-01', DATE '2099-12-31', NULL))""",
        out / "concept.csv",
    )


# ---------------------------------------------------------------- FHIR R4 Bulk NDJSON


def _iso(column: str) -> str:
    return f"strftime({column}, '%Y-%m-%dT%H:%M:%SZ')"


def _concept(url_sql: str, code: str, display: str | None = None) -> str:
    """SQL struct of a CodeableConcept with one coding of system URL `url_sql` (NULL when
    there is no code)."""
    text = f", 'text': {display}" if display else ""
    return (
        f"CASE WHEN nullif(trim({code}), '') IS NOT NULL THEN {{'coding': [{{'system':"
        f" {url_sql}, 'code': {code}}}]{text}}} END"
    )


def write_fhir(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    resources = {
        "Patient": """
            SELECT 'Patient' AS resourceType, patient_id AS id,
                   CASE sex WHEN 'F' THEN 'female' WHEN 'M' THEN 'male' ELSE 'unknown' END
                       AS gender,
                   CAST(birth_date AS VARCHAR) AS birthDate,
                   CAST(death_date AS VARCHAR) AS deceasedDateTime
            FROM raw.patients""",
        "Encounter": f"""
            SELECT 'Encounter' AS resourceType, encounter_id AS id,
                   {{'code': encounter_class}} AS class,
                   [{_concept(_SNOMED_URL, "code", "description")}] AS type,
                   {{'reference': 'Patient/' || patient_id}} AS subject,
                   {{'start': {_iso("start_at")}, 'end': {_iso("stop_at")}}} AS period,
                   CASE WHEN nullif(trim(reason_code), '') IS NOT NULL
                        THEN [{_concept(_SNOMED_URL, "reason_code", "reason_description")}]
                   END AS reasonCode
            FROM raw.encounters""",
        "Condition": f"""
            SELECT 'Condition' AS resourceType,
                   {_concept("t.url", "t.code", "t.description")} AS code,
                   {{'reference': 'Patient/' || t.patient_id}} AS subject,
                   {{'reference': 'Encounter/' || t.encounter_id}} AS encounter,
                   CAST(t.start_date AS VARCHAR) AS onsetDateTime,
                   CAST(t.stop_date AS VARCHAR) AS abatementDateTime
            FROM {_system("conditions")} t""",
        "Observation": f"""
            SELECT 'Observation' AS resourceType, 'final' AS status,
                   [{{'coding': [{{'code': t.category}}]}}] AS category,
                   {_concept("t.url", "t.code", "t.description")} AS code,
                   {{'reference': 'Patient/' || t.patient_id}} AS subject,
                   {{'reference': 'Encounter/' || t.encounter_id}} AS encounter,
                   {_iso("t.observed_at")} AS effectiveDateTime,
                   CASE WHEN try_cast(t.value AS DOUBLE) IS NOT NULL
                        THEN {{'value': try_cast(t.value AS DOUBLE), 'unit': t.units}} END
                       AS valueQuantity,
                   CASE WHEN try_cast(t.value AS DOUBLE) IS NULL THEN t.value END AS valueString
            FROM {_system("observations")} t""",
        "MedicationRequest": f"""
            SELECT 'MedicationRequest' AS resourceType, 'order' AS intent,
                   {_concept("t.url", "t.code", "t.description")}
                       AS medicationCodeableConcept,
                   {{'reference': 'Patient/' || t.patient_id}} AS subject,
                   {{'reference': 'Encounter/' || t.encounter_id}} AS encounter,
                   {_iso("t.start_at")} AS authoredOn,
                   CASE WHEN nullif(trim(t.reason_code), '') IS NOT NULL
                        THEN [{_concept(_SNOMED_URL, "t.reason_code")}] END AS reasonCode
            FROM {_system("medications")} t""",
        "Procedure": f"""
            SELECT 'Procedure' AS resourceType, 'completed' AS status,
                   {_concept("t.url", "t.code", "t.description")} AS code,
                   {{'reference': 'Patient/' || t.patient_id}} AS subject,
                   {{'reference': 'Encounter/' || t.encounter_id}} AS encounter,
                   {{'start': {_iso("t.start_at")}, 'end': {_iso("t.stop_at")}}} AS performedPeriod,
                   CASE WHEN nullif(trim(t.reason_code), '') IS NOT NULL
                        THEN [{_concept(_SNOMED_URL, "t.reason_code")}] END AS reasonCode
            FROM {_system("procedures")} t""",
        "ImagingStudy": f"""
            SELECT 'ImagingStudy' AS resourceType, imaging_study_id AS id,
                   'available' AS status,
                   {{'reference': 'Patient/' || patient_id}} AS subject,
                   {{'reference': 'Encounter/' || encounter_id}} AS encounter,
                   {_iso("studied_at")} AS started,
                   [{_concept(_SNOMED_URL, "procedure_code")}] AS procedureCode,
                   [{{'modality': {{'system': '{FHIR_SYSTEM["DICOM"]}', 'code': modality_code,
                                   'display': modality_description}},
                      'bodySite': {{'system': '{FHIR_SYSTEM["SNOMED"]}', 'code': body_site_code,
                                   'display': body_site_description}},
                      'instance': [{{'number': 1}}]}}] AS series
            FROM raw.imaging_studies""",
    }
    for name, sql in resources.items():
        con.execute(
            f"COPY ({sql}) TO $path (FORMAT json)", {"path": str(out / f"{name}.000.ndjson")}
        )
