"""OMOP CDM 5.3/5.4 source: CSV (plain or gzipped), Parquet, or tables in a DuckDB database,
into raw.*.

Codes: every clinical record gives one row per concept it carries, the standard concept
(`*_concept_id`) and the source concept (`*_source_concept_id`) when it differs, each turned
into (vocabulary_id, concept_code) through the CDM's own `concept` table. vocabulary_id is
kept as the code system (SNOMED, LOINC, RxNorm, ICD10CM, CPT4): the staging models
normalise it like any other spelling (pipelines/codesystems.py). A record with neither
concept resolvable keeps its `*_source_value` as code, with code system `OMOP source value`
(so it loads, is counted, and matches no value set).

Ids (person_id, visit_occurrence_id, ...) become text without a trailing `.0` (the Eunomia
GiBleed CDM stores them as DOUBLE). Table and column names are matched case-insensitively;
a column a CDM version lacks is NULL. See docs/sources.md for every column.
"""

from __future__ import annotations

import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from pipelines import resync, schema
from pipelines.errors import IngestError
from pipelines.ingest import IngestSummary, read_header
from pipelines.sources import accounting, common

NAME = "omop"
REQUIRED = ("person", "visit_occurrence", "condition_occurrence", "concept")
OPTIONAL = (
    "measurement",
    "observation",
    "procedure_occurrence",
    "drug_exposure",
    "death",
    "observation_period",
)
_FILE = re.compile(r"^(?P<table>[a-z_]+)\.(?P<ext>csv|csv\.gz|parquet)$", re.I)
UNMAPPED = "OMOP source value"
_DATE = schema.Column("date", "DATE", ())  # for common.typed_sql

# canonical table -> the CDM tables it is read from
SOURCES = {
    "patients": ("person", "death"),
    "encounters": ("visit_occurrence",),
    "conditions": ("condition_occurrence", "observation"),
    "observations": ("measurement", "observation"),
    "medications": ("drug_exposure",),
    "procedures": ("procedure_occurrence",),
    "imaging_studies": (),
}
# cdm table -> the canonical tables it feeds
_TARGETS = {
    cdm_table: tuple(t for t, cdm_tables in SOURCES.items() if cdm_table in cdm_tables)
    for cdm_table in {x for cdm_tables in SOURCES.values() for x in cdm_tables}
}
# canonical table -> the CDM table without which it is absent (its features not ascertainable):
# without `measurement`, weight and ALP are unknown even when `observation` has survey rows
PRESENCE = {
    "patients": "person",
    "encounters": "visit_occurrence",
    "conditions": "condition_occurrence",
    "observations": "measurement",
    "medications": "drug_exposure",
    "procedures": "procedure_occurrence",
}


@dataclass
class Cdm:
    """Where each CDM table is: a file, or a table of an attached DuckDB database."""

    folder: Path
    files: dict[str, Path]  # cdm table -> file
    database: Path | None = None
    db_tables: dict[str, str] | None = None  # cdm table -> qualified name in the database
    # CSV files: sha256 and physical lines (one read, for the row accounting and the manifest)
    lines: dict[str, accounting.LineCount] = field(default_factory=dict)
    # CSV files read line by line: their blank lines + continuation lines of multi-line records
    skipped: dict[str, int] = field(default_factory=dict)

    def has(self, table: str) -> bool:
        return table in self.files or table in (self.db_tables or {})


def _scan(folder: Path) -> Cdm:
    files = {}
    for p in sorted(folder.iterdir()):
        m = _FILE.match(p.name) if p.is_file() else None
        if m and m["table"].lower() in (*REQUIRED, *OPTIONAL):
            files.setdefault(m["table"].lower(), p)
    if files:
        return Cdm(folder, files)
    for db in sorted(folder.glob("*.duckdb")):
        tables = _database_tables(db)
        if "person" in tables:
            return Cdm(folder, {}, db, tables)
    return Cdm(folder, {})


