"""FHIR R4 source: Bulk Data NDJSON (`Patient.000.ndjson`, `Condition.ndjson`, ...) or Synthea's
per-patient Bundles (`*.json`, type transaction, batch or collection), into raw.*.

All reading and mapping is DuckDB SQL (read_json for NDJSON, read_json_objects for Bundles,
json_transform for the fields); Python only lists the files. Steps:
1. every resource is parsed once, into a STRUCT of the fields its mapping reads
   (`structure(group)`, a part of `STRUCTURE`). An NDJSON file of a type the study reads
   goes straight through DuckDB's parallel `read_json` with those columns into its own
   temp table, whose row position is the line: checked against the file's physical lines
   (a byte scan, which also gives the manifest's sha256). A file with a problem (a line
   that is not JSON, a blank line, a value of an unexpected shape, a resource of another
   type) is read line by line instead, as are Bundle entries (the entry's 1-based position
   in Bundle.entry is its line): into fhir_entries, then json_transform. A line that is not
   a JSON object is quarantined (`malformed_json`), as is a Bundle file that is not JSON
   (line 0). NDJSON files of types the study does not use are not read.
2. one SELECT per canonical table maps its resources (view `fhir_<table>`) to the
   canonical columns (docs/sources.md lists every column), one row per coding of the
   CodeableConcept the study matches on; then common.load_table types, checks and
   quarantines.
References are resolved as `urn:uuid:<id>`, `<Type>/<id>` or an absolute URL ending in
`<Type>/<id>`; conditional references (`Patient?identifier=...`) are not resolved.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from pipelines.errors import IngestError
from pipelines.ingest import IngestSummary
from pipelines.sources import accounting, common

NAME = "fhir"
_NDJSON = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)(?:[._-][^/]*)?\.ndjson(?:\.gz)?$")


def _max_object(files: list[Path]) -> int:
    """Largest JSON object (or NDJSON line) to accept: the largest file, at least DuckDB's
    16 MB default. A Synthea Bundle of a long life can exceed the default; a fixed huge
    limit makes DuckDB reserve that much per thread."""
    return max([16 << 20, *(p.stat().st_size + 1 for p in files)])


# canonical table -> the resource types it is read from
RESOURCES = {
    "patients": ("Patient",),
    "encounters": ("Encounter",),
    "conditions": ("Condition",),
    "observations": ("Observation",),
    "medications": ("MedicationRequest", "MedicationStatement"),
    "procedures": ("Procedure",),
    "imaging_studies": ("ImagingStudy",),
}
_USED = {t for types in RESOURCES.values() for t in types} | {"Medication"}


def _ndjson_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _NDJSON.match(p.name))


def _bundle_files(folder: Path) -> list[Path]:
    """Top-level *.json files that start like a FHIR resource (Synthea's Bundles)."""
    found = []
    for p in sorted(folder.glob("*.json")):
        with open(p, "rb") as handle:
            head = handle.read(4096)
        if b'"resourceType"' in head:
            found.append(p)
    return found


def detect(folder: Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and bool(_ndjson_files(folder) or _bundle_files(folder))


def describe(folder: Path) -> str:
    folder = Path(folder)
    ndjson, bundles = _ndjson_files(folder), _bundle_files(folder)
    parts = []
    if ndjson:
        types = sorted({_NDJSON.match(p.name)["type"] for p in ndjson})
        parts.append(f"{len(ndjson)} Bulk Data NDJSON file(s) ({', '.join(types)})")
    if bundles:
        parts.append(f"{len(bundles)} JSON Bundle file(s)")
    return "FHIR R4: " + " and ".join(parts)


# ---------------------------------------------------------------- step 1: resources

# The fields of a resource the mappings read, as one DuckDB STRUCT: every resource is
# parsed once, by json_transform into this structure, and the mappings read struct fields
# (a JSON path per column would parse the resource again for each). One structure for all
# resource types, so a file may mix them (Bundles do); a field a resource lacks is NULL.
# Leaves are VARCHAR: JSON numbers and booleans keep their text (common.load_table types
# them), and a value of an unexpected shape becomes NULL instead of failing the load.
_CODING = {"system": "VARCHAR", "code": "VARCHAR", "display": "VARCHAR"}
_CONCEPT = {"coding": [_CODING], "text": "VARCHAR"}
_REFERENCE = {"reference": "VARCHAR"}
_PERIOD = {"start": "VARCHAR", "end": "VARCHAR"}
_VALUE = {
    "valueQuantity": {"value": "VARCHAR", "unit": "VARCHAR"},
    "valueString": "VARCHAR",
    "valueCodeableConcept": _CONCEPT,
    "valueBoolean": "VARCHAR",
    "valueInteger": "VARCHAR",
}
_COMPONENT = {"code": _CONCEPT, **_VALUE}  # an Observation.component, or the Observation
STRUCTURE = {
    "resourceType": "VARCHAR",
    "id": "VARCHAR",
    "subject": _REFERENCE,
    "encounter": _REFERENCE,
    "context": _REFERENCE,
    "code": _CONCEPT,
    "category": [_CONCEPT],
    # Patient
    "birthDate": "VARCHAR",
    "deceasedDateTime": "VARCHAR",
    "gender": "VARCHAR",
    "extension": [{"url": "VARCHAR", "extension": [{"url": "VARCHAR", "valueString": "VARCHAR"}]}],
    # Encounter
    "period": _PERIOD,
    "class": {"code": "VARCHAR"},
    "type": [_CONCEPT],
    "reasonCode": [_CONCEPT],
    "reasonReference": [_REFERENCE],
    # Condition
    "onsetDateTime": "VARCHAR",
    "onsetPeriod": _PERIOD,
    "recordedDate": "VARCHAR",
    "abatementDateTime": "VARCHAR",
    "abatementPeriod": _PERIOD,
    # Observation
    "effectiveDateTime": "VARCHAR",
    "effectivePeriod": _PERIOD,
    "effectiveInstant": "VARCHAR",
    "issued": "VARCHAR",
    **_VALUE,
    "component": [_COMPONENT],
    # MedicationRequest, MedicationStatement
    "medicationCodeableConcept": _CONCEPT,
    "medicationReference": _REFERENCE,
    "authoredOn": "VARCHAR",
    "dateAsserted": "VARCHAR",
    # Procedure
    "performedDateTime": "VARCHAR",
    "performedPeriod": _PERIOD,
    # ImagingStudy (instances are only counted: one row each)
    "started": "VARCHAR",
    "procedureCode": [_CONCEPT],
    "series": [
        {
            "started": "VARCHAR",
            "bodySite": _CODING,
            "modality": _CODING,
            "instance": [{"uid": "VARCHAR"}],
        }
    ],
}
_STRUCTURE_JSON = json.dumps(STRUCTURE)


# The STRUCTURE fields each group of resources is read with: its mapping reads no other. A
# group is a canonical table's resource types, or Medication (for medicationReference).
GROUPS = {**RESOURCES, "medication_catalog": ("Medication",)}
_GROUP_OF = {t: group for group, types in GROUPS.items() for t in types}
_REFS = ("subject", "encounter")
FIELDS = {
    "patients": ("birthDate", "deceasedDateTime", "gender", "extension"),
    "encounters": ("subject", "period", "class", "type", "reasonCode"),
    "conditions": (*_REFS, "code", "onsetDateTime", "onsetPeriod", "recordedDate",
                   "abatementDateTime", "abatementPeriod"),
    "observations": (*_REFS, "code", "category", "effectiveDateTime", "effectivePeriod",
                     "effectiveInstant", "issued", *_VALUE, "component"),
    "medications": (*_REFS, "context", "medicationCodeableConcept", "medicationReference",
                    "authoredOn", "effectiveDateTime", "effectivePeriod", "dateAsserted",
                    "reasonCode", "reasonReference"),
    "procedures": (*_REFS, "code", "performedDateTime", "performedPeriod", "reasonCode",
                   "reasonReference"),
    "imaging_studies": (*_REFS, "started", "procedureCode", "series"),
    "medication_catalog": ("code",),
}  # fmt: skip


def structure(group: str) -> dict:
    """The STRUCT a resource of `group` is parsed into (field order as in STRUCTURE, so the
    fast and the line-by-line reads give the same type)."""
    keys = {"resourceType", "id", *FIELDS[group]}
    return {k: v for k, v in STRUCTURE.items() if k in keys}


def _land_ndjson(
    con: duckdb.DuckDBPyConnection,
    files: list[Path],
    counts: dict[Path, Future[accounting.LineCount]],
    sources: dict,
) -> None:
    """Each NDJSON file of a type the study reads, parsed once by DuckDB's parallel JSON
    reader straight into a typed temp table (`fhir_f<n>`, the fields its mapping reads; no
    text copy of the lines): a row's position is its line when the file has as many rows as
    physical lines (counted by the byte scan, in a thread: asked for after the read) and
    every row is a resource of the file's type.
    Otherwise (a line that is not JSON, a blank line, a value of an unexpected shape, another
    resource type) the file is read line by line instead (_land_lines)."""
    for n, p in enumerate(files):
        rtype = _NDJSON.match(p.name)["type"]
        group = _GROUP_OF[rtype]
        table = f"fhir_f{n}"
        if _read_typed(con, p, table, group, rtype, counts[p]):
            sources[group].append((table, n))
        else:
            _land_lines(con, p)


def _read_typed(
    con: duckdb.DuckDBPyConnection,
    p: Path,
    table: str,
    group: str,
    rtype: str,
    lines: Future[accounting.LineCount],
) -> bool:
    """True if `p` read cleanly into temp.<table>, one row per physical line, all of `rtype`."""
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_json($file,"
            " format = 'newline_delimited', columns = $columns, maximum_object_size = $max)",
            {"file": str(p), "columns": _columns(group), "max": min(_max_object([p]), 256 << 20)},
        )
    except duckdb.InvalidInputException:
        return False  # not JSON, or a value of another shape than STRUCTURE's
    rows, other = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE resourceType IS DISTINCT FROM $type)"
        f" FROM {table}",
        {"type": rtype},
    ).fetchone()
    if rows == lines.result().physical_lines and other == 0:
        return True
    con.execute(f"DROP TABLE temp.{table}")
    return False


