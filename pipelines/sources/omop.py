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

import functools
import re
import tempfile
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
_OFFSET = common._OFFSET  # a UTC offset at the end of a datetime (common.typed_sql)
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
    # the number of each table's first record (CSV: 2, the header is line 1; else 1)
    first: dict[str, int] = field(default_factory=dict)

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


# DuckDB reject error_type -> quarantine reason (as the CSV ingest names them); CAST: a date
# or datetime column (the only columns read with a type, DATE_COLUMNS and DATETIME_COLUMNS)
# whose value is not a date
_REJECT_REASONS = {
    "MISSING COLUMNS": "wrong_field_count",
    "TOO MANY COLUMNS": "wrong_field_count",
    "INVALID ENCODING": "invalid_encoding",
    "UNQUOTED VALUE": "malformed_quotes",
    "LINE SIZE OVER MAXIMUM": "line_too_long",
    "CAST": "unparseable_date",
}
# The CDM date columns the study reads, read as DATE (the CDM DDL's type) -> the canonical
# column a bad value is quarantined under. Ids and values stay text: a DOUBLE id `6.0` is kept
# as `6` (DuckDB's BIGINT parse would round `6.5` to 7), a value is kept as written.
DATE_COLUMNS = {
    "death": {"death_date": "death_date"},
    "visit_occurrence": {"visit_start_date": "start_at", "visit_end_date": "stop_at"},
    "condition_occurrence": {
        "condition_start_date": "start_date",
        "condition_end_date": "stop_date",
    },
    "observation": {"observation_date": "start_date"},
    "measurement": {"measurement_date": "observed_at"},
    "drug_exposure": {"drug_exposure_start_date": "start_at", "drug_exposure_end_date": "stop_at"},
    "procedure_occurrence": {"procedure_date": "start_at", "procedure_end_date": "stop_at"},
    "observation_period": {
        "observation_period_start_date": "observation_period_start_date",
        "observation_period_end_date": "observation_period_end_date",
    },
}
# The CDM datetime columns the study reads only as a time (_Columns.day_time), read as
# TIMESTAMPTZ with the session's time zone set to UTC for the read (_read_csv): a UTC offset
# is applied, a datetime without one is taken as written (as typed_sql does); -> the
# canonical column a bad value is quarantined under. Parsed at read, not landed as text and
# parsed again: at 20k patients that text was the dearest column of measurement (a file with
# a value that does not read as a time is read again with these as text: _land_csv). Not
# observation's and death's datetimes: their day as written is read too (_Columns.day).
DATETIME_COLUMNS = {
    "visit_occurrence": {"visit_start_datetime": "start_at", "visit_end_datetime": "stop_at"},
    "measurement": {"measurement_datetime": "observed_at"},
    "drug_exposure": {
        "drug_exposure_start_datetime": "start_at",
        "drug_exposure_end_datetime": "stop_at",
    },
    "procedure_occurrence": {"procedure_datetime": "start_at", "procedure_end_datetime": "stop_at"},
}

# The CDM columns the mapping reads (step 2), by CDM table: a CSV table is landed with these
# only (matched case-insensitively), so the read does not materialise the columns no
# canonical column comes from (GiBleed's measurement: 10 of 20). A column missing from here
# would read as NULL: tests/test_omop_source.py checks that the mapping asks for no other.
USED_COLUMNS = {
    "person": (
        "person_id", "gender_concept_id", "year_of_birth", "month_of_birth", "day_of_birth",
        "birth_datetime", "gender_source_value", "race_source_value", "ethnicity_source_value",
    ),
    "death": ("person_id", "death_date", "death_datetime"),
    "visit_occurrence": (
        "visit_occurrence_id", "person_id", "visit_concept_id", "visit_start_date",
        "visit_start_datetime", "visit_end_date", "visit_end_datetime",
    ),
    "condition_occurrence": (
        "person_id", "visit_occurrence_id", "condition_concept_id",
        "condition_source_concept_id", "condition_source_value", "condition_start_date",
        "condition_end_date",
    ),
    "observation": (
        "person_id", "visit_occurrence_id", "observation_concept_id",
        "observation_source_concept_id", "observation_source_value", "observation_date",
        "observation_datetime", "value_as_number", "value_as_string", "unit_source_value",
    ),
    "measurement": (
        "person_id", "visit_occurrence_id", "measurement_concept_id",
        "measurement_source_concept_id", "measurement_source_value", "measurement_date",
        "measurement_datetime", "value_as_number", "value_source_value", "unit_source_value",
    ),
    "drug_exposure": (
        "person_id", "visit_occurrence_id", "drug_concept_id", "drug_source_concept_id",
        "drug_source_value", "drug_exposure_start_date", "drug_exposure_start_datetime",
        "drug_exposure_end_date", "drug_exposure_end_datetime",
    ),
    "procedure_occurrence": (
        "person_id", "visit_occurrence_id", "procedure_concept_id",
        "procedure_source_concept_id", "procedure_source_value", "procedure_date",
        "procedure_datetime", "procedure_end_date", "procedure_end_datetime",
    ),
    "concept": ("concept_id", "vocabulary_id", "concept_code", "concept_name"),
    "observation_period": (
        "person_id", "observation_period_start_date", "observation_period_end_date",
    ),
}  # fmt: skip