def _database_tables(db: Path) -> dict[str, str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT lower(table_name), schema_name, table_name FROM duckdb_tables()"
            " WHERE lower(table_name) IN ?",
            [[*REQUIRED, *OPTIONAL]],
        ).fetchall()
    finally:
        con.close()
    return {t: f"cdm.{_quote(s)}.{_quote(n)}" for t, s, n in sorted(rows)}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def detect(folder: Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and _scan(folder).has("person")


def describe(folder: Path) -> str:
    cdm = _scan(Path(folder))
    where = f"DuckDB database {cdm.database.name}" if cdm.database else "files"
    tables = sorted(cdm.files or cdm.db_tables or {})
    return f"OMOP CDM ({where}): {', '.join(tables)}"


# ---------------------------------------------------------------- step 1: land


# DuckDB reject error_type -> quarantine reason (as the CSV ingest names them)
_REJECT_REASONS = {
    "MISSING COLUMNS": "wrong_field_count",
    "TOO MANY COLUMNS": "wrong_field_count",
    "INVALID ENCODING": "invalid_encoding",
    "UNQUOTED VALUE": "malformed_quotes",
    "LINE SIZE OVER MAXIMUM": "line_too_long",
}


def land(con: duckdb.DuckDBPyConnection, folder: Path) -> Cdm:
    """Each CDM table the study uses into temp table omop_<name>, with its source_line
    (CSV: physical line, header = 1; Parquet and database tables: row number). CSV lines
    DuckDB cannot parse go to temp.omop_rejects, the rest of the file still loads."""
    cdm = _scan(Path(folder))
    missing = [t for t in REQUIRED if not cdm.has(t)]
    if missing:
        raise IngestError(
            f"{folder}: OMOP CDM table(s) missing: {', '.join(missing)} (as <table>.csv,"
            " .csv.gz, .parquet or in a .duckdb file)"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE omop_rejects (cdm_table VARCHAR, source_file VARCHAR,"
        " line BIGINT, reason VARCHAR, text VARCHAR)"
    )
    if cdm.database:
        con.execute("ATTACH $path AS cdm (READ_ONLY)", {"path": str(cdm.database)})
    try:
        for table in (*REQUIRED, *OPTIONAL):
            if table in cdm.files and not cdm.files[table].name.lower().endswith(".parquet"):
                cdm.lines[table] = accounting.count_lines(cdm.files[table])
                cdm.skipped[table] = _land_csv(
                    con, table, cdm.files[table], cdm.lines[table].physical_lines
                )
            elif cdm.has(table):
                relation, params = "read_parquet($path)", {}
                if table in cdm.files:
                    params = {"path": str(cdm.files[table])}
                else:
                    relation = cdm.db_tables[table]
                # rowid follows the order rows were read (insertion order is preserved)
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE omop_{table} AS SELECT * FROM {relation}", params
                )
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE omop_{table} AS SELECT *,"
                    f" rowid + 1 AS __line FROM omop_{table}"
                )
    except duckdb.Error as exc:
        raise IngestError(f"{folder}: OMOP table {table} cannot be read: {exc}") from exc
    finally:
        if cdm.database:
            con.execute("DETACH cdm")
    return cdm