def _columns(group: str) -> dict:
    """structure(group) as read_json's `columns` (DuckDB type names)."""

    def sql_type(shape) -> str:
        if isinstance(shape, str):
            return shape
        if isinstance(shape, list):
            return sql_type(shape[0]) + "[]"
        return "STRUCT(" + ", ".join(f'"{k}" {sql_type(v)}' for k, v in shape.items()) + ")"

    return {k: sql_type(v) for k, v in structure(group).items()}


def _land_lines(con: duckdb.DuckDBPyConnection, p: Path) -> None:
    """An NDJSON file line by line (the slow path, for a file with a problem): blank lines
    into fhir_blank, lines that are not a JSON object into fhir_bad, the others into
    fhir_entries with their resource type. The row's position in the read is its line."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE fhir_lines AS SELECT line FROM read_csv($file,"
        " columns = {'line': 'VARCHAR'}, header = false, delim = chr(31), quote = '',"
        " escape = '', auto_detect = false, max_line_size = $max)",
        {"file": str(p), "max": min(_max_object([p]), 256 << 20)},
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE fhir_lines_kind AS
        SELECT rowid + 1 AS source_line, line,
               CASE WHEN coalesce(trim(line), '') = '' THEN 'blank'
                    WHEN NOT coalesce(json_valid(line), false)
                         OR json_type(line) <> 'OBJECT' THEN 'bad' END AS kind
        FROM fhir_lines"""
    )
    name = {"name": p.name}
    con.execute(
        "INSERT INTO fhir_blank SELECT $name, source_line FROM fhir_lines_kind"
        " WHERE kind = 'blank'",
        name,
    )
    con.execute(
        "INSERT INTO fhir_bad SELECT $name, source_line, line FROM fhir_lines_kind"
        " WHERE kind = 'bad'",
        name,
    )
    con.execute(
        "INSERT INTO fhir_entries SELECT $name, source_line, j->>'resourceType', j"
        " FROM (SELECT source_line, CAST(line AS JSON) AS j FROM fhir_lines_kind"
        "       WHERE kind IS NULL)",
        name,
    )
    con.execute("DROP TABLE temp.fhir_lines_kind")
    con.execute("DROP TABLE temp.fhir_lines")