def land(con: duckdb.DuckDBPyConnection, folder: Path) -> Cdm:
    """Each CDM table the study uses into temp table omop_<name>, read once. Its record
    numbers: CSV: physical line (header = 1), `rowid + 2` when every line was one row, else a
    `__line` column; Parquet and database tables: row number, `rowid + 1`. CSV lines DuckDB
    cannot parse (or whose date does not parse) go to temp.omop_rejects, the rest of the file
    still loads."""
    cdm = _scan(Path(folder))
    missing = [t for t in REQUIRED if not cdm.has(t)]
    if missing:
        raise IngestError(
            f"{folder}: OMOP CDM table(s) missing: {', '.join(missing)} (as <table>.csv,"
            " .csv.gz, .parquet or in a .duckdb file)"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE omop_rejects (cdm_table VARCHAR, source_file VARCHAR,"
        " line BIGINT, column_name VARCHAR, reason VARCHAR, text VARCHAR)"
    )
    if cdm.database:
        con.execute("ATTACH $path AS cdm (READ_ONLY)", {"path": str(cdm.database)})
    csv_tables = [
        t
        for t in (*REQUIRED, *OPTIONAL)
        if t in cdm.files and not cdm.files[t].name.lower().endswith(".parquet")
    ]
    # the byte scans (sha256 and physical lines) run in a thread while DuckDB reads: hashlib
    # releases the GIL, and so does DuckDB, so the two overlap instead of taking turns
    scans = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omop-scan")
    counting = {t: scans.submit(accounting.count_lines, cdm.files[t]) for t in csv_tables}
    try:
        for table in (*REQUIRED, *OPTIONAL):
            if table in counting:
                lines = functools.partial(_lines, cdm, table, counting[table])
                cdm.skipped[table] = _land_csv(con, table, cdm.files[table], lines)
                lines()  # in cdm.lines even when the parser stopped before asking
                cdm.first[table] = 2
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
                cdm.first[table] = 1
    except duckdb.Error as exc:
        raise IngestError(f"{folder}: OMOP table {table} cannot be read: {exc}") from exc
    finally:
        scans.shutdown(cancel_futures=True)
        if cdm.database:
            con.execute("DETACH cdm")
    return cdm


def _lines(cdm: Cdm, table: str, counting: Future) -> int:
    """The physical lines of a CSV table's file, when its byte scan is done (kept in
    cdm.lines with its sha256 for the row accounting and the manifest)."""
    try:
        cdm.lines[table] = counting.result()
    except OSError as exc:
        raise IngestError(f"{cdm.files[table].name}: cannot be read: {exc}") from exc
    return cdm.lines[table].physical_lines


def _land_csv(
    con: duckdb.DuckDBPyConnection, table: str, path: Path, lines: Callable[[], int]
) -> int:
    """One CSV table: the study's date columns as DATE, the datetimes it reads only as times
    as TIMESTAMPTZ, the others VARCHAR (DATE_COLUMNS, DATETIME_COLUMNS); only the columns
    the mapping reads are landed (USED_COLUMNS).

    Fast path: one read_csv, kept when its rows and rejected lines are every physical line
    (`lines()`, from the byte scan, asked for after the read), one line each; with no
    rejected line the table is used as read (line = rowid + 2), else a `__line` column is
    added. Otherwise (a stray quote swallowed the lines after it, a blank line, a value
    spanning lines, a bare CR or NUL byte) the file is read again line by line by the CSV
    ingest's slow path (pipelines/resync.py), so a bad line is quarantined alone. Returns the blank and
    continuation lines skipped."""
    header = read_header(path)
    if not header:
        raise IngestError(f"{path.name}: file is empty (no header line)")
    columns = {name: _CSV_TYPES.get((table, name.lower()), "VARCHAR") for name in header}
    try:
        used = USED_COLUMNS[table]
        if not any(name.lower() in used for name in header):
            used = None  # a projection needs a column
        rows, rejected, spanning, encoding, untimed = _read_counted(con, path, columns, used)
        if untimed:
            # a datetime read as TIMESTAMPTZ that is not one (blank, only spaces, or not a
            # time) would reject its whole line, where the mapping takes a blank datetime as
            # absent (the date is used) and quarantines the row of a bad one: such a file's
            # datetimes are read as text, as before, and parsed by the mapping
            columns = {n: "VARCHAR" if t == "TIMESTAMPTZ" else t for n, t in columns.items()}
            rows, rejected, spanning, encoding, _ = _read_counted(con, path, columns, used)
        if encoding:
            # a line whose bytes are not UTF-8 in a column not landed is landed and rejected
            # both by DuckDB (it checks the encoding of every column, keeps the row when the
            # bad one is not read): read every column, so it is rejected only
            rows, rejected, spanning, _, _ = _read_counted(con, path, columns, None)
        fast = 1 + rows + rejected == lines() and not spanning
    except duckdb.Error:
        fast = False  # DuckDB's parser stopped (a bare CR): the slow path reads it
    if fast and not rejected:  # the common case: no copy, line = rowid + 2
        con.execute(f"DROP TABLE IF EXISTS temp.omop_{table}")
        con.execute(f"ALTER TABLE temp.omop_read RENAME TO omop_{table}")
        return 0
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


# (cdm table, column) -> the type it is read as from CSV (the rest: VARCHAR)
_CSV_TYPES = {
    **{(t, c): "DATE" for t, cols in DATE_COLUMNS.items() for c in cols},
    **{(t, c): "TIMESTAMPTZ" for t, cols in DATETIME_COLUMNS.items() for c in cols},
}


def _read_counted(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    columns: dict[str, str],
    used: tuple[str, ...] | None,
) -> tuple[int, int, int, int, int]:
    """_read_csv, then (rows landed, lines rejected, rejected records spanning lines,
    rejects for an invalid encoding, rejects of a value read as TIMESTAMPTZ)."""
    _read_csv(con, path, columns, used)
    timed = [n.lower() for n, t in columns.items() if t == "TIMESTAMPTZ"]
    return con.execute(
        "SELECT (SELECT count(*) FROM omop_read), count(DISTINCT line),"
        " count(*) FILTER (WHERE trim(csv_line, chr(13) || chr(10)) LIKE '%' || chr(10) || '%'),"
        " count(*) FILTER (WHERE error_type::VARCHAR = 'INVALID ENCODING'),"
        " count(*) FILTER (WHERE error_type::VARCHAR = 'CAST'"
        "                  AND list_contains($timed, lower(column_name)))"
        " FROM temp.omop_reject_errors",
        {"timed": timed},
    ).fetchone()


def _read_csv(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    columns: dict[str, str],
    used: tuple[str, ...] | None = None,
    parallel: bool = True,
) -> None:
    """temp.omop_read: the file parsed with every column of `columns` (so a line with too
    few or too many fields is rejected), landing only those named in `used` (lower case;
    None: all), in the order read; its rejected lines in temp.omop_reject_errors."""
    con.execute("DROP TABLE IF EXISTS temp.omop_reject_errors")
    con.execute("DROP TABLE IF EXISTS temp.omop_reject_scans")
    # a TIMESTAMPTZ without an offset is read in the session's time zone: UTC, so that it is
    # the wall-clock time as written (the connection's own setting is put back)
    zone = con.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    con.execute("SET TimeZone = 'UTC'")
    try:
        _read_csv_utc(con, path, columns, used, parallel)
    finally:
        con.execute("SET TimeZone = $zone", {"zone": zone})


def _read_csv_utc(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    columns: dict[str, str],
    used: tuple[str, ...] | None,
    parallel: bool,
) -> None:
    con.execute(
        """CREATE OR REPLACE TEMP TABLE omop_read AS
        SELECT COLUMNS(lambda c: $used IS NULL OR list_contains($used, lower(c))) FROM read_csv($path,
            header = true, auto_detect = false, delim = ',', quote = '"', escape = '"',
            columns = $columns, store_rejects = true,
            rejects_table = 'omop_reject_errors', rejects_scan = 'omop_reject_scans',
            parallel = $parallel)""",
        {
            "path": str(path),
            "columns": columns,
            "used": None if used is None else list(used),
            "parallel": parallel,
        },
    )


def _insert_rejects(con: duckdb.DuckDBPyConnection, table: str, path: Path, line: str) -> None:
    """DuckDB's rejected lines of the last read into omop_rejects (`line`: SQL of the line);
    a date that does not parse is named by its canonical column."""
    reasons = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in _REJECT_REASONS.items())
    columns = (
        " ".join(
            f"WHEN '{k}' THEN '{v}'"
            for k, v in {**DATE_COLUMNS.get(table, {}), **DATETIME_COLUMNS.get(table, {})}.items()
        )
        or "WHEN NULL THEN NULL"
    )
    con.execute(
        f"""INSERT INTO omop_rejects
        SELECT DISTINCT ON ({line}) $table, $file, {line},
               CASE WHEN error_type::VARCHAR = 'CAST' THEN CASE lower(column_name) {columns} END END,
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
        # every column: a projection could land a line it also rejects (see _land_csv)
        _read_csv(con, clean, {"__line": "BIGINT", **columns}, parallel=False)
        # a rejected record of the clean copy starts with its original line number
        _insert_rejects(con, table, path, "try_cast(split_part(csv_line, ',', 1) AS BIGINT)")
    if split.bad:  # none: only blank or continuation lines sent the file here
        con.executemany(
            "INSERT INTO omop_rejects VALUES (?, ?, ?, NULL, ?, ?)",
            [(table, path.name, b.line, b.reason, b.text) for b in split.bad],
        )
    con.execute(f"CREATE OR REPLACE TEMP TABLE omop_{table} AS SELECT * FROM omop_read")
    con.execute("DROP TABLE temp.omop_read")
    return split.blank_lines + split.extra_lines


# ---------------------------------------------------------------- step 2: mapping


class _Columns:
    """SQL over a landed CDM table (alias t): its columns as text, ids, dates and timestamps,
    NULL for a column the CDM version lacks; whatever type the column was landed as (CSV:
    DATE_COLUMNS are DATE, DATETIME_COLUMNS TIMESTAMPTZ, the rest VARCHAR; Parquet and
    DuckDB: their own types)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, cdm: Cdm):
        self.types: dict[str, dict[str, str]] = {}
        for table, column, data_type in con.execute(
            "SELECT table_name, lower(column_name), data_type FROM duckdb_columns()"
            " WHERE schema_name = 'main' AND database_name = 'temp'"
            " AND table_name LIKE 'omop_%'"
        ).fetchall():
            self.types.setdefault(table.removeprefix("omop_"), {})[column] = data_type
        self.first = cdm.first

    def raw(self, table: str, column: str, alias: str = "t") -> str:
        if column not in self.types.get(table, {}):
            return "CAST(NULL AS VARCHAR)"
        return f"{alias}.{_quote(column)}"

    def text(self, table: str, column: str, alias: str = "t") -> str:
        kind = self.types.get(table, {}).get(column)
        if kind is None:
            return "CAST(NULL AS VARCHAR)"
        if kind == "VARCHAR":
            return _blank_to_null(f"{alias}.{_quote(column)}")
        return f"nullif(trim(CAST({alias}.{_quote(column)} AS VARCHAR)), '')"

    def id(self, table: str, column: str, alias: str = "t") -> str:
        """An id as text: `6.0` (DOUBLE ids) -> `6`."""
        return _id_sql(self.text(table, column, alias))

    def date(self, table: str, column: str) -> tuple[str, str]:
        """(the column as DATE, SQL true when it holds a value that is not a date)."""
        kind = self.types.get(table, {}).get(column)
        if kind is None:
            return "CAST(NULL AS DATE)", "false"
        if kind == "DATE" or kind.startswith("TIMESTAMP"):  # typed when read
            return f"CAST(t.{_quote(column)} AS DATE)", "false"
        text = self.text(table, column)
        typed = common.typed_sql(_DATE, text)
        return typed, f"({text} IS NOT NULL AND {typed} IS NULL)"

    def day_time(self, table: str, datetime_col: str, date_col: str) -> tuple[str, str]:
        """(the datetime, else the date at midnight, as TIMESTAMP; SQL true when the value
        used is not a date or time)."""
        day, day_bad = self.date(table, date_col)
        if self.types.get(table, {}).get(datetime_col) == "TIMESTAMP WITH TIME ZONE":
            # typed when read (CSV: DATETIME_COLUMNS): the instant, as naive UTC
            at = f"timezone('UTC', t.{_quote(datetime_col)})"
            return (
                f"CASE WHEN {at} IS NOT NULL THEN {at} ELSE CAST({day} AS TIMESTAMP) END",
                f"CASE WHEN {at} IS NOT NULL THEN false ELSE {day_bad} END",
            )
        text = self.text(table, datetime_col)
        # common.typed_sql's UTC offset test, skipped for the 19-character datetimes that
        # cannot have one (most CDM rows: the regex is the dearest part of the cast)
        at = (
            f"CASE WHEN length({text}) > 19 AND regexp_matches({text}, '{_OFFSET}')"
            f" THEN timezone('UTC', try_cast({text} AS TIMESTAMPTZ))"
            f" ELSE try_cast({text} AS TIMESTAMP) END"
        )
        return (
            f"CASE WHEN {text} IS NOT NULL THEN {at} ELSE CAST({day} AS TIMESTAMP) END",
            f"CASE WHEN {text} IS NOT NULL THEN {at} IS NULL ELSE {day_bad} END",
        )

    def day(self, table: str, datetime_col: str, date_col: str) -> tuple[str, str]:
        """(the date written in the datetime, else the date, as DATE; SQL true when the value
        used is not a date): the day as written, before any UTC offset."""
        text = self.text(table, datetime_col)
        on_day = common.typed_sql(_DATE, text)
        day, day_bad = self.date(table, date_col)
        return (
            f"CASE WHEN {text} IS NOT NULL THEN {on_day} ELSE {day} END",
            f"CASE WHEN {text} IS NOT NULL THEN {on_day} IS NULL ELSE {day_bad} END",
        )

    def line(self, table: str) -> str:
        """The record's number in its file: physical line (CSV) or row number."""
        if "__line" in self.types.get(table, {}):
            return "t.__line"
        return f"(t.rowid + {int(self.first[table])})"