def _land_csv(con: duckdb.DuckDBPyConnection, table: str, path: Path, lines: int) -> int:
    """One CSV table, every column VARCHAR (ids, dates and values are cast in the mapping).

    Fast path: one read_csv, kept when its rows and rejected lines are every physical line
    (`lines`, from the byte scan), one line each. Otherwise (a stray quote swallowed the
    lines after it, a blank line, a value spanning lines, a bare CR or NUL byte) the file is
    read again line by line by the CSV ingest's slow path (pipelines/resync.py), so a bad
    line is quarantined alone. Returns the blank and continuation lines skipped."""
    header = read_header(path)
    if not header:
        raise IngestError(f"{path.name}: file is empty (no header line)")
    columns = {name: "VARCHAR" for name in header}
    try:
        _read_csv(con, path, columns)
        rows, rejected, spanning = con.execute(
            "SELECT (SELECT count(*) FROM omop_read), count(DISTINCT line),"
            " count(*) FILTER (WHERE trim(csv_line, chr(13) || chr(10)) LIKE '%' || chr(10) || '%')"
            " FROM temp.omop_reject_errors"
        ).fetchone()
        fast = 1 + rows + rejected == lines and not spanning
    except duckdb.Error:
        fast = False  # DuckDB's parser stopped (a bare CR): the slow path reads it
    if fast:
        _insert_rejects(con, table, path, "line")
        # the line of good row k: k + 2 (header, 1-based) + the rejected lines before it
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE omop_{table} AS
            WITH skipped AS (
                SELECT line - 2 - (row_number() OVER (ORDER BY line) - 1) AS good_before
                FROM omop_rejects WHERE cdm_table = $table
            )
            SELECT r.*, r.rowid + 2 + (SELECT count(*) FROM skipped s WHERE s.good_before <= r.rowid)
                   AS __line
            FROM omop_read r""",
            {"table": table},
        )
        con.execute("DROP TABLE temp.omop_read")
        return 0
    return _land_csv_slowly(con, table, path, columns)


def _read_csv(
    con: duckdb.DuckDBPyConnection, path: Path, columns: dict[str, str], parallel: bool = True
) -> None:
    con.execute("DROP TABLE IF EXISTS temp.omop_reject_errors")
    con.execute("DROP TABLE IF EXISTS temp.omop_reject_scans")
    con.execute(
        """CREATE OR REPLACE TEMP TABLE omop_read AS SELECT * FROM read_csv($path,
            header = true, auto_detect = false, delim = ',', quote = '"', escape = '"',
            columns = $columns, store_rejects = true, rejects_table = 'omop_reject_errors',
            rejects_scan = 'omop_reject_scans', parallel = $parallel)""",
        {"path": str(path), "columns": columns, "parallel": parallel},
    )


def _insert_rejects(con: duckdb.DuckDBPyConnection, table: str, path: Path, line: str) -> None:
    """DuckDB's rejected lines of the last read into omop_rejects (`line`: SQL of the line)."""
    reasons = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in _REJECT_REASONS.items())
    con.execute(
        f"""INSERT INTO omop_rejects
        SELECT DISTINCT ON ({line}) $table, $file, {line},
               coalesce(CASE error_type::VARCHAR {reasons} END, 'malformed_csv'),
               trim(csv_line, chr(13) || chr(10))
        FROM temp.omop_reject_errors ORDER BY {line}""",
        {"table": table, "file": path.name},
    )