def _land_bundles(con: duckdb.DuckDBPyConnection, files: list[Path]) -> list[Path]:
    """Entries of every Bundle into fhir_entries; returns the files that are not JSON."""
    try:
        _read_bundles(con, files)
        return []
    except duckdb.Error:
        pass  # at least one file is broken: read them one by one to find which
    broken = []
    for p in files:
        try:
            _read_bundles(con, [p])
        except duckdb.Error:
            broken.append(p)
    return broken


def _read_bundles(con: duckdb.DuckDBPyConnection, files: list[Path]) -> None:
    # The resources as one JSON[] per Bundle, unnested with their positions. (json_each
    # would keep a copy of the whole Bundle per entry: gigabytes for a few Bundles.)
    con.execute(
        """CREATE OR REPLACE TEMP TABLE fhir_bundle_read AS
        SELECT parse_filename(filename) AS source_file,
               json_extract(json, '$.entry[*].resource') AS resources
        FROM read_json_objects($files, format = 'auto', filename = true,
                               maximum_object_size = $max)""",
        {"files": [str(p) for p in files], "max": _max_object(files)},
    )
    # the resources each Bundle holds, for the row accounting
    con.execute(
        "INSERT INTO fhir_bundle_sizes SELECT source_file, sum(coalesce(len(resources), 0))"
        " FROM fhir_bundle_read GROUP BY ALL"
    )
    con.execute(
        """INSERT INTO fhir_entries
        SELECT source_file, source_line, j->>'resourceType', j
        FROM (SELECT source_file, generate_subscripts(resources, 1) AS source_line,
                     unnest(resources) AS j
              FROM fhir_bundle_read)"""
    )
    con.execute("DROP TABLE temp.fhir_bundle_read")