def _blank_to_null(text: str) -> str:
    """`nullif(trim(text), '')`, with the trim (a copy of every string) only for the values
    that have a space at either end or are empty: most have neither."""
    return (
        f"CASE WHEN {text} = '' OR starts_with({text}, ' ') OR ends_with({text}, ' ')"
        f" THEN nullif(trim({text}), '') ELSE {text} END"
    )


def _id_sql(text: str) -> str:
    return (
        f"CASE WHEN contains({text}, '.') THEN regexp_replace({text}, '\\.0+$', '') ELSE {text} END"
    )


# A canonical column's SQL: (value in the canonical type, SQL true when its source value is
# there but does not parse, for DATE and TIMESTAMP columns)
Expr = tuple[str, str]


def _pairs(con: duckdb.DuckDBPyConnection, c: _Columns, table: str, std: str, src: str) -> str:
    """temp.pairs_<table>: every distinct (standard, source) concept id pair of the table, once
    per concept of the pair found in `concepts` (both, when they differ), or once as unmapped.
    So each record is coded by one equality join on a table of a few thousand rows, however
    many records there are. Returns the join condition (alias t: the record, p: the pair)."""
    left, right = c.raw(table, std), c.raw(table, src)
    std_id = _id_sql("nullif(trim(CAST(p.std AS VARCHAR)), '')")
    src_id = _id_sql("nullif(trim(CAST(p.src AS VARCHAR)), '')")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE pairs_{table} AS
        WITH p AS (SELECT DISTINCT {left} AS std, {right} AS src FROM omop_{table} t),
        ids AS (SELECT p.std, p.src, {std_id} AS std_id, {src_id} AS src_id FROM p)
        SELECT ids.std, ids.src, true AS mapped, k.vocabulary_id AS code_system,
               k.concept_code AS code, k.concept_name AS description
        FROM ids JOIN concepts k ON k.concept_id IN (ids.std_id, ids.src_id)
        UNION ALL
        SELECT ids.std, ids.src, false, '{UNMAPPED}', NULL, NULL FROM ids
        WHERE NOT EXISTS (SELECT 1 FROM concepts k WHERE k.concept_id IN (ids.std_id, ids.src_id))"""
    )
    return f"p.std IS NOT DISTINCT FROM {left} AND p.src IS NOT DISTINCT FROM {right}"


def _coded(
    con: duckdb.DuckDBPyConnection, c: _Columns, table: str, prefix: str, value: str
) -> tuple[str, dict[str, Expr]]:
    """FROM clause and code columns of a coded CDM table: one row per concept found (standard
    and source, as (vocabulary_id, concept_code)), or one with its source value when none is."""
    on = _pairs(con, c, table, f"{prefix}_concept_id", f"{prefix}_source_concept_id")
    source_value = c.text(table, value)
    columns = {
        "code_system": ("p.code_system", "false"),
        "code": (f"CASE WHEN p.mapped THEN p.code ELSE {source_value} END", "false"),
        "description": ("p.description", "false"),
    }
    return f"omop_{table} t JOIN pairs_{table} p ON {on}", columns


def _ids(c: _Columns, table: str) -> dict[str, Expr]:
    return {
        "patient_id": (c.id(table, "person_id"), "false"),
        "encounter_id": (c.id(table, "visit_occurrence_id"), "false"),
    }


def _text(sql: str) -> Expr:
    return (sql, "false")


def _parts(con: duckdb.DuckDBPyConnection, c: _Columns, cdm: Cdm) -> dict[str, list[tuple]]:
    """canonical table -> [(cdm table, {canonical column: Expr}, FROM clause, WHERE)]."""
    m: dict[str, list[tuple]] = {t: [] for t in SOURCES}
    death = "(SELECT NULL AS person_id, CAST(NULL AS DATE) AS death_date, false AS bad WHERE false)"
    if cdm.has("death"):
        day, bad = c.day("death", "death_datetime", "death_date")
        death = (
            f"(SELECT {c.id('death', 'person_id')} AS person_id, min({day})"
            f" AS death_date, bool_or({bad}) AS bad FROM omop_death t GROUP BY 1)"
        )
    birth_text = (
        f"coalesce({c.text('person', 'birth_datetime')}, CAST(make_date("
        f"try_cast(try_cast({c.text('person', 'year_of_birth')} AS DOUBLE) AS INTEGER),"
        f" coalesce(try_cast(try_cast({c.text('person', 'month_of_birth')} AS DOUBLE) AS INTEGER), 1),"
        f" coalesce(try_cast(try_cast({c.text('person', 'day_of_birth')} AS DOUBLE) AS INTEGER), 1))"
        " AS VARCHAR))"
    )
    birth = common.typed_sql(_DATE, birth_text)
    gender = c.id("person", "gender_concept_id")
    person_id = c.id("person", "person_id")
    m["patients"].append(
        (
            "person",
            {
                "patient_id": _text(person_id),
                "birth_date": (birth, f"({birth_text} IS NOT NULL AND {birth} IS NULL)"),
                "death_date": ("d.death_date", "coalesce(d.bad, false)"),
                "sex": _text(
                    f"CASE {gender} WHEN '8507' THEN 'M' WHEN '8532' THEN 'F'"
                    f" ELSE {c.text('person', 'gender_source_value')} END"
                ),
                "race": _text(c.text("person", "race_source_value")),
                "ethnicity": _text(c.text("person", "ethnicity_source_value")),
            },
            f"omop_person t LEFT JOIN {death} d ON d.person_id = {person_id}",
            "true",
        )
    )
    t = "visit_occurrence"
    m["encounters"].append(
        (
            t,
            {
                "encounter_id": _text(c.id(t, "visit_occurrence_id")),
                "patient_id": _text(c.id(t, "person_id")),
                "start_at": c.day_time(t, "visit_start_datetime", "visit_start_date"),
                "stop_at": c.day_time(t, "visit_end_datetime", "visit_end_date"),
                "encounter_class": _text("lower(k.concept_code)"),
                "description": _text("k.concept_name"),
            },
            f"omop_{t} t LEFT JOIN concepts k ON k.concept_id = {c.id(t, 'visit_concept_id')}",
            "true",
        )
    )
    t = "condition_occurrence"
    source, code = _coded(con, c, t, "condition", "condition_source_value")
    m["conditions"].append(
        (
            t,
            {
                **_ids(c, t),
                "start_date": c.date(t, "condition_start_date"),
                "stop_date": c.date(t, "condition_end_date"),
                **code,
            },
            source,
            "true",
        )
    )
    # OMOP `observation` holds findings (SNOMED: what Synthea's conditions.csv has) and
    # survey answers (LOINC): each goes where the Synthea layout has it.
    if cdm.has("observation"):
        t = "observation"
        source, code = _coded(con, c, t, "observation", "observation_source_value")
        at = c.day_time(t, "observation_datetime", "observation_date")
        number, string = c.text(t, "value_as_number"), c.text(t, "value_as_string")
        m["conditions"].append(
            (
                t,
                {
                    **_ids(c, t),
                    "start_date": c.day(t, "observation_datetime", "observation_date"),
                    **code,
                },
                source,
                "p.code_system IS DISTINCT FROM 'LOINC'",
            )
        )
        m["observations"].append((t, _observation(c, t, at, number, string, code), source,
                                  "p.code_system = 'LOINC'"))  # fmt: skip
    if cdm.has("measurement"):
        t = "measurement"
        source, code = _coded(con, c, t, "measurement", "measurement_source_value")
        at = c.day_time(t, "measurement_datetime", "measurement_date")
        number, string = c.text(t, "value_as_number"), c.text(t, "value_source_value")
        m["observations"].append((t, _observation(c, t, at, number, string, code), source, "true"))
    for t, prefix, target, start, end in (
        ("drug_exposure", "drug", "medications", "drug_exposure_start", "drug_exposure_end"),
        ("procedure_occurrence", "procedure", "procedures", "procedure", "procedure_end"),
    ):
        if cdm.has(t):
            source, code = _coded(con, c, t, prefix, f"{prefix}_source_value")
            columns = {
                **_ids(c, t),
                "start_at": c.day_time(t, f"{start}_datetime", f"{start}_date"),
                "stop_at": c.day_time(t, f"{end}_datetime", f"{end}_date"),
                **code,
            }
            m[target].append((t, columns, source, "true"))
    return m


def _observation(c: _Columns, t: str, at: Expr, number: str, string: str, code: dict) -> dict:
    return {
        **_ids(c, t),
        "observed_at": at,
        **code,
        "value": _text(f"coalesce({number}, {string})"),
        "units": _text(c.text(t, "unit_source_value")),
        "value_type": _text(f"CASE WHEN {number} IS NOT NULL THEN 'numeric' ELSE 'text' END"),
    }


def _load_rows(
    con: duckdb.DuckDBPyConnection,
    c: _Columns,
    table: str,
    cdm_table: str,
    columns: dict[str, Expr],
    source: str,
    where: str,
    file: str,
) -> None:
    """One CDM table's rows of canonical table `table` into raw.<table>, or into
    meta.quarantine with the first reason that applies (the checks and their order of
    common.load_table).

    One pass maps, types and checks the rows straight into raw.<table>, in the order read
    (no temp table of every mapped row beside the landed table: at 100k patients that copy
    of measurement filled the memory budget). A row with a problem is written with a
    negative source_line that holds its line and the number of its check,
    -(line * _CHECKS + check); only when there is one are those rows moved into
    meta.quarantine (their text is that of their typed values, as written into raw) and
    deleted from raw. So each row is mapped once, and each check computed once (a NOT IN
    named twice in the CASEs was two hash joins)."""
    t = schema.TABLES[table]
    given = [col for col in t.columns if col.name in columns]
    typed = [f"{columns[col.name][0]} AS {col.name}" for col in given]
    typed += [
        f"{columns[col.name][1]} AS {col.name}__bad"
        for col in given
        if columns[col.name][1] != "false"
    ]
    checks = [
        (f"{col.name}__bad", "unparseable_date", col.name)
        for col in given
        if col.type in ("DATE", "TIMESTAMP") and columns[col.name][1] != "false"
    ]
    checks += [
        (f"{col.name} IS NULL" if col in given else "true", "missing_value", col.name)
        for col in t.columns
        if col.required
    ]
    # __once: the last check, computed once per row in a subquery
    if table == "patients":
        cond = "row_number() OVER (PARTITION BY patient_id ORDER BY source_line) > 1"
        checks.append(("__once", "duplicate_patient_id", "patient_id"))
    else:
        cond = f"{t.patient_column} NOT IN (SELECT patient_id FROM raw.patients)"
        checks.append(("__once", "unknown_patient", t.patient_column))
    assert len(checks) < _CHECKS
    reason = " ".join(f"WHEN {cond} THEN {int(i)}" for i, (cond, _, _) in enumerate(checks, 1))
    values = {col.name: col.name if col in given else "NULL" for col in t.columns}
    # in the order read (insertion order is preserved through the scan and the join)
    con.execute(
        f"""INSERT INTO raw.{table}
        SELECT {", ".join(values.values())}, $file,
               CASE WHEN problem IS NULL THEN source_line
                    ELSE -(source_line * {int(_CHECKS)} + problem) END
        FROM (SELECT *, CASE {reason} END AS problem
              FROM (SELECT *, {cond} AS __once FROM
                    (SELECT {", ".join(typed)}, {c.line(cdm_table)} AS source_line
                     FROM {source} WHERE {where}) mapped) once) checked""",
        {"file": file},
    )
    if not con.execute(f"SELECT count(*) FROM raw.{table} WHERE source_line < 0").fetchone()[0]:
        return
    fields = ", ".join(f"coalesce(CAST({col.name} AS VARCHAR), '')" for col in t.columns)
    con.execute(
        f"""INSERT INTO meta.quarantine
        SELECT $table, $file, (-source_line) // {int(_CHECKS)}, $columns[(-source_line) % {int(_CHECKS)}],
               $reasons[(-source_line) % {int(_CHECKS)}], concat_ws(',', {fields})
        FROM raw.{table} WHERE source_line < 0""",
        {"table": table, "file": file, "columns": [col for _, _, col in checks],
         "reasons": [r for _, r, _ in checks]},
    )  # fmt: skip
    con.execute(f"DELETE FROM raw.{table} WHERE source_line < 0")


# a problem row's source_line in raw before it moves to the quarantine: -(line * _CHECKS +
# check number); more than the checks of any table
_CHECKS = 64


def _relative(cdm: Cdm, table: str) -> str:
    if table in cdm.files:
        return cdm.files[table].name
    return f"{cdm.database.name}#{table}"


def load_tables(con: duckdb.DuckDBPyConnection, cdm: Cdm, log: common.Log) -> common.LoadResult:
    """Map the landed CDM tables into raw.* (inside the load's transaction, after
    common.reset_warehouse)."""
    c = _Columns(con, cdm)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE concepts AS
        SELECT DISTINCT ON (concept_id) {c.id("concept", "concept_id")} AS concept_id,
               {c.text("concept", "vocabulary_id")} AS vocabulary_id,
               {c.text("concept", "concept_code")} AS concept_code,
               {c.text("concept", "concept_name")} AS concept_name
        FROM omop_concept t WHERE {c.id("concept", "concept_id")} <> '0'"""
    )
    # lines that did not parse, under the canonical table they would have fed
    targets = {t: s[0] for t, s in _TARGETS.items()} | {"observation_period": "observation_periods"}
    for cdm_table, canonical in targets.items():
        con.execute(
            "INSERT INTO meta.quarantine SELECT $canonical, source_file, line, column_name,"
            " reason, text FROM omop_rejects WHERE cdm_table = $cdm_table",
            {"canonical": canonical, "cdm_table": cdm_table},
        )
    con.execute(
        "INSERT INTO meta.quarantine SELECT NULL, source_file, line, NULL, reason, text"
        " FROM omop_rejects WHERE cdm_table NOT IN (SELECT unnest($known))",
        {"known": list(targets)},
    )
    # one load per CDM table, patients first, so the unknown-patient check sees raw.patients
    for table, parts in _parts(con, c, cdm).items():
        for cdm_table, columns, source, where in parts:
            _load_rows(con, c, table, cdm_table, columns, source, where, _relative(cdm, cdm_table))
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
            f"""INSERT INTO meta.quarantine SELECT 'patients', $file, {c.line("death")},
                   'person_id', 'unknown_patient', {c.id("death", "person_id")}
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
            extra.append(
                f"SELECT '{name}' AS source_file, {c.line(t)} AS source_line FROM omop_{t} t"
            )
    accounting.check(con, records, " UNION ALL ".join(extra))
    return digests


def _observation_periods(con: duckdb.DuckDBPyConnection, c: _Columns, cdm: Cdm) -> None:
    """meta.observation_periods from observation_period: the study ends an episode's
    observation at the end of the period covering its index date (int_follow_up.sql).
    A period with a missing or unparseable date or an end before its start is quarantined
    (table `observation_periods`) with its line, like any record (a CSV date that does not
    parse already was, when read). Periods of persons absent from `person` are kept (GiBleed
    has them): no episode joins them."""
    if not cdm.has("observation_period"):
        return
    t = "observation_period"
    start, start_bad = c.date(t, "observation_period_start_date")
    end, end_bad = c.date(t, "observation_period_end_date")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE omop_periods AS
        SELECT {c.id(t, "person_id")} AS patient_id, {start} AS start_date,
               {end} AS end_date, {start_bad} AS start_bad, {end_bad} AS end_bad,
               {c.line(t)} AS source_line
        FROM omop_observation_period t"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE omop_periods AS SELECT *,
            CASE WHEN start_bad OR end_bad THEN 'unparseable_date'
                 WHEN patient_id IS NULL OR start_date IS NULL OR end_date IS NULL
                     THEN 'missing_value'
                 WHEN end_date < start_date THEN 'end_before_start' END AS problem,
            CASE WHEN start_bad THEN 'observation_period_start_date'
                 WHEN end_bad THEN 'observation_period_end_date'
                 WHEN patient_id IS NULL THEN 'person_id'
                 WHEN start_date IS NULL THEN 'observation_period_start_date'
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
        " coalesce(CAST(start_date AS VARCHAR), ''), coalesce(CAST(end_date AS VARCHAR), ''))"
        " FROM omop_periods WHERE problem IS NOT NULL",
        params,
    )
    con.execute("DROP TABLE temp.omop_periods")


def load(folder: Path, warehouse: Path, log: common.Log = print, **options: Any) -> IngestSummary:
    """Replace raw.* and the ingest meta tables with the OMOP CDM (one transaction)."""
    return common.load_replacing(folder, warehouse, land, load_tables, log, **options)