def _land_csv_slowly(
    con: duckdb.DuckDBPyConnection, table: str, path: Path, columns: dict[str, str]
) -> int:
    """The slow path: resync.split_file writes the good records, each with its line number,
    to a clean copy that the same read_csv parses (one thread: see docs/reliability.md);
    the lines it could not make a record of are rejects with their reason."""
    with tempfile.TemporaryDirectory(prefix="redflags-omop-") as tmp:
        clean = Path(tmp) / "clean.csv"
        try:
            split = resync.split_file(path, len(columns), clean)
        except (OSError, EOFError, zlib.error) as exc:
            raise IngestError(f"{path.name}: cannot be read: {exc}") from exc
        _read_csv(con, clean, {"__line": "BIGINT", **columns}, parallel=False)
        # a rejected record of the clean copy starts with its original line number
        _insert_rejects(con, table, path, "try_cast(split_part(csv_line, ',', 1) AS BIGINT)")
    con.executemany(
        "INSERT INTO omop_rejects VALUES (?, ?, ?, ?, ?)",
        [(table, path.name, b.line, b.reason, b.text) for b in split.bad],
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE omop_{table} AS SELECT * FROM omop_read")
    con.execute("DROP TABLE temp.omop_read")
    return split.blank_lines + split.extra_lines


# ---------------------------------------------------------------- step 2: mapping


class _Columns:
    """Column expressions of the landed CDM tables, NULL for a column the version lacks."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.present: dict[str, set[str]] = {}
        for table, column in con.execute(
            "SELECT table_name, lower(column_name) FROM duckdb_columns()"
            " WHERE schema_name = 'main' AND database_name = 'temp'"
            " AND table_name LIKE 'omop_%'"
        ).fetchall():
            self.present.setdefault(table.removeprefix("omop_"), set()).add(column)

    def text(self, table: str, column: str, alias: str = "t") -> str:
        if column not in self.present.get(table, set()):
            return "CAST(NULL AS VARCHAR)"
        return f"nullif(trim(CAST({alias}.{_quote(column)} AS VARCHAR)), '')"

    def id(self, table: str, column: str, alias: str = "t") -> str:
        """An id as text: `6.0` (DOUBLE ids) -> `6`."""
        return f"regexp_replace({self.text(table, column, alias)}, '\\.0+$', '')"

    def day_time(self, table: str, datetime_col: str, date_col: str) -> str:
        return f"coalesce({self.text(table, datetime_col)}, {self.text(table, date_col)})"


def _coded(c: _Columns, table: str, std: str, src: str, value: str, fields: str) -> str:
    """`fields` of every row of omop_<table>, once per resolvable concept (standard and source,
    as (vocabulary_id, concept_code)), or once with its source value when neither resolves."""
    return f"""
        WITH rec AS (
            SELECT {fields}, {c.id(table, std)} AS std_id, {c.id(table, src)} AS src_id,
                   {c.text(table, value)} AS source_value, t.__line AS source_line
            FROM omop_{table} t
        ), coded AS (
            SELECT rec.*, k.vocabulary_id AS code_system, k.concept_code AS code,
                   k.concept_name AS description
            FROM rec JOIN concepts k ON k.concept_id IN (rec.std_id, rec.src_id)
        )
        SELECT * FROM coded
        UNION ALL
        SELECT rec.*, '{UNMAPPED}', rec.source_value, NULL FROM rec
        WHERE NOT EXISTS (SELECT 1 FROM concepts k WHERE k.concept_id IN (rec.std_id, rec.src_id))"""


def _mappings(c: _Columns, cdm: Cdm) -> dict[str, list[tuple[str, str]]]:
    """canonical table -> [(cdm table, SELECT of the canonical columns as text)]."""
    m: dict[str, list[tuple[str, str]]] = {t: [] for t in SOURCES}
    death = (
        f"(SELECT {c.id('death', 'person_id')} AS person_id,"
        f" min({c.day_time('death', 'death_datetime', 'death_date')}) AS death_date"
        " FROM omop_death t GROUP BY ALL)"
        if cdm.has("death")
        else "(SELECT NULL AS person_id, NULL AS death_date WHERE false)"
    )
    birth = (
        f"coalesce({c.text('person', 'birth_datetime')}, CAST(make_date("
        f"try_cast(try_cast({c.text('person', 'year_of_birth')} AS DOUBLE) AS INTEGER),"
        f" coalesce(try_cast(try_cast({c.text('person', 'month_of_birth')} AS DOUBLE) AS INTEGER), 1),"
        f" coalesce(try_cast(try_cast({c.text('person', 'day_of_birth')} AS DOUBLE) AS INTEGER), 1))"
        " AS VARCHAR))"
    )
    gender = c.id("person", "gender_concept_id")
    m["patients"].append(
        (
            "person",
            f"""SELECT {c.id("person", "person_id")} AS patient_id, {birth} AS birth_date,
                   d.death_date,
                   CASE {gender} WHEN '8507' THEN 'M' WHEN '8532' THEN 'F'
                        ELSE {c.text("person", "gender_source_value")} END AS sex,
                   {c.text("person", "race_source_value")} AS race,
                   {c.text("person", "ethnicity_source_value")} AS ethnicity,
                   $file AS source_file, t.__line AS source_line
            FROM omop_person t LEFT JOIN {death} d ON d.person_id = {c.id("person", "person_id")}""",
        )
    )
    m["encounters"].append(
        (
            "visit_occurrence",
            f"""SELECT {c.id("visit_occurrence", "visit_occurrence_id")} AS encounter_id,
                   {c.id("visit_occurrence", "person_id")} AS patient_id,
                   {c.day_time("visit_occurrence", "visit_start_datetime", "visit_start_date")} AS start_at,
                   {c.day_time("visit_occurrence", "visit_end_datetime", "visit_end_date")} AS stop_at,
                   lower(k.concept_code) AS encounter_class, NULL AS code,
                   k.concept_name AS description, NULL AS reason_code, NULL AS reason_description,
                   $file AS source_file, t.__line AS source_line
            FROM omop_visit_occurrence t
            LEFT JOIN concepts k ON k.concept_id = {c.id("visit_occurrence", "visit_concept_id")}""",
        )
    )
    t = "condition_occurrence"
    fields = (
        f"{c.id(t, 'person_id')} AS patient_id, {c.id(t, 'visit_occurrence_id')} AS encounter_id,"
        f" {c.text(t, 'condition_start_date')} AS start_date,"
        f" {c.text(t, 'condition_end_date')} AS stop_date"
    )
    coded = _coded(c, t, "condition_concept_id", "condition_source_concept_id",
                   "condition_source_value", fields)  # fmt: skip
    m["conditions"].append(
        (
            t,
            f"""SELECT patient_id, encounter_id, start_date, stop_date, code_system, code,
                   description, $file AS source_file, source_line FROM ({coded})""",
        )
    )
    # OMOP `observation` holds findings (SNOMED: what Synthea's conditions.csv has) and
    # survey answers (LOINC): each goes where the Synthea layout has it.
    if cdm.has("observation"):
        t = "observation"
        fields = (
            f"{c.id(t, 'person_id')} AS patient_id, {c.id(t, 'visit_occurrence_id')} AS encounter_id,"
            f" {c.day_time(t, 'observation_datetime', 'observation_date')} AS observed_at,"
            f" {c.text(t, 'value_as_number')} AS value_number,"
            f" {c.text(t, 'value_as_string')} AS value_string,"
            f" {c.text(t, 'unit_source_value')} AS units"
        )
        coded = _coded(c, t, "observation_concept_id", "observation_source_concept_id",
                       "observation_source_value", fields)  # fmt: skip
        m["conditions"].append(
            (
                t,
                f"""SELECT patient_id, encounter_id, observed_at AS start_date, NULL AS stop_date,
                       code_system, code, description, $file AS source_file, source_line
                FROM ({coded}) WHERE code_system IS DISTINCT FROM 'LOINC'""",
            )
        )
        m["observations"].append(
            (
                t,
                f"""SELECT patient_id, encounter_id, observed_at, NULL AS category, code_system,
                       code, description, coalesce(value_number, value_string) AS value, units,
                       CASE WHEN value_number IS NOT NULL THEN 'numeric' ELSE 'text' END
                           AS value_type,
                       $file AS source_file, source_line
                FROM ({coded}) WHERE code_system = 'LOINC'""",
            )
        )
    if cdm.has("measurement"):
        t = "measurement"
        fields = (
            f"{c.id(t, 'person_id')} AS patient_id, {c.id(t, 'visit_occurrence_id')} AS encounter_id,"
            f" {c.day_time(t, 'measurement_datetime', 'measurement_date')} AS observed_at,"
            f" {c.text(t, 'value_as_number')} AS value_number,"
            f" {c.text(t, 'value_source_value')} AS value_string,"
            f" {c.text(t, 'unit_source_value')} AS units"
        )
        coded = _coded(c, t, "measurement_concept_id", "measurement_source_concept_id",
                       "measurement_source_value", fields)  # fmt: skip
        m["observations"].append(
            (
                t,
                f"""SELECT patient_id, encounter_id, observed_at, NULL AS category, code_system,
                       code, description, coalesce(value_number, value_string) AS value, units,
                       CASE WHEN value_number IS NOT NULL THEN 'numeric' ELSE 'text' END
                           AS value_type,
                       $file AS source_file, source_line
                FROM ({coded})""",
            )
        )
    if cdm.has("drug_exposure"):
        t = "drug_exposure"
        fields = (
            f"{c.id(t, 'person_id')} AS patient_id, {c.id(t, 'visit_occurrence_id')} AS encounter_id,"
            f" {c.day_time(t, 'drug_exposure_start_datetime', 'drug_exposure_start_date')} AS start_at,"
            f" {c.day_time(t, 'drug_exposure_end_datetime', 'drug_exposure_end_date')} AS stop_at"
        )
        coded = _coded(c, t, "drug_concept_id", "drug_source_concept_id", "drug_source_value",
                       fields)  # fmt: skip
        m["medications"].append(
            (
                t,
                f"""SELECT patient_id, encounter_id, start_at, stop_at, code_system, code,
                       description, NULL AS reason_code, $file AS source_file, source_line
                FROM ({coded})""",
            )
        )
    if cdm.has("procedure_occurrence"):
        t = "procedure_occurrence"
        fields = (
            f"{c.id(t, 'person_id')} AS patient_id, {c.id(t, 'visit_occurrence_id')} AS encounter_id,"
            f" {c.day_time(t, 'procedure_datetime', 'procedure_date')} AS start_at,"
            f" {c.day_time(t, 'procedure_end_datetime', 'procedure_end_date')} AS stop_at"
        )
        coded = _coded(c, t, "procedure_concept_id", "procedure_source_concept_id",
                       "procedure_source_value", fields)  # fmt: skip
        m["procedures"].append(
            (
                t,
                f"""SELECT patient_id, encounter_id, start_at, stop_at, code_system, code,
                       description, NULL AS reason_code, $file AS source_file, source_line
                FROM ({coded})""",
            )
        )
    return m


def _relative(cdm: Cdm, table: str) -> str:
    if table in cdm.files:
        return cdm.files[table].name
    return f"{cdm.database.name}#{table}"


def load_tables(con: duckdb.DuckDBPyConnection, cdm: Cdm, log: common.Log) -> common.LoadResult:
    """Map the landed CDM tables into raw.* (inside the load's transaction, after
    common.reset_warehouse)."""
    c = _Columns(con)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE concepts AS
        SELECT DISTINCT ON (concept_id) {c.id("concept", "concept_id")} AS concept_id,
               {c.text("concept", "vocabulary_id")} AS vocabulary_id,
               {c.text("concept", "concept_code")} AS concept_code,
               {c.text("concept", "concept_name")} AS concept_name
        FROM omop_concept t WHERE {c.id("concept", "concept_id")} <> '0'"""
    )
    # lines that did not parse, under the canonical table they would have fed
    targets = {t: s[0] for t, s in _TARGETS.items()}
    for cdm_table, canonical in targets.items():
        con.execute(
            "INSERT INTO meta.quarantine SELECT $canonical, source_file, line, NULL, reason, text"
            " FROM omop_rejects WHERE cdm_table = $cdm_table",
            {"canonical": canonical, "cdm_table": cdm_table},
        )
    con.execute(
        "INSERT INTO meta.quarantine SELECT NULL, source_file, line, NULL, reason, text"
        " FROM omop_rejects WHERE cdm_table NOT IN (SELECT unnest($known))",
        {"known": list(targets)},
    )
    mappings = _mappings(c, cdm)
    for table, parts in mappings.items():
        if not parts:
            common.load_table(con, table, _empty_select(table))
            continue
        # one load per CDM table, so the unknown-patient check sees raw.patients
        union = " UNION ALL ".join(sql.replace("$file", f"$file_{t}") for t, sql in parts)
        names = {f"file_{t}": _relative(cdm, t) for t, _ in parts}
        common.load_table(con, table, union, names)
    present = {t: cdm_table for t, cdm_table in PRESENCE.items() if cdm.has(cdm_table)}
    notes = {
        "imaging_studies": "OMOP CDM has no imaging table (imaging procedures load as procedures)"
    }
    used = {t for s in SOURCES.values() for t in s} | {"concept", "observation_period"}
    files = [
        common.SourceFileInfo(
            cdm.files[t], cdm.files[t].name, tuple(k for k, s in SOURCES.items() if t in s)
        )
        for t in sorted(cdm.files)
        if t in used
    ]
    _observation_periods(con, c, cdm)
    digests = _account(con, c, cdm)
    common.write_meta(con, files, present, notes, digests)
    ignored = sorted(
        p.name
        for p in cdm.folder.iterdir()
        if p not in {f.path for f in files} and p != cdm.database
    )
    return common.LoadResult(files, ignored if not cdm.database else [], [])