def _group_views(con: duckdb.DuckDBPyConnection, sources: dict, names: list[str]) -> None:
    """temp view fhir_<group> (source_file, source_line, type, id, r) per group: the typed
    tables of its NDJSON files, plus its resources from Bundles and line-by-line reads
    (parsed here by json_transform, which makes a value of an unexpected shape NULL)."""
    con.execute("CREATE OR REPLACE TEMP TABLE fhir_files (n INTEGER, name VARCHAR)")
    if names:
        con.executemany("INSERT INTO fhir_files VALUES (?, ?)", list(enumerate(names)))
    for group, types in GROUPS.items():
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE fhir_parsed_{group} AS"
            " SELECT source_file, source_line, type, json_transform(j, $structure) AS r"
            " FROM fhir_entries WHERE list_contains($types, type)",
            {"structure": json.dumps(structure(group)), "types": list(types)},
        )
        # the file's name from fhir_files: a name is data, never spliced into SQL
        parts = [
            f"SELECT (SELECT name FROM fhir_files WHERE n = {int(n)}) AS source_file,"
            f" rowid + 1 AS source_line, resourceType AS type, id, t AS r FROM {table} t"
            for table, n in sources[group]
        ]
        parsed = con.execute(f"SELECT count(*) FROM fhir_parsed_{group}").fetchone()[0]
        if parsed or not parts:
            parts.append(
                f"SELECT source_file, source_line, type, r.id AS id, r FROM fhir_parsed_{group}"
            )
        con.execute(f"CREATE OR REPLACE TEMP VIEW fhir_{group} AS {' UNION ALL '.join(parts)}")


# ---------------------------------------------------------------- step 2: mapping

# the id a reference points to: urn:uuid:<id>, <Type>/<id>, http://.../<Type>/<id>[/_history/n]
_REF = "regexp_extract({0}, '^(?:urn:uuid:|(?:.*/)?[A-Z][A-Za-z]+/)?([^/?]+)(?:/_history/.*)?$', 1)"


# the resource type a reference at a path points to, for _ref's fast path
_REF_TYPES = {
    "subject": "Patient",
    "encounter": "Encounter",
    "context": "Encounter",
    "reasonReference[1]": "Condition",
    "medicationReference": "Medication",
}


def _ref(path: str, alias: str = "") -> str:
    """The id of the reference at struct path `path` (e.g. `subject`) of the resource.
    `<Type>/<id>` of the expected type and `urn:uuid:<id>` (what Bulk exports and Synthea's
    Bundles write) are cut with string functions; anything else goes through _REF. The
    regular expression on every reference was most of the Observation mapping's CPU time."""
    text = f"{alias}r.{path}.reference"
    start = _REF_TYPES[path] + "/"
    cond = f"NOT contains({text}, '?')"
    return (
        f"CASE WHEN starts_with({text}, '{start}') AND length({text}) > {int(len(start))}"
        f" AND NOT contains({text}[{int(len(start) + 1)}:], '/') AND {cond}"
        f" THEN {text}[{int(len(start) + 1)}:]"
        f" WHEN starts_with({text}, 'urn:uuid:') AND length({text}) > 9"
        f" AND NOT contains({text}, '/') AND {cond} THEN {text}[10:]"
        f" ELSE {_REF.format(text)} END"
    )


# A CodeableConcept's codings, one per row; a concept without codings gives one NULL row
# (quarantined as missing_value, never silently dropped).
def _codings(concept: str) -> str:
    return f"unnest(CASE WHEN len({concept}.coding) > 0 THEN {concept}.coding ELSE [NULL] END)"


# first code of the first CodeableConcept of the list at `path`
def _first_code(path: str) -> str:
    return f"r.{path}[1].coding[1].code"


def _with_reason(table: str) -> str:
    """The table's resources with `reason_condition_code`: the first code of the Condition
    their first reasonReference points to (Synthea writes the reason so; its CSV has the
    code as REASONCODE)."""
    return f"""
        SELECT f.*, c.code AS reason_condition_code
        FROM fhir_{table} f
        LEFT JOIN (SELECT DISTINCT ON (id) id, r.code.coding[1].code AS code
                   FROM fhir_conditions WHERE type = 'Condition') c
          ON c.id = {_ref("reasonReference[1]", "f.")}"""


_SNOMED_SYSTEMS = (
    "('http://snomed.info/sct', 'SNOMED-CT', 'SNOMED', 'urn:oid:2.16.840.1.113883.6.96')"
)


# the valueString of the `text` sub-extension of the US Core extension whose url ends so
def _us_core_text(url_suffix: str) -> str:
    return (
        f"lower(list_filter(list_filter(r.extension, lambda x: x.url LIKE '%{url_suffix}')[1]"
        ".extension, lambda x: x.url = 'text')[1].valueString)"
    )


# the Observation itself as a component (same STRUCT type), for its own code and value
_AS_COMPONENT = "struct_pack(" + ", ".join(f"{k} := r.{k}" for k in _COMPONENT) + ")"