def _account(con: duckdb.DuckDBPyConnection, c: _Columns, cdm: Cdm) -> dict[Path, str]:
    """Check that every record of every CDM table read is loaded, quarantined or used
    (accounting.check); returns the sha256 of each file (counted in the same read).

    Records that give no raw row of their own: a death row is merged into its person's
    patient row (quarantined as unknown_patient when there is no such person); a concept row
    is vocabulary."""
    if cdm.has("death"):
        con.execute(
            f"""INSERT INTO meta.quarantine SELECT 'patients', $file, t.__line, 'person_id',
                   'unknown_patient', {c.id("death", "person_id")}
            FROM omop_death t
            WHERE {c.id("death", "person_id")} IS NULL
               OR {c.id("death", "person_id")} NOT IN (SELECT patient_id FROM raw.patients)""",
            {"file": _relative(cdm, "death")},
        )
    used = [t for t in (*REQUIRED, *OPTIONAL) if cdm.has(t)]
    records, digests, extra = [], {}, []
    for t in used:
        relative = _relative(cdm, t)
        path = cdm.files.get(t)
        if t in cdm.lines:
            counted = cdm.lines[t]
            digests[path] = counted.sha256
            records.append(
                accounting.Records(
                    relative, 2, max(counted.physical_lines - 1, 0), skipped=cdm.skipped[t]
                )
            )
        else:
            n = con.execute(f"SELECT count(*) FROM omop_{t}").fetchone()[0]
            records.append(accounting.Records(relative, 1, n, "rows"))
        if t in ("death", "concept"):
            name = relative.replace("'", "''")
            extra.append(f"SELECT '{name}' AS source_file, __line AS source_line FROM omop_{t}")
    accounting.check(con, records, " UNION ALL ".join(extra))
    return digests