MAPPINGS = {
    "patients": f"""
        SELECT id AS patient_id, r.birthDate AS birth_date,
               r.deceasedDateTime AS death_date,
               CASE lower(r.gender) WHEN 'male' THEN 'M' WHEN 'female' THEN 'F'
                    ELSE r.gender END AS sex,
               {_us_core_text("us-core-race")} AS race,
               {_us_core_text("us-core-ethnicity")} AS ethnicity,
               source_file, source_line
        FROM fhir_patients""",
    "encounters": f"""
        SELECT id AS encounter_id, {_ref("subject")} AS patient_id,
               r.period.start AS start_at, r.period.end AS stop_at,
               r.class.code AS encounter_class,
               {_first_code("type")} AS code,
               coalesce(r.type[1].text, r.type[1].coding[1].display) AS description,
               reason.code AS reason_code, reason.display AS reason_description,
               source_file, source_line
        FROM (SELECT *, list_filter(flatten(list_transform(r.reasonCode, lambda x: x.coding)),
                         lambda x: x.system IN {_SNOMED_SYSTEMS})[1] AS reason
              FROM fhir_encounters)""",
    "conditions": f"""
        SELECT {_ref("subject")} AS patient_id,
               {_ref("encounter")} AS encounter_id,
               coalesce(r.onsetDateTime, r.onsetPeriod.start, r.recordedDate) AS start_date,
               coalesce(r.abatementDateTime, r.abatementPeriod.end) AS stop_date,
               coding.system AS code_system, coding.code AS code,
               coalesce(coding.display, r.code.text) AS description,
               source_file, source_line
        FROM (SELECT *, {_codings("r.code")} AS coding
              FROM fhir_conditions)""",
    # One row per coding of the Observation's code when it has a value or no components,
    # and one per coding of each component (as the Synthea CSV writes blood pressure). One
    # scan: part 0 is the Observation itself, part i its i-th component.
    "observations": f"""
        WITH parts AS (
            SELECT *, CASE WHEN i = 0 THEN {_AS_COMPONENT} ELSE r.component[i] END AS part
            FROM (SELECT source_file, source_line, r,
                         unnest(CASE WHEN coalesce(len(r.component), 0) = 0 THEN [0]
                                     WHEN r.valueQuantity IS NOT NULL OR r.valueString IS NOT NULL
                                          OR r.valueCodeableConcept IS NOT NULL
                                     THEN range(0, len(r.component) + 1)
                                     ELSE range(1, len(r.component) + 1) END) AS i
                  FROM fhir_observations)
        )
        SELECT {_ref("subject")} AS patient_id,
               {_ref("encounter")} AS encounter_id,
               coalesce(r.effectiveDateTime, r.effectivePeriod.start, r.effectiveInstant,
                        r.issued) AS observed_at,
               r.category[1].coding[1].code AS category,
               coding.system AS code_system, coding.code AS code,
               coalesce(coding.display, part.code.text) AS description,
               coalesce(part.valueQuantity.value, part.valueString,
                        part.valueCodeableConcept.coding[1].display,
                        part.valueCodeableConcept.text, part.valueBoolean,
                        part.valueInteger) AS value,
               part.valueQuantity.unit AS units,
               CASE WHEN part.valueQuantity IS NOT NULL THEN 'numeric'
                    WHEN part.valueCodeableConcept IS NOT NULL OR part.valueString IS NOT NULL
                    THEN 'text' END AS value_type,
               source_file, source_line
        FROM (SELECT *, {_codings("part.code")} AS coding FROM parts)""",
    # medicationCodeableConcept, or medicationReference to a Medication resource of the export
    "medications": f"""
        WITH meds AS (SELECT DISTINCT ON (id) id, r.code AS concept
                      FROM fhir_medication_catalog),
        requests AS (
            SELECT f.*, coalesce(f.r.medicationCodeableConcept, m.concept) AS concept
            FROM ({_with_reason("medications")}) f
            LEFT JOIN meds m ON m.id = {_ref("medicationReference", "f.")}
        )
        SELECT {_ref("subject")} AS patient_id,
               coalesce({_ref("encounter")}, {_ref("context")}) AS encounter_id,
               coalesce(r.authoredOn, r.effectiveDateTime, r.effectivePeriod.start,
                        r.dateAsserted) AS start_at,
               r.effectivePeriod.end AS stop_at,
               coding.system AS code_system, coding.code AS code,
               coalesce(coding.display, concept.text) AS description,
               coalesce({_first_code("reasonCode")}, reason_condition_code) AS reason_code,
               source_file, source_line
        FROM (SELECT *, {_codings("concept")} AS coding FROM requests)""",
    "procedures": f"""
        SELECT {_ref("subject")} AS patient_id,
               {_ref("encounter")} AS encounter_id,
               coalesce(r.performedDateTime, r.performedPeriod.start) AS start_at,
               r.performedPeriod.end AS stop_at,
               coding.system AS code_system, coding.code AS code,
               coalesce(coding.display, r.code.text) AS description,
               coalesce({_first_code("reasonCode")}, reason_condition_code) AS reason_code,
               source_file, source_line
        FROM (SELECT *, {_codings("r.code")} AS coding FROM ({_with_reason("procedures")}))""",
    # one row per instance of each series, as the Synthea CSV writes imaging studies
    "imaging_studies": f"""
        WITH series AS (
            SELECT *, unnest(CASE WHEN len(r.series) > 0 THEN r.series ELSE [NULL] END) AS s
            FROM fhir_imaging_studies
        ), instances AS (
            SELECT *, unnest(CASE WHEN len(s.instance) > 0 THEN s.instance ELSE [NULL] END) AS i
            FROM series
        )
        SELECT id AS imaging_study_id, {_ref("subject")} AS patient_id,
               {_ref("encounter")} AS encounter_id,
               coalesce(r.started, s.started) AS studied_at,
               s.bodySite.code AS body_site_code, s.bodySite.display AS body_site_description,
               s.modality.code AS modality_code, s.modality.display AS modality_description,
               {_first_code("procedureCode")} AS procedure_code,
               source_file, source_line
        FROM instances""",
}


@dataclass
class Landed:
    """The FHIR files found and read: views fhir_<group>, temp tables fhir_entries (resources
    of Bundles and line-by-line reads), fhir_bad (not JSON), fhir_blank (blank lines)."""

    folder: Path
    ndjson: list[Path]  # files of a resource type the study reads
    unused: list[Path]  # NDJSON files of other types: not read
    bundles: list[Path]
    counts: dict[Path, accounting.LineCount]  # NDJSON file -> sha256 and physical lines
    typed: dict[str, list[tuple[str, int]]]  # group -> its typed tables (name, file number)


def land(con: duckdb.DuckDBPyConnection, folder: Path) -> Landed:
    """Read every resource the study uses (views fhir_<group>) and every line or Bundle file
    that is not JSON (temp.fhir_bad). Runs outside the load's transaction: a broken file
    makes a read fail, which would abort a transaction."""
    folder = Path(folder)
    found, bundles = _ndjson_files(folder), _bundle_files(folder)
    if not found and not bundles:
        raise IngestError(f"{folder}: no FHIR NDJSON (*.ndjson) or Bundle (*.json) files found")
    ndjson = [p for p in found if _NDJSON.match(p.name)["type"] in _GROUP_OF]
    unused = [p for p in found if p not in ndjson]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE fhir_entries (source_file VARCHAR, source_line BIGINT,"
        " type VARCHAR, j JSON)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE fhir_bad (source_file VARCHAR, source_line BIGINT,"
        " text VARCHAR)"
    )
    con.execute("CREATE OR REPLACE TEMP TABLE fhir_blank (source_file VARCHAR, source_line BIGINT)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE fhir_bundle_sizes (source_file VARCHAR, resources BIGINT)"
    )
    # sha256 (for the manifest) and physical lines (for the row accounting and the fast
    # read): the byte scans run in a thread while DuckDB reads the files (hashlib and DuckDB
    # both release the GIL, so the two overlap); a file's count is asked for after its read
    scans = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhir-scan")
    try:
        counting = {p: scans.submit(accounting.count_lines, p) for p in ndjson}
        typed: dict[str, list[tuple[str, int]]] = {group: [] for group in GROUPS}
        _land_ndjson(con, ndjson, counting, typed)
        counts = {p: counting[p].result() for p in ndjson}
    finally:
        scans.shutdown(cancel_futures=True)
    for p in _land_bundles(con, bundles) if bundles else []:
        # the file's text stays out of the warehouse: it may be anything
        con.execute("INSERT INTO fhir_bad VALUES (?, 0, NULL)", [p.name])
    _group_views(con, typed, [p.name for p in ndjson])
    return Landed(folder, ndjson, unused, bundles, counts, typed)


def _found_types(con: duckdb.DuckDBPyConnection, landed: Landed) -> dict[str, int]:
    """Resources per type: rows of the typed tables (one type per file) and fhir_entries."""
    found = dict(
        con.execute(
            "SELECT type, count(*) FROM fhir_entries WHERE type IS NOT NULL GROUP BY ALL"
        ).fetchall()
    )
    for tables in landed.typed.values():
        for table, n in tables:
            rtype = _NDJSON.match(landed.ndjson[n].name)["type"]
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            found[rtype] = found.get(rtype, 0) + rows
    return found