def _observation_periods(con: duckdb.DuckDBPyConnection, c: _Columns, cdm: Cdm) -> None:
    """meta.observation_periods from observation_period: the study ends an episode's
    observation at the end of the period covering its index date (int_follow_up.sql).
    A period with a missing or unparseable date or an end before its start is quarantined
    (table `observation_periods`) with its line, like any record. Periods of persons absent
    from `person` are kept (GiBleed has them): no episode joins them."""
    if not cdm.has("observation_period"):
        return
    t = "observation_period"
    start, end = (
        c.text(t, "observation_period_start_date"),
        c.text(t, "observation_period_end_date"),
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE omop_periods AS
        SELECT {c.id(t, "person_id")} AS patient_id, {start} AS start_text, {end} AS end_text,
               {common.typed_sql(_DATE, start)} AS start_date,
               {common.typed_sql(_DATE, end)} AS end_date, t.__line AS source_line
        FROM omop_observation_period t"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE omop_periods AS SELECT *,
            CASE WHEN start_text IS NOT NULL AND start_date IS NULL THEN 'unparseable_date'
                 WHEN end_text IS NOT NULL AND end_date IS NULL THEN 'unparseable_date'
                 WHEN patient_id IS NULL OR start_text IS NULL OR end_text IS NULL
                     THEN 'missing_value'
                 WHEN end_date < start_date THEN 'end_before_start' END AS problem,
            CASE WHEN start_text IS NOT NULL AND start_date IS NULL
                     THEN 'observation_period_start_date'
                 WHEN end_text IS NOT NULL AND end_date IS NULL THEN 'observation_period_end_date'
                 WHEN patient_id IS NULL THEN 'person_id'
                 WHEN start_text IS NULL THEN 'observation_period_start_date'
                 ELSE 'observation_period_end_date' END AS problem_column
        FROM omop_periods"""
    )
    params = {"file": _relative(cdm, t)}
    con.execute(
        "INSERT INTO meta.observation_periods SELECT patient_id, start_date, end_date, $file,"
        " source_line FROM omop_periods WHERE problem IS NULL ORDER BY source_line",
        params,
    )
    con.execute(
        "INSERT INTO meta.quarantine SELECT 'observation_periods', $file, source_line,"
        " problem_column, problem, concat_ws(',', coalesce(patient_id, ''),"
        " coalesce(start_text, ''), coalesce(end_text, '')) FROM omop_periods"
        " WHERE problem IS NOT NULL",
        params,
    )
    con.execute("DROP TABLE temp.omop_periods")


def _empty_select(table: str) -> str:
    from pipelines import schema

    cols = ", ".join(f"CAST(NULL AS VARCHAR) AS {c.name}" for c in schema.TABLES[table].columns)
    return f"SELECT {cols}, CAST(NULL AS VARCHAR) AS source_file, 0 AS source_line WHERE false"


def load(folder: Path, warehouse: Path, log: common.Log = print, **options: Any) -> IngestSummary:
    """Replace raw.* and the ingest meta tables with the OMOP CDM (one transaction)."""
    return common.load_replacing(folder, warehouse, land, load_tables, log, **options)