def load_tables(
    con: duckdb.DuckDBPyConnection, landed: Landed, log: common.Log
) -> common.LoadResult:
    """Map the landed resources into raw.* (inside the load's transaction, after
    common.reset_warehouse)."""
    folder, ndjson, bundles = landed.folder, landed.ndjson, landed.bundles
    con.execute(
        "INSERT INTO meta.quarantine SELECT NULL, source_file, source_line, NULL,"
        " 'malformed_json', text FROM fhir_bad"
    )
    # a JSON line that is not a resource (no resourceType) is not silently skipped
    con.execute(
        "INSERT INTO meta.quarantine SELECT NULL, source_file, source_line, 'resourceType',"
        " 'missing_value', CAST(j AS VARCHAR) FROM fhir_entries WHERE type IS NULL"
    )
    found = _found_types(con, landed)
    if not found.get("Patient"):
        raise IngestError(f"{folder}: the FHIR export has no Patient resources")
    present: dict[str, str] = {}
    for table, types in RESOURCES.items():
        if any(found.get(t) for t in types) or any(
            _NDJSON.match(p.name)["type"] in types for p in ndjson
        ):
            present[table] = ", ".join(t for t in types if found.get(t))
        con.execute(f"CREATE OR REPLACE TEMP VIEW fhir_map AS {MAPPINGS[table]}")
        common.load_table(con, table, "SELECT * FROM fhir_map")
    con.execute("DROP VIEW temp.fhir_map")
    missing = [t for t in ("encounters", "conditions") if t not in present]
    notes = [f"no {', '.join(RESOURCES[t])} resources: {t} is empty" for t in missing]
    ignored_types = sorted(
        (set(found) | {_NDJSON.match(p.name)["type"] for p in landed.unused}) - _USED
    )
    if ignored_types:
        log(f"FHIR resource types not used by the study: {', '.join(ignored_types)}")
    files = [
        common.SourceFileInfo(p, p.name, _tables_of(_NDJSON.match(p.name)["type"])) for p in ndjson
    ] + [common.SourceFileInfo(p, p.name, tuple(RESOURCES)) for p in bundles]
    # NDJSON files of types the study does not use are not read (nor hashed): listed as ignored
    ignored = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in folder.iterdir()
        if p not in set(ndjson) | set(bundles)
    )
    _account(con, landed)
    digests = {p: c.sha256 for p, c in landed.counts.items()}
    common.write_meta(con, files, present, {}, digests)
    return common.LoadResult(files, ignored, notes)


def _account(con: duckdb.DuckDBPyConnection, landed: Landed) -> None:
    """Check that every NDJSON line (counted by a byte scan) and every Bundle entry is
    loaded, quarantined, blank or a resource of a type the study does not load (the
    Medication catalogue, a resource of another type in a Bundle): accounting.check."""
    records = [
        accounting.Records(p.name, 1, landed.counts[p].physical_lines) for p in landed.ndjson
    ]
    sizes = dict(con.execute("SELECT source_file, resources FROM fhir_bundle_sizes").fetchall())
    for p in landed.bundles:
        if p.name in sizes:
            records.append(accounting.Records(p.name, 1, sizes[p.name], "entries"))
        else:  # not JSON: quarantined as a whole, at line 0
            records.append(accounting.Records(p.name, 0, 1, "files"))
    loaded = ", ".join(f"'{t}'" for types in RESOURCES.values() for t in types)
    not_loaded = [
        "SELECT source_file, source_line FROM fhir_blank",
        f"SELECT source_file, source_line FROM fhir_entries WHERE type NOT IN ({loaded})",
        "SELECT source_file, source_line FROM fhir_medication_catalog",
    ]
    accounting.check(con, records, " UNION ALL ".join(not_loaded))


def _tables_of(resource_type: str) -> tuple[str, ...]:
    return tuple(t for t, types in RESOURCES.items() if resource_type in types)


def load(folder: Path, warehouse: Path, log: common.Log = print, **options: Any) -> IngestSummary:
    """Replace raw.* and the ingest meta tables with the FHIR export (one transaction)."""
    return common.load_replacing(folder, warehouse, land, load_tables, log, **options)
