"""Load a Synthea CSV export (any version 2.x-4.x) into the warehouse's `raw.<table>` tables.

Two phases, both in DuckDB SQL (no table ever passes through pandas or Python rows):

1. landing (schema `landing`, internal): every new or changed patients file is parsed once
   with `read_csv` and explicit column types into its own table `landing.patients__<id>`
   (raw.patients is rebuilt from them, since duplicates are judged across files); lines
   DuckDB cannot parse go to `landing.rejects`. Files whose path and sha256 are unchanged
   are not read again; vanished files are forgotten.
2. update (one transaction, so a failure leaves the previous raw/meta tables intact):
   raw.patients is rebuilt when its files changed; in every other raw table the rows of
   vanished or changed files leave, and new or changed files are parsed straight into raw
   (no landing copy): their rows get their line numbers, then the rows that fail a check
   (missing required value, unknown patient) move to the quarantine. Rows of unknown
   patients are also kept in `landing.<table>__held`, and when raw.patients changed,
   records of patients that left move to the quarantine (and held) while held records of
   patients that arrived enter raw. `meta.quarantine`, `meta.ingest_manifest` and
   `meta.source_tables` change with them.

So a growing export ingested run by run ends with the same tables as one ingest of the
final export, without rewriting the big tables at each run. See docs/ingest.md.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import re
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipelines import progress, resync, schema
from pipelines import warehouse as wh
from pipelines.errors import IngestError

# Bump when the way files are parsed into landing tables changes: every file is then re-read.
# 5: rows carry their line numbers from the parse (a fast path, or the line-by-line slow path
# of pipelines/resync.py), checked by the row accounting; and the files of the tables parsed
# into raw go through a staging table, with the duplicate_record and unit checks.
LANDING_FORMAT = "5"
# \Z, not $: `$` also matches before a final newline ("conditions.csv\n")
_FILE_NAME = re.compile(r"^(?P<stem>[A-Za-z_]+?)(?:-(?P<part>\d+))?\.csv(?P<gz>\.gz)?\Z", re.I)
# the canonical column types read as dates (the Spark engine parses them the same way)
DATE_TYPES = ("DATE", "TIMESTAMP")
# DuckDB reject error_type -> quarantine reason
_REJECT_REASONS = {
    "CAST": "unparseable_value",
    "MISSING COLUMNS": "wrong_field_count",
    "TOO MANY COLUMNS": "wrong_field_count",
    "INVALID ENCODING": "invalid_encoding",
    "UNQUOTED VALUE": "malformed_quotes",
    "LINE SIZE OVER MAXIMUM": "line_too_long",
}
# Beyond this many rejected lines in one file, line numbers of the good rows use an ASOF
# join (correct but about 6x slower than the CASE expression used below it).
_MAX_CASE_OFFSETS = 200

Log = Callable[[str], object]


# ---------------------------------------------------------------- discovery


@dataclass(frozen=True)
class SourceFile:
    """One CSV file of a canonical table in the export."""

    path: Path
    relative: str  # path relative to the export folder, POSIX style
    table: str
    part: int  # 0 for `name.csv`, n for `name-n.csv`
    compressed: bool
    header: tuple[str, ...]
    positions: tuple[int | None, ...]  # header position of each canonical column, or None


@dataclass
class Export:
    """What an export folder holds, before anything is loaded."""

    files: list[SourceFile]
    ignored: list[str]
    empty_optional: dict[str, list[str]]  # table -> 0-byte files treated as absent
    notes: list[str] = field(default_factory=list)

    def tables_present(self) -> set[str]:
        return {f.table for f in self.files}


def discover_export(source: Path) -> Export:
    """Classify the export's files and check every canonical file's header.

    Raises IngestError for a missing or empty required file, a missing required column and
    a symbolic link that leads out of the export folder, before anything is written."""
    source = Path(source)
    if not source.is_dir():
        raise IngestError(f"export folder not found: {display_name(str(source))}")
    files, ignored, empty = [], [], {}
    for path in sorted(source.iterdir()):
        _refuse_link_out_of(source, path)
        match = _FILE_NAME.match(path.name) if path.is_file() else None
        table = match["stem"].lower() if match else None
        if table not in schema.TABLES:
            ignored.append(display_name(path.name) + ("/" if path.is_dir() else ""))
            continue
        header = read_header(path)
        if not header:
            if schema.TABLES[table].required:
                raise IngestError(f"{path.name}: file is empty; {table} is a required table")
            empty.setdefault(table, []).append(path.name)
            continue
        part, compressed = int(match["part"] or 0), bool(match["gz"])
        positions = map_header(table, header, path.name)
        files.append(SourceFile(path, path.name, table, part, compressed, header, positions))
    missing = [t for t in schema.REQUIRED_TABLES if t not in {f.table for f in files}]
    if missing:
        found = ", ".join(display_name(p.name) for p in sorted(source.iterdir()))
        raise IngestError(
            f"{display_name(str(source))}: required file(s) missing:"
            f" {', '.join(t + '.csv' for t in missing)} (found: {found or 'nothing'})"
        )
    files.sort(key=lambda f: (f.table, f.part, f.relative))
    _check_no_duplicate_parts(files)
    notes = [
        f"{name}: empty file, {table} treated as absent unless another part has rows"
        for table, names in empty.items()
        for name in names
    ]
    return Export(files, ignored, empty, notes)


def display_name(name: str) -> str:
    """A file name or path as it may appear in a log line or message: as is when every
    character is printable, else Python's repr (escaped, in quotes), so that a name holding a
    newline or a terminal control sequence cannot fake a log line."""
    return name if name.isprintable() else repr(name)


def _refuse_link_out_of(source: Path, path: Path) -> None:
    """A symbolic link (to a file or a folder) whose target lies outside the export folder
    is refused: an export is one folder, and following the link would load (or list) files
    the user did not hand over."""
    if not path.is_symlink():
        return
    target = path.resolve()
    if not target.is_relative_to(source.resolve()):
        raise IngestError(
            f"{display_name(path.name)}: symbolic link to a path outside the export folder;"
            " copy the file into the export instead"
        )


def _check_no_duplicate_parts(files: list[SourceFile]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for f in files:
        other = seen.setdefault((f.table, f.part), f.relative)
        if other != f.relative:
            raise IngestError(
                f"{other} and {f.relative} hold the same part of {f.table}; keep only one of them"
            )


def read_header(path: Path) -> tuple[str, ...]:
    """Column names on the first line of a CSV or CSV.GZ file (empty for an empty file)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            first = handle.readline(1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"{path.name}: cannot be read: {exc}") from exc
    text = first.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if not text.strip():
        return ()
    try:  # a binary file (NUL bytes) makes the csv module raise, not return garbage
        return tuple(name.strip() for name in next(csv.reader([text])))
    except csv.Error as exc:
        raise IngestError(f"{path.name}: first line is not a CSV header ({exc})") from exc


def map_header(table: str, header: tuple[str, ...], file_name: str) -> tuple[int | None, ...]:
    """Header position of each canonical column (case-insensitive, first alias that matches)."""
    lowered = [name.lower() for name in header]
    known = {s.lower() for column in schema.TABLES[table].columns for s in column.sources}
    if not known & set(lowered):
        # no header line (data on line 1) or not a Synthea file: do not echo the line's values
        raise IngestError(
            f"{file_name}: unknown header: none of its {len(header)} fields is a Synthea"
            f" column of {table} (expected e.g. {', '.join(_example_header(table))}); is the"
            " header line missing, or is this not a Synthea CSV export?"
        )
    positions = []
    for column in schema.TABLES[table].columns:
        found = [lowered.index(s.lower()) for s in column.sources if s.lower() in lowered]
        if not found and column.required:
            raise IngestError(
                f"{file_name}: required column {column.name} missing (expected a header named "
                f"{' or '.join(column.sources)}; found: {', '.join(header)})"
            )
        positions.append(found[0] if found else None)
    return tuple(positions)


def _example_header(table: str) -> list[str]:
    return [c.sources[0] for c in schema.TABLES[table].columns if c.required]


def fingerprint(source_file: SourceFile) -> str:
    """Identifies how a file is parsed: a change of schema.py or of the parser re-reads it
    (for observations, also a change of the unit rules: units.csv or the value sets)."""
    rules = _unit_rules_digest() if source_file.table == "observations" else ""
    text = repr((LANDING_FORMAT, schema.TABLES[source_file.table], source_file.positions, rules))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- file digests


@dataclass(frozen=True)
class Digest:
    size_bytes: int
    sha256: str
    newlines: int | None  # None for gzip files (counted only when the file is loaded)
    ends_with_newline: bool | None
    # a bare CR (not before \n), CRLF mixed with LF line ends, or a NUL byte: DuckDB's parser
    # stops at the first two (the whole file would fail) and lets the third through, so such
    # a file takes the slow path
    stray_bytes: bool | None = None


@dataclass
class _ByteScan:
    """Newlines (LF and CRLF), bare carriage returns and NUL bytes of a byte stream, chunk by
    chunk."""

    newlines: int = 0
    crlf: int = 0
    bare_cr: int = 0
    nul: int = 0
    last: bytes = b""

    def update(self, chunk: bytes) -> None:
        self.newlines += chunk.count(b"\n")
        self.nul += chunk.count(b"\0")
        cr = chunk.count(b"\r")  # a fast one-byte count; the slower CRLF count only if needed
        crlf = chunk.count(b"\r\n") if cr else 0
        self.crlf += crlf
        self.bare_cr += cr - crlf
        if self.last == b"\r" and chunk[:1] == b"\n":  # a CRLF split across two chunks
            self.crlf += 1
            self.bare_cr -= 1
        self.last = chunk[-1:]

    @property
    def stray_bytes(self) -> bool:
        # DuckDB takes the line end of the first lines for the whole file
        mixed_line_ends = 0 < self.crlf < self.newlines
        return bool(self.bare_cr or self.nul or mixed_line_ends)


def file_digest(path: Path) -> Digest:
    """sha256 of the file's bytes; for plain CSV also its line statistics, in the same pass."""
    sha, scan = hashlib.sha256(), _ByteScan()
    plain = not path.name.lower().endswith(".gz")
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            sha.update(chunk)
            if plain:
                scan.update(chunk)
    if not plain:
        return Digest(path.stat().st_size, sha.hexdigest(), None, None)
    size = path.stat().st_size
    return Digest(size, sha.hexdigest(), scan.newlines, scan.last == b"\n", scan.stray_bytes)


def _text_line_stats(path: Path) -> _ByteScan:
    """Line statistics of the decompressed text of a gzip file."""
    scan = _ByteScan()
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            scan.update(chunk)
    return scan


def digest_files(files: list[SourceFile]) -> dict[str, Digest]:
    """Digests of all files, a few at a time (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = pool.map(file_digest, [f.path for f in files])
        return {f.relative: d for f, d in zip(files, digests, strict=True)}


# ---------------------------------------------------------------- warehouse tables

# The ingest meta tables every source layout writes (pipelines/sources/common.py too).
OBSERVATION_PERIODS_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.observation_periods (patient_id VARCHAR, start_date DATE,"
    " end_date DATE, source_file VARCHAR, source_line BIGINT)"
)
META_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.ingest_manifest (table_name VARCHAR, file_path VARCHAR,"
    " size_bytes BIGINT, sha256 VARCHAR, row_count BIGINT, rows_quarantined BIGINT,"
    " loaded_at TIMESTAMP)",
    "CREATE TABLE IF NOT EXISTS meta.quarantine (table_name VARCHAR, source_file VARCHAR,"
    " source_line BIGINT, column_name VARCHAR, reason VARCHAR, raw_line VARCHAR)",
    "CREATE TABLE IF NOT EXISTS meta.source_tables (table_name VARCHAR, is_required BOOLEAN,"
    " is_present BOOLEAN, n_files INTEGER, n_rows BIGINT, note VARCHAR)",
    # OMOP's observation_period (pipelines/sources/omop.py); empty for Synthea CSV and FHIR,
    # whose observation ends at the last encounter (PROTOCOL 3)
    OBSERVATION_PERIODS_DDL,
)
_LANDING_DDL = (
    "CREATE SCHEMA IF NOT EXISTS landing",
    "CREATE TABLE IF NOT EXISTS landing.files (file_path VARCHAR, table_name VARCHAR,"
    " part INTEGER, size_bytes BIGINT, sha256 VARCHAR, fingerprint VARCHAR,"
    " landing_table VARCHAR, rows_parsed BIGINT, lines_rejected BIGINT,"
    " physical_lines BIGINT, line_numbers_exact BOOLEAN, loaded_at TIMESTAMP)",
    # the rest of the row accounting (docs/reliability.md); added to older warehouses
    "ALTER TABLE landing.files ADD COLUMN IF NOT EXISTS blank_lines BIGINT",
    "ALTER TABLE landing.files ADD COLUMN IF NOT EXISTS continuation_lines BIGINT",
    "CREATE TABLE IF NOT EXISTS landing.rejects (table_name VARCHAR, file_path VARCHAR,"
    " line BIGINT, extra_lines BIGINT, column_name VARCHAR, reason VARCHAR, raw_line VARCHAR)",
)


def _ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in (*_LANDING_DDL, *META_DDL):
        con.execute(statement)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _landing_table(relative: str) -> str:
    stem = _FILE_NAME.match(relative)["stem"].lower()
    return f"{stem}__{hashlib.sha256(relative.encode()).hexdigest()[:12]}"


@dataclass
class _Transaction:
    """BEGIN ... COMMIT, or ROLLBACK on any exception."""

    con: duckdb.DuckDBPyConnection

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.con.execute("BEGIN TRANSACTION")
        return self.con

    def __exit__(self, exc_type, exc, tb) -> None:
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")


# ---------------------------------------------------------------- phase 1: landing


def _read_csv_sql(f: SourceFile, *, numbered: bool = False) -> str:
    """SELECT of the canonical columns from the file, typed explicitly (no sniffing). With
    `numbered`, the file is a clean copy written by the slow path (pipelines/resync.py)
    whose first column is each record's line number in the original file."""
    columns = schema.TABLES[f.table].columns
    types = ["VARCHAR"] * len(f.header)
    for column, pos in zip(columns, f.positions, strict=True):
        if pos is not None:
            types[pos] = column.type
    shift = int(numbered)
    types = ["BIGINT"] * shift + types
    struct = ", ".join(f"'c{i}': '{t}'" for i, t in enumerate(types))
    select = ", ".join(
        f"c{pos + shift} AS {c.name}" if pos is not None else f"CAST(NULL AS {c.type}) AS {c.name}"
        for c, pos in zip(columns, f.positions, strict=True)
    )
    line = ", c0 AS source_line" if numbered else ""
    # DuckDB 2.0's parallel reader loses lines (neither rows nor rejects) when a file holds
    # very many rejected lines (measured: 28,000 of 125,000 unparseable dates). The fast
    # path's accounting then fails and the slow path reads its clean copy on one thread,
    # which keeps every line.
    parallel = ", parallel = false" if numbered else ""
    return (
        f"SELECT {select}, $relative AS source_file{line} FROM read_csv($path, header = true,"
        " auto_detect = false, delim = ',', quote = '\"', escape = '\"', encoding = 'utf-8',"
        f" columns = {{{struct}}}{parallel}, store_rejects = true,"
        " rejects_table = 'ingest_reject_errors', rejects_scan = 'ingest_reject_scans')"
    )


def _rejects_sql(f: SourceFile, *, numbered: bool = False) -> str:
    """SELECT of the file's rejected lines (one row per line and problem) for landing.rejects,
    inserted by _insert_rows (never an empty INSERT). With `numbered` (the slow path's clean
    copy), a record's line is its first field."""
    columns = schema.TABLES[f.table].columns
    shift = int(numbered)
    mapped = [
        (c, pos + shift) for c, pos in zip(columns, f.positions, strict=True) if pos is not None
    ]
    name = " ".join(f"WHEN 'c{pos}' THEN '{c.name}'" for c, pos in mapped)
    dates = ", ".join(f"'c{pos}'" for c, pos in mapped if c.type in DATE_TYPES) or "NULL"
    reasons = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in _REJECT_REASONS.items())
    line = "TRY_CAST(split_part(csv_line, ',', 1) AS BIGINT)" if numbered else "line"
    text = "substr(text, strpos(text, ',') + 1)" if numbered else "text"
    return f"""
        WITH errors AS (
            SELECT {line} AS line, error_type::VARCHAR AS error_type, column_name AS read_column,
                   trim(csv_line, chr(13) || chr(10)) AS text
            FROM temp.ingest_reject_errors
        ), classified AS (
            SELECT line,
                   length(text) - length(replace(text, chr(10), '')) AS extra_lines,
                   CASE WHEN error_type IN ('MISSING COLUMNS', 'TOO MANY COLUMNS') THEN NULL
                        ELSE CASE read_column {name} END END AS column_name,
                   CASE WHEN error_type = 'CAST' AND read_column IN ({dates}) THEN 'unparseable_date'
                        ELSE coalesce(CASE error_type {reasons} END, 'malformed_csv') END AS reason,
                   {text} AS text
            FROM errors
        )
        SELECT DISTINCT $table, $relative, line, extra_lines, column_name,
               CASE WHEN NOT $ends_with_newline AND line + extra_lines = $last_line
                    THEN 'truncated_last_line' ELSE reason END,
               text
        FROM classified"""


@dataclass
class _Parsed:
    """One file parsed into a table: the counts its row accounting needs."""

    rows: int  # rows parsed into the table
    bad: int  # lines in landing.rejects
    physical_lines: int  # from the byte scan, header included
    blank_lines: int = 0  # slow path only (the fast path leaves a file with blanks to it)
    extra_lines: int = 0  # continuation lines of records spanning lines (slow path only)
    resynced: bool = False  # parsed by the slow path

    def message(self, relative: str, started: float) -> str:
        how = ", re-read line by line" if self.resynced else ""
        counts = f"{self.rows} rows parsed, {self.bad} lines rejected"
        return f"{relative}: {counts} ({_seconds(started)}{how})"


def _parse_into(
    con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest, target: str
) -> _Parsed:
    """Parse the file's records into `target` (a table with the raw columns) with their line
    numbers, and its bad lines into landing.rejects.

    Fast path: one typed DuckDB read_csv of the whole file. It is kept only when its rows
    and rejected lines account for every physical line of the byte scan, one line each;
    otherwise (a stray quote swallowed lines, blank lines, records spanning lines) it is
    undone and the slow path (pipelines/resync.py) re-reads the file line by line, as it
    does straight away when the byte scan saw a bare CR, a NUL byte or mixed line ends."""
    newlines, ends_with_newline, stray_bytes = _line_stats(f, digest)
    physical_lines = newlines + (0 if ends_with_newline else 1)
    con.execute("DELETE FROM landing.rejects WHERE file_path = ?", [f.relative])
    if stray_bytes or not _fast_parse(con, f, target, physical_lines, ends_with_newline):
        split = _slow_parse(con, f, target)
        parsed = _Parsed(0, 0, physical_lines, split.blank_lines, split.extra_lines, True)
    else:
        parsed = _Parsed(0, 0, physical_lines)
        if not ends_with_newline:
            rows_from = f"FROM {target} WHERE source_line IS NULL"
            _quarantine_last_line(con, f, physical_lines, rows_from, target)
        _number_lines(con, f, target)
    parsed.rows = con.execute(
        f"SELECT count(*) FROM {target} WHERE source_file = ?", [f.relative]
    ).fetchone()[0]
    parsed.bad = con.execute(
        "SELECT count(DISTINCT line) FROM landing.rejects WHERE file_path = ?", [f.relative]
    ).fetchone()[0]
    return parsed


def _fast_parse(
    con: duckdb.DuckDBPyConnection,
    f: SourceFile,
    target: str,
    physical_lines: int,
    ends_with_newline: bool,
) -> bool:
    """The whole file by one read_csv into `target` (rows without a line number yet) and its
    rejects into landing.rejects. False, with both undone, when the rows and rejected lines do
    not account for the physical lines one for one."""
    _drop_reject_tables(con)
    try:
        con.execute(
            f"{_create_or_replace(target)} AS SELECT *, CAST(NULL AS BIGINT) AS source_line"
            f" FROM ({_read_csv_sql(f)})",
            _params(f, path=True),
        )
        _insert_rows(
            con,
            "landing.rejects",
            _rejects_sql(f),
            _params(f, table=True, ends_with_newline=ends_with_newline, last_line=physical_lines),
        )
    except duckdb.Error as exc:
        raise IngestError(f"{f.relative}: cannot be read: {_first_line(exc)}") from exc
    rows = con.execute(f"SELECT count(*) FROM {target} WHERE source_line IS NULL").fetchone()[0]
    rejected, spanning = con.execute(
        "SELECT count(DISTINCT line), count(*) FILTER (extra_lines > 0) FROM landing.rejects"
        " WHERE file_path = ?",
        [f.relative],
    ).fetchone()
    if not spanning and 1 + rows + rejected == physical_lines:
        return True
    # undone: the slow path replaces `target`; the rejects are deleted (no INSERT follows
    # here that could be empty: see _insert_rows)
    con.execute("DELETE FROM landing.rejects WHERE file_path = ?", [f.relative])
    return False


def _slow_parse(con: duckdb.DuckDBPyConnection, f: SourceFile, target: str) -> resync.Split:
    """The file split into records by pipelines/resync.py; its clean copy parsed by the same
    typed read_csv into `target` (line numbers included); its bad lines into landing.rejects."""
    with tempfile.TemporaryDirectory(prefix="redflags-resync-", dir=_spill_folder(con)) as tmp:
        clean = Path(tmp) / "clean.csv"
        try:
            split = resync.split_file(f.path, len(f.header), clean)
        except (OSError, EOFError, zlib.error) as exc:
            raise IngestError(f"{f.relative}: cannot be read: {_first_line(exc)}") from exc
        _drop_reject_tables(con)
        try:
            con.execute(
                f"{_create_or_replace(target)} AS {_read_csv_sql(f, numbered=True)}",
                {"relative": f.relative, "path": str(clean)},
            )
            _insert_rows(
                con,
                "landing.rejects",
                _rejects_sql(f, numbered=True),
                _params(f, table=True, ends_with_newline=True, last_line=0),
            )
        except duckdb.Error as exc:
            raise IngestError(f"{f.relative}: cannot be read: {_first_line(exc)}") from exc
    if split.bad:
        con.execute(
            "INSERT INTO landing.rejects SELECT $table, $relative, b.line, b.extra_lines, NULL,"
            " b.reason, b.text FROM (SELECT unnest($bad) AS b)",
            _params(f, table=True, bad=[vars(b) for b in split.bad]),
        )
    return split


def _create_or_replace(target: str) -> str:
    """CREATE ... TABLE statement head for the parse's `target`: created from the parse's
    SELECT, never filled by an INSERT (which could be empty: see _insert_rows)."""
    if target.startswith("temp."):
        return f"CREATE OR REPLACE TEMP TABLE {target.removeprefix('temp.')}"
    return f"CREATE OR REPLACE TABLE {target}"


def _first_line(exc: Exception) -> str:
    """DuckDB's messages run over many lines (hints, the reader's options); a user-facing
    error is one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _spill_folder(con: duckdb.DuckDBPyConnection) -> str | None:
    """The warehouse's spill folder (`<warehouse>.tmp/`, on the disk with room for the
    warehouse) for the slow path's clean copy; None (the system's) when there is none."""
    folder = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    if not folder:
        return None
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


def _drop_reject_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS temp.ingest_reject_errors")
    con.execute("DROP TABLE IF EXISTS temp.ingest_reject_scans")


def _check_accounting(
    con: duckdb.DuckDBPyConnection, f: SourceFile, parsed: _Parsed, rows: str, bad_lines: str
) -> None:
    """Every physical data line is counted exactly once: rows loaded (`rows`, the table holding
    the file's rows) + lines quarantined (`bad_lines`, a SELECT of distinct `line`s) + blank
    lines + continuation lines of records spanning lines = lines after the header, as counted
    by the byte scan (not by the parser); no line is counted twice or lies outside the file.
    Otherwise IngestError, and the caller's transaction rolls back."""
    last_line = max(parsed.physical_lines, 2)
    # distinct lines by a bitmap over the file's line range (bitstring_agg): about 15x
    # cheaper than count(DISTINCT) on a big file
    loaded, bad, outside, twice = con.execute(
        f"""WITH loaded AS (SELECT source_line AS line FROM {rows} WHERE source_file = $file),
                 bad AS ({bad_lines}),
                 every_line AS (SELECT line FROM loaded UNION ALL SELECT line FROM bad),
                 inside AS (SELECT line FROM every_line WHERE line BETWEEN 2 AND {int(last_line)})
            SELECT (SELECT count(*) FROM loaded), (SELECT count(*) FROM bad),
                   (SELECT count(*) FROM every_line) - (SELECT count(*) FROM inside),
                   (SELECT count(*) FROM inside)
                   - coalesce((SELECT bit_count(bitstring_agg(line, 2, {int(last_line)}))
                               FROM inside), 0)""",
        {"file": f.relative, **({"table": f.table} if "$table" in bad_lines else {})},
    ).fetchone()
    data_lines = parsed.physical_lines - 1
    counted = loaded + bad + parsed.blank_lines + parsed.extra_lines
    if counted == data_lines and not twice and not outside:
        return
    raise IngestError(
        f"{f.relative}: rows do not add up for lines 2-{parsed.physical_lines}:"
        f" {data_lines} data lines, but {loaded} rows loaded + {bad} lines quarantined"
        f" + {parsed.blank_lines} blank + {parsed.extra_lines} continuation lines"
        f" ({twice} lines counted twice, {outside} outside the file); nothing was changed"
    )


# The file's quarantined lines, for _check_accounting (parameters $file, $table)
_REJECTED_LINES = "SELECT DISTINCT line FROM landing.rejects WHERE file_path = $file"
_QUARANTINED_LINES = (
    "SELECT DISTINCT source_line AS line FROM meta.quarantine"
    " WHERE table_name = $table AND source_file = $file"
)


def load_file(con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest) -> _Parsed:
    """Parse one file into its landing table, in one transaction."""
    table = f"landing.{_quote(_landing_table(f.relative))}"
    try:
        with _Transaction(con):
            parsed = _parse_into(con, f, digest, table)
            _check_accounting(con, f, parsed, table, _REJECTED_LINES)
            _record_file(con, f, digest, parsed, _landing_table(f.relative))
    except duckdb.Error as exc:
        raise IngestError(f"{f.relative}: cannot be read: {_first_line(exc)}") from exc
    return parsed


def _record_file(
    con: duckdb.DuckDBPyConnection,
    f: SourceFile,
    digest: Digest,
    parsed: _Parsed,
    landing_table: str | None,
) -> None:
    """The file's row in landing.files (line numbers are exact once the accounting passed)."""
    con.execute("DELETE FROM landing.files WHERE file_path = ?", [f.relative])
    con.execute(
        "INSERT INTO landing.files (file_path, table_name, part, size_bytes, sha256, fingerprint,"
        " landing_table, rows_parsed, lines_rejected, physical_lines, line_numbers_exact,"
        " loaded_at, blank_lines, continuation_lines)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, true, ?, ?, ?)",
        [f.relative, f.table, f.part, digest.size_bytes, digest.sha256, fingerprint(f),
         landing_table, parsed.rows, parsed.bad, parsed.physical_lines, _utc_now(),
         parsed.blank_lines, parsed.extra_lines],
    )  # fmt: skip


def _quarantine_last_line(
    con: duckdb.DuckDBPyConnection, f: SourceFile, last_line: int, rows_from: str, table: str
) -> None:
    """A file that does not end with a newline was cut short (Synthea always ends its lines):
    its last line is quarantined as truncated_last_line even when it still parses, since a
    value in it may be cut (`Full-time employment (fi`): the file's last parsed row (the
    highest rowid `rows_from`) leaves `table`. Nothing to do when DuckDB already rejected
    that line, the file has no data row or the text after its last newline is blank."""
    rejected = con.execute(
        "SELECT count(*) FROM landing.rejects WHERE file_path = ? AND line + extra_lines = ?",
        [f.relative, last_line],
    ).fetchone()[0]
    last_rowid = con.execute(f"SELECT max(rowid) {rows_from}").fetchone()[0]
    if rejected or last_rowid is None or last_line < 2:
        return
    text = _last_line_text(f.path)
    if not text.strip():
        return
    con.execute(
        "INSERT INTO landing.rejects VALUES (?, ?, ?, 0, NULL, 'truncated_last_line', ?)",
        [f.table, f.relative, last_line, text],
    )
    con.execute(f"DELETE FROM {table} WHERE rowid = ?", [last_rowid])


def _last_line_text(path: Path) -> str:
    """The text after the last newline of a (possibly gzipped) file that does not end with one."""
    tail = b""
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                tail = (tail + chunk).rsplit(b"\n", 1)[-1]
    else:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - (1 << 21)))
            tail = handle.read().rsplit(b"\n", 1)[-1]
    return tail.decode("utf-8", errors="replace").rstrip("\r")


def _params(f: SourceFile, *, path: bool = False, table: bool = False, **extra) -> dict:
    params = {"relative": f.relative, **extra}
    if path:
        params["path"] = str(f.path)
    if table:
        params["table"] = f.table
    return params


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def drop_file(con: duckdb.DuckDBPyConnection, relative: str) -> None:
    """Forget a file that vanished from the export (its rows leave raw in phase 2)."""
    with _Transaction(con):
        con.execute(f"DROP TABLE IF EXISTS landing.{_quote(_landing_table(relative))}")
        con.execute("DELETE FROM landing.rejects WHERE file_path = ?", [relative])
        con.execute("DELETE FROM landing.files WHERE file_path = ?", [relative])


# Tables whose files phase 1 parses into landing tables; the others are parsed straight
# into raw in phase 2.
LANDED_TABLES = frozenset({"patients"})


@dataclass
class _LandingChanges:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    digests: dict[str, Digest] = field(default_factory=dict)


def sync_landing(con: duckdb.DuckDBPyConnection, export: Export, log: Log) -> _LandingChanges:
    """Parse new and changed files, forget vanished ones; unchanged files are not read again."""
    known = {
        path: (sha, fp)
        for path, sha, fp in con.execute(
            "SELECT file_path, sha256, fingerprint FROM landing.files"
        ).fetchall()
    }
    changes = _LandingChanges()
    digests = changes.digests = digest_files(export.files)
    landed = [f for f in export.files if f.table in LANDED_TABLES]
    total = sum(digests[f.relative].size_bytes for f in landed)
    with progress.track("ingest: landing files", total) as bar:
        for f in landed:  # the others are parsed in phase 2 if needed (update_table)
            digest = digests[f.relative]
            if known.get(f.relative) == (digest.sha256, fingerprint(f)):
                changes.skipped.append(f.relative)
                bar.advance(digest.size_bytes)
                continue
            started = time.perf_counter()
            parsed = load_file(con, f, digest)
            bar.advance(digest.size_bytes, parsed.rows)
            log(parsed.message(f.relative, started))
            changes.loaded.append(f.relative)
    for relative in sorted(set(known) - {f.relative for f in export.files}):
        drop_file(con, relative)
        log(f"{display_name(relative)}: no longer in the export; its rows are removed")
        changes.removed.append(relative)
    return changes


def _seconds(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"


# ---------------------------------------------------------------- phase 2: update raw


def _line_number_sql(offsets: list[tuple[int, int]]) -> str:
    """source_line of a parsed row from its landing rowid: rowid + 2 (header, 1-based) plus the
    lines rejected before it. `offsets` are (rows accepted before a rejected line, lines
    rejected up to and including it), in order."""
    if not offsets:
        return "l.rowid + 2"
    if len(offsets) > _MAX_CASE_OFFSETS:
        return "l.rowid + 2 + coalesce(o.lines_skipped, 0)"
    whens = " ".join(f"WHEN l.rowid >= {int(a)} THEN {int(n)}" for a, n in reversed(offsets))
    return f"l.rowid + 2 + CASE {whens} ELSE 0 END"


_OFFSETS_SQL = """
    WITH per_line AS (
        SELECT line, max(extra_lines) + 1 AS consumed FROM landing.rejects
        WHERE file_path = $file GROUP BY line
    ), running AS (
        SELECT line, consumed, sum(consumed) OVER (ORDER BY line) AS through FROM per_line
    )
    SELECT line - 2 - (through - consumed) AS accepted_before, max(through) AS lines_skipped
    FROM running GROUP BY ALL ORDER BY accepted_before"""


def _parsed_rows_sql(con: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> str:
    """UNION ALL of some landing tables of `table`, with source_line and file order (file_rank)."""
    ordered = con.execute(
        "SELECT file_path, landing_table FROM landing.files WHERE table_name = ?"
        " ORDER BY part, file_path",
        [table],
    ).fetchall()
    columns = ", ".join(f"l.{c.name}" for c in schema.TABLES[table].columns)
    return "\nUNION ALL\n".join(
        f"SELECT {columns}, l.source_file, l.source_line, {rank} AS file_rank"
        f" FROM landing.{_quote(landing_table)} l"
        for rank, (relative, landing_table) in enumerate(ordered)
        if relative in files
    )


def _problem_checks(table: str, *, staged: bool = False) -> list[tuple[str, str, str | None]]:
    """(condition, reason, column) in priority order; a row gets the first that holds.

    `staged`: the rows of one file being loaded (tables parsed straight into raw),
    where exact duplicate lines are known (temp.duplicate_lines) and observations are checked
    against the unit rules (temp.ingest_unit_rules). The unknown-patient check comes last, so
    that a held row has no other problem."""
    t = schema.TABLES[table]
    checks: list[tuple[str, str, str | None]] = []
    for c in t.columns:
        if c.required:
            blank = f" OR trim({c.name}) = ''" if c.type == "VARCHAR" else ""
            checks.append((f"{c.name} IS NULL{blank}", "missing_value", c.name))
    if table == "patients":
        # keep the first copy of a patient id (file order, then line); later copies are bad
        incomplete = " OR ".join(f"({cond})" for cond, _, _ in checks)
        duplicate = (
            f"row_number() OVER (PARTITION BY patient_id, ({incomplete})"
            " ORDER BY file_rank, source_line) > 1"
        )
        checks.append((duplicate, "duplicate_patient_id", "patient_id"))
        return checks
    if staged:
        duplicate = "source_line IN (SELECT source_line FROM temp.duplicate_lines)"
        checks.append((duplicate, "duplicate_record", None))
        if table == "observations":
            checks += _value_checks()
    column = t.patient_column
    checks.append(
        (f"{column} NOT IN (SELECT patient_id FROM raw.patients)", "unknown_patient", column)
    )
    return checks


# Observations whose code has unit rules (its concept is numeric in the study,
# pipelines/valuesets/units.csv) are read with their rule joined once (_checked_source):
# unit_ruled (the code has rules), unit_factor, unit_min, unit_max (NULL: unit not listed).
_RULE_CODE = "upper(replace(trim(l.code), '.', ''))"
_RULE_KEY = f"{_RULE_CODE} || chr(31) || lower(trim(coalesce(l.units, '')))"
_AS_NUMBER = "try_cast(trim(value) AS DOUBLE)"


def _value_checks() -> list[tuple[str, str, str]]:
    """Checks of the numeric study observations (weight, ALP): a VALUE that is not a finite
    number, a UNITS without a conversion, and a value outside the plausible range once
    converted (or too large for the DECIMAL(18, 4) the models read it as)."""
    converted = f"{_AS_NUMBER} * unit_factor"
    return [
        (
            f"unit_ruled AND ({_AS_NUMBER} IS NULL OR NOT isfinite({_AS_NUMBER}))",
            "unparseable_value",
            "value",
        ),
        ("unit_ruled AND unit_factor IS NULL", "unknown_unit", "units"),
        (
            "unit_ruled AND (try_cast(trim(value) AS DECIMAL(18, 4)) IS NULL"
            f" OR {converted} < unit_min OR {converted} > unit_max)",
            "implausible_value",
            "value",
        ),
    ]


def _checked_source(table: str, numbered: str) -> str:
    """What the checks of a staged file read: its numbered rows, for observations with their
    unit rule (see _value_checks)."""
    if table != "observations":
        return f"({numbered})"
    return f"""(SELECT l.*, c.rule_code IS NOT NULL AS unit_ruled, r.factor AS unit_factor,
               r.min_value AS unit_min, r.max_value AS unit_max
        FROM ({numbered}) l
        LEFT JOIN (SELECT DISTINCT rule_code FROM temp.ingest_unit_rules) c
            ON c.rule_code = {_RULE_CODE}
        LEFT JOIN temp.ingest_unit_rules r ON r.rule_key = {_RULE_KEY})"""


@functools.cache
def _unit_rules_digest() -> str:
    from pipelines.valuesets import unit_conversions

    return hashlib.sha256(repr(unit_conversions()).encode()).hexdigest()[:16]


def _create_unit_rules(con: duckdb.DuckDBPyConnection) -> None:
    """temp.ingest_unit_rules: one row per (observation code, accepted unit) of the study's
    numeric concepts, with the factor to the canonical unit and the plausible range."""
    from pipelines.valuesets import unit_conversions  # the value sets, read when needed

    con.execute(
        "CREATE OR REPLACE TEMP TABLE ingest_unit_rules (rule_code VARCHAR, rule_key VARCHAR,"
        " factor DOUBLE, min_value DOUBLE, max_value DOUBLE)"
    )
    con.executemany(
        "INSERT INTO temp.ingest_unit_rules VALUES (?, ? || chr(31) || ?, ?, ?, ?)",
        [[r.code, r.code, r.unit, r.factor, r.min_value, r.max_value] for r in unit_conversions()],
    )


def _case(checks: list[tuple[str, str, str | None]], part: int) -> str:
    """CASE expression giving the reason (part 1) or column (part 2) of the first check that
    holds, NULL when none does."""
    whens = " ".join(
        f"WHEN {check[0]} THEN {'NULL' if check[part] is None else repr(check[part])}"
        for check in checks
    )
    return f"CASE {whens} END"


def _checked_rows_sql(con: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> str:
    """The parsed rows of `files` with the first problem each has (NULL when none)."""
    checks = _problem_checks(table)
    return (
        f"WITH parsed AS ({_parsed_rows_sql(con, table, files)})\n"
        f"SELECT *, {_case(checks, 1)} AS problem, {_case(checks, 2)} AS problem_column"
        " FROM parsed"
    )


def _as_text(table: str) -> str:
    """raw_line of a row that parsed but failed a check: its loaded fields, comma-separated
    (the original line's other columns are never loaded)."""
    columns = [c.name for c in schema.TABLES[table].columns]
    return " || ',' || ".join(f"coalesce(CAST({c} AS VARCHAR), '')" for c in columns)


@dataclass
class TableChanges:
    """What raw.<table> must give up and take in to match its landing tables."""

    stale: list[str]  # files whose rows leave raw (vanished, or changed since raw was built)
    fresh: list[str]  # files whose rows enter raw (new, or changed)
    recreate: bool  # raw table missing or of an older shape: rebuilt from every file
    # for tables parsed straight into raw: each fresh file and its digest
    sources: dict[str, tuple[SourceFile, Digest]] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)  # files parsed (filled by update_table)
    messages: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.stale or self.fresh or self.recreate)


def plan_changes(
    con: duckdb.DuckDBPyConnection,
    export: Export | None = None,
    digests: dict[str, Digest] | None = None,
) -> dict[str, TableChanges]:
    """Compare the landing files (patients) or the export's files (the other tables) with the
    manifest raw was built from, table by table."""
    state = "SELECT table_name, file_path, sha256, loaded_at FROM {}"
    landing = {(t, p): v for t, p, *v in con.execute(state.format("landing.files")).fetchall()}
    built = {(t, p): v for t, p, *v in con.execute(state.format("meta.ingest_manifest")).fetchall()}
    plan = {}
    for table in schema.TABLES:
        if table not in LANDED_TABLES:
            if export is not None:
                plan[table] = _plan_direct(con, table, export, digests or {}, built)
            continue
        recreate = not _raw_table_is_current(con, table)
        stale = [
            p
            for (t, p), v in built.items()
            if t == table and (recreate or landing.get((t, p)) != v)
        ]
        fresh = [
            p
            for (t, p), v in landing.items()
            if t == table and (recreate or built.get((t, p)) != v)
        ]
        plan[table] = TableChanges(sorted(stale), sorted(fresh), recreate)
    return plan


def _plan_direct(
    con: duckdb.DuckDBPyConnection,
    table: str,
    export: Export,
    digests: dict[str, Digest],
    built: dict[tuple[str, str], list],
) -> TableChanges:
    """Files of a table parsed straight into raw: a file is fresh unless raw was built from
    exactly it (same sha256, parser fingerprint and load as landing.files records)."""
    recreate = not _raw_table_is_current(con, table)
    known = {
        p: (sha, fp, loaded)
        for p, sha, fp, loaded in con.execute(
            "SELECT file_path, sha256, fingerprint, loaded_at FROM landing.files"
            " WHERE table_name = ?",
            [table],
        ).fetchall()
    }
    files = [f for f in export.files if f.table == table]
    fresh = []
    for f in files:
        sha, fp, loaded = known.get(f.relative, (None, None, None))
        current = (
            not recreate
            and (sha, fp) == (digests[f.relative].sha256, fingerprint(f))
            and built.get((table, f.relative)) == [sha, loaded]
        )
        if not current:
            fresh.append(f.relative)
    stale = [
        p
        for (t, p) in built
        if t == table and (recreate or p in fresh or p not in {f.relative for f in files})
    ]
    sources = {f.relative: (f, digests[f.relative]) for f in files if f.relative in fresh}
    return TableChanges(sorted(stale), fresh, recreate, sources)


def _raw_table_is_current(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    expected = [(c.name, c.type) for c in (*schema.TABLES[table].columns, *schema.LINEAGE_COLUMNS)]
    actual = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'raw' AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return actual == expected


def update_patients(con: duckdb.DuckDBPyConnection, changes: TableChanges) -> bool:
    """Rebuild raw.patients from all its files (duplicates are judged across files); keep the
    patient ids that arrived (temp.patients_added) and left (temp.patients_removed)."""
    if not changes:
        return False
    con.execute("CREATE OR REPLACE TEMP TABLE patients_before (patient_id VARCHAR)")
    if _has_patient_ids(con):
        con.execute("INSERT INTO patients_before SELECT patient_id FROM raw.patients")
    everything = TableChanges(changes.stale, _landing_files(con, "patients"), recreate=True)
    _apply_file_changes(con, "patients", everything)
    for name, left, right in (
        ("added", "raw.patients", "patients_before"),
        ("removed", "patients_before", "raw.patients"),
    ):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE patients_{name} AS"
            f" SELECT patient_id FROM {left} EXCEPT SELECT patient_id FROM {right}"
        )
    _write_manifest(con, "patients")
    return True


def _patient_ids_changed(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT (SELECT count(*) FROM patients_added) + (SELECT count(*) FROM patients_removed)"
        ).fetchone()[0]
    )


def _has_patient_ids(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'raw'"
            " AND table_name = 'patients' AND column_name = 'patient_id'"
        ).fetchone()[0]
    )


def _landing_files(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT file_path FROM landing.files WHERE table_name = ? ORDER BY part, file_path",
            [table],
        ).fetchall()
    ]


def update_table(
    con: duckdb.DuckDBPyConnection, table: str, changes: TableChanges, patient_ids_changed: bool
) -> bool:
    """Bring raw.<table> and its quarantine rows up to date: rows of stale files leave, rows of
    fresh files enter, and if raw.patients changed, records of patients that left move to the
    quarantine while records waiting for patients that arrived enter raw."""
    if not (changes or patient_ids_changed):
        return False
    if table not in LANDED_TABLES:
        _update_direct_table(con, table, changes, patient_ids_changed)
        _write_manifest(con, table)
        return True
    _apply_file_changes(con, table, changes)
    if patient_ids_changed and not changes.recreate:
        kept = [f for f in _landing_files(con, table) if f not in changes.fresh]
        _recheck_patients(con, table, kept)
    _write_manifest(con, table)
    return True


# ---------------------------------------------------------------- phase 2: files straight into raw


def _held_table(table: str) -> str:
    """Rows of `table` that parsed and passed every check but the patient's: they wait here
    (and in the quarantine) for their patient to arrive."""
    return f"landing.{_quote(table + '__held')}"


def _update_direct_table(
    con: duckdb.DuckDBPyConnection, table: str, changes: TableChanges, patient_ids_changed: bool
) -> None:
    held = _held_table(table)
    if changes.recreate:
        con.execute(f"DROP TABLE IF EXISTS raw.{table}")
        con.execute(schema.create_table_sql(table))
        con.execute(f"DROP TABLE IF EXISTS {held}")
        con.execute("DELETE FROM meta.quarantine WHERE table_name = ?", [table])
    elif changes.stale:
        stale = {"files": changes.stale}
        for target in (f"raw.{table}", held):
            if target == held and not _held_exists(con, table):
                continue
            con.execute(f"DELETE FROM {target} WHERE source_file IN (SELECT unnest($files))", stale)
        con.execute(
            "DELETE FROM meta.quarantine WHERE table_name = $table"
            " AND source_file IN (SELECT unnest($files))",
            {"table": table, **stale},
        )
    if not _held_exists(con, table):
        con.execute(schema.create_table_sql(table, held))
    if patient_ids_changed and not changes.recreate:
        _recheck_held(con, table)  # before the fresh files: raw and held hold kept files only
    if changes.fresh and table == "observations":
        _create_unit_rules(con)
    total = sum(changes.sources[r][1].size_bytes for r in changes.fresh)
    with progress.track(f"ingest: {table}", total) as bar:
        for relative in changes.fresh:
            f, digest = changes.sources[relative]
            started = time.perf_counter()
            parsed = _load_into_raw(con, f, digest)
            bar.advance(digest.size_bytes, parsed.rows)
            changes.loaded.append(f.relative)
            changes.messages.append(parsed.message(f.relative, started))


def _held_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return wh.table_exists(con, "landing", table + "__held")


def _insert_rows(
    con: duckdb.DuckDBPyConnection, target: str, select: str, params: dict | list | None = None
) -> int:
    """INSERT INTO `target` the rows of `select`, unless there are none; returns their number.

    Never an empty INSERT ... SELECT inside the update transaction: in DuckDB 2.0, once rows
    of a table were deleted in a transaction, an INSERT ... SELECT that inserts nothing makes
    every later large INSERT into that table (measured: 120,000 rows hidden, 110,000 not;
    close to one row group of 122,880, which DuckDB writes to disk ahead of COMMIT)
    invisible for the rest of the transaction; the rows reappear at COMMIT. The ingest's
    checks then saw none of a big file's rows (issue 11, item 2; the DuckDB behaviour is
    pinned by tests/faults/test_incremental_and_units.py). Measured too: an empty INSERT
    whose SELECT is DISTINCT (as the parse's rejects) did not trigger it; guarded all the
    same, since that is an accident of DuckDB's plan."""
    n = con.execute(f"SELECT count(*) FROM ({select})", params).fetchone()[0]
    if n:
        con.execute(f"INSERT INTO {target} {select}", params)
    return n


def _recheck_held(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Records of patients that left move from raw to the quarantine and held; held records
    of patients that arrived enter raw."""
    patient = schema.TABLES[table].patient_column
    held = _held_table(table)
    if con.execute("SELECT count(*) FROM patients_removed").fetchone()[0]:
        orphans = f"FROM raw.{table} WHERE {patient} IN (SELECT patient_id FROM patients_removed)"
        _insert_rows(
            con,
            "meta.quarantine",
            f"SELECT $table, source_file, source_line, '{patient}', 'unknown_patient',"
            f" {_as_text(table)} {orphans}",
            {"table": table},
        )
        _insert_rows(con, held, f"SELECT * {orphans}")
        con.execute(f"DELETE {orphans}")
    if con.execute("SELECT count(*) FROM patients_added").fetchone()[0]:
        arrived = f"FROM {held} WHERE {patient} IN (SELECT patient_id FROM patients_added)"
        con.execute(f"CREATE OR REPLACE TEMP TABLE revived AS SELECT * {arrived}")
        if not _insert_rows(con, f"raw.{table}", "SELECT * FROM revived"):
            return
        con.execute(f"DELETE {arrived}")
        con.execute(
            "DELETE FROM meta.quarantine q USING revived r WHERE q.table_name = $table"
            " AND q.reason = 'unknown_patient' AND q.source_file = r.source_file"
            " AND q.source_line = r.source_line",
            {"table": table},
        )


# The staging table of one file parsed into raw (created by the parse, dropped once its rows
# moved): it lives in memory and outside raw, so the checks never read raw back.
_STAGE = "temp.ingest_stage"


def _load_into_raw(con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest) -> _Parsed:
    """Parse one file into raw.<table> (inside the update transaction) through a staging
    table: the file is parsed (fast or slow path, _parse_into) into temp.ingest_stage with
    its line numbers; its rows are checked there set-wise, then move in bulk: good rows into
    raw, failed rows into the quarantine (rows of unknown patients also into held). raw is
    never read back by rowid to find the new rows (see _insert_rows for why). Last, the row
    accounting of the file is checked against raw and the quarantine."""
    con.execute(f"DROP TABLE IF EXISTS landing.{_quote(_landing_table(f.relative))}")  # old format
    parsed = _parse_into(con, f, digest, _STAGE)
    _quarantine_new_rows(con, f, f"SELECT * FROM {_STAGE}")
    _check_accounting(con, f, parsed, f"raw.{f.table}", _QUARANTINED_LINES)
    _record_file(con, f, digest, parsed, None)
    return parsed


def _line_stats(f: SourceFile, digest: Digest) -> tuple[int, bool, bool]:
    """Newlines, whether the text ends with one, and whether it holds a bare CR or NUL byte."""
    if digest.newlines is not None:
        return digest.newlines, bool(digest.ends_with_newline), bool(digest.stray_bytes)
    try:
        scan = _text_line_stats(f.path)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"{f.relative}: cannot be decompressed: {exc}") from exc
    return scan.newlines, scan.last == b"\n", scan.stray_bytes


def _number_lines(con: duckdb.DuckDBPyConnection, f: SourceFile, target: str) -> None:
    """source_line of the file's new rows in `target` (those without one): the row's position in
    the file (rowid - base) + 2 (header, 1-based) plus the lines rejected before it."""
    base = con.execute(f"SELECT min(rowid) FROM {target} WHERE source_line IS NULL").fetchone()[0]
    if base is None:
        return
    offsets = con.execute(_OFFSETS_SQL, {"file": f.relative}).fetchall()
    if len(offsets) <= _MAX_CASE_OFFSETS:
        line = _line_number_sql(offsets).replace("l.rowid", f"(rowid - {int(base)})")
        con.execute(f"UPDATE {target} SET source_line = {line} WHERE source_line IS NULL")
        return
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE line_offsets AS {_OFFSETS_SQL}", {"file": f.relative}
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE new_lines AS
        SELECT l.rowid AS row_id, l.rowid - {int(base)} + 2 + coalesce(o.lines_skipped, 0) AS line
        FROM (SELECT rowid FROM {target} WHERE source_line IS NULL) l
        ASOF LEFT JOIN line_offsets o ON l.rowid - {int(base)} >= o.accepted_before"""
    )
    con.execute(
        f"UPDATE {target} SET source_line = n.line FROM new_lines n WHERE {target}.rowid = n.row_id"
    )


def _mark_duplicate_lines(con: duckdb.DuckDBPyConnection, f: SourceFile, numbered: str) -> None:
    """temp.duplicate_lines: the later copies of exact duplicate lines of the staged file.

    raw keeps only the canonical columns, so rows with the same loaded values (same hash of
    them) are only candidates; their original lines are then read from the file and compared
    byte for byte, so two lines that differ in a column that is not loaded (a cost, say) both
    stay. The first copy (lowest line) is kept. Lines of one file are compared, not across
    files."""
    loaded = ", ".join(c.name for c in schema.TABLES[f.table].columns)
    candidates = con.execute(
        f"""WITH hashed AS (SELECT source_line, hash({loaded}) AS h FROM ({numbered}))
        SELECT source_line, h FROM hashed
        WHERE h IN (SELECT h FROM hashed GROUP BY ALL HAVING count(*) > 1)
        ORDER BY source_line"""
    ).fetchall()
    con.execute("CREATE OR REPLACE TEMP TABLE duplicate_lines (source_line BIGINT)")
    if not candidates:
        return
    texts = _line_texts(f.path, {line for line, _ in candidates})
    seen, later = set(), []
    for line, h in candidates:
        key = (h, texts.get(line))
        if key[1] is not None and key in seen:
            later.append(line)
        seen.add(key)
    if later:
        con.execute("INSERT INTO temp.duplicate_lines SELECT unnest($lines)", {"lines": later})


def _line_texts(path: Path, lines: set[int]) -> dict[int, bytes]:
    """The bytes (without line end) of some physical lines (1-based) of a CSV or CSV.GZ file."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    texts, last = {}, max(lines)
    with opener(path, "rb") as handle:
        for number, text in enumerate(handle, start=1):
            if number in lines:
                texts[number] = text.rstrip(b"\r\n")
            if number >= last:
                break
    return texts


def _quarantine_new_rows(con: duckdb.DuckDBPyConnection, f: SourceFile, numbered: str) -> None:
    """The file's rejected lines into the quarantine; its rows (`numbered`: the SELECT of
    the staged rows with their line numbers) checked set-wise, then moved: good rows into
    raw, failed rows into the quarantine (unknown patients also into held). Fails when raw then holds another number of the file's rows
    than passed the checks (rows read = loaded + quarantined)."""
    table = f.table
    _insert_rows(
        con,
        "meta.quarantine",
        "SELECT table_name, file_path, line, column_name, reason, raw_line FROM landing.rejects"
        " WHERE file_path = $file",
        {"file": f.relative},
    )
    _mark_duplicate_lines(con, f, numbered)
    checks = _problem_checks(table, staged=True)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE ingest_checked AS SELECT *, {_case(checks, 1)} AS problem,"
        f" {_case(checks, 2)} AS problem_column FROM {_checked_source(table, numbered)}"
    )
    con.execute("DROP TABLE temp.ingest_stage")
    columns = ", ".join(c.name for c in (*schema.TABLES[table].columns, *schema.LINEAGE_COLUMNS))
    checked = "FROM temp.ingest_checked WHERE problem"
    good = _insert_rows(con, f"raw.{table}", f"SELECT {columns} {checked} IS NULL")
    _insert_rows(
        con,
        "meta.quarantine",
        f"SELECT $table, source_file, source_line, problem_column, problem, {_as_text(table)}"
        f" {checked} IS NOT NULL",
        {"table": table},
    )
    _insert_rows(con, _held_table(table), f"SELECT {columns} {checked} = 'unknown_patient'")
    con.execute("DROP TABLE temp.ingest_checked")
    loaded = con.execute(
        f"SELECT count(*) FROM raw.{table} WHERE source_file = ?", [f.relative]
    ).fetchone()[0]
    if loaded != good:
        raise IngestError(
            f"{f.relative}: {good} rows passed the checks but raw.{table} holds {loaded} of them;"
            " nothing was changed"
        )


def _apply_file_changes(con: duckdb.DuckDBPyConnection, table: str, changes: TableChanges) -> None:
    if changes.recreate:
        con.execute(f"DROP TABLE IF EXISTS raw.{table}")
        con.execute(schema.create_table_sql(table))
        con.execute("DELETE FROM meta.quarantine WHERE table_name = ?", [table])
    elif changes.stale:
        stale = {"files": changes.stale}
        con.execute(f"DELETE FROM raw.{table} WHERE source_file IN (SELECT unnest($files))", stale)
        con.execute(
            "DELETE FROM meta.quarantine WHERE table_name = $table"
            " AND source_file IN (SELECT unnest($files))",
            {"table": table, **stale},
        )
    if changes.fresh:
        _insert_checked_rows(con, table, changes.fresh)


def _insert_checked_rows(con: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> None:
    """Good rows of `files` into raw, their rejected lines and failed rows into the quarantine."""
    columns = ", ".join(c.name for c in schema.TABLES[table].columns)
    checked = _checked_rows_sql(con, table, files)
    _insert_rows(
        con,
        f"raw.{table}",
        f"SELECT {columns}, source_file, source_line FROM ({checked}) WHERE problem IS NULL",
    )
    _insert_rows(
        con,
        "meta.quarantine",
        "SELECT table_name, file_path, line, column_name, reason, raw_line FROM landing.rejects"
        " WHERE file_path IN (SELECT unnest($files))",
        {"files": files},
    )
    _insert_rows(
        con,
        "meta.quarantine",
        f"SELECT $table, source_file, source_line, problem_column, problem, {_as_text(table)}"
        f" FROM ({checked}) WHERE problem IS NOT NULL",
        {"table": table},
    )


def _recheck_patients(con: duckdb.DuckDBPyConnection, table: str, kept: list[str]) -> None:
    """Re-run the unknown-patient check on rows of unchanged files, for the ids that changed."""
    patient = schema.TABLES[table].patient_column
    columns = ", ".join(c.name for c in schema.TABLES[table].columns)
    if con.execute("SELECT count(*) FROM patients_removed").fetchone()[0]:
        orphans = f"FROM raw.{table} WHERE {patient} IN (SELECT patient_id FROM patients_removed)"
        con.execute(
            f"INSERT INTO meta.quarantine SELECT $table, source_file, source_line, '{patient}',"
            f" 'unknown_patient', {_as_text(table)} {orphans}",
            {"table": table},
        )
        con.execute(f"DELETE {orphans}")
    if kept and con.execute("SELECT count(*) FROM patients_added").fetchone()[0]:
        checked = _checked_rows_sql(con, table, kept)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE revived AS SELECT * FROM ({checked})"
            f" WHERE problem IS NULL AND {patient} IN (SELECT patient_id FROM patients_added)"
        )
        con.execute(
            f"INSERT INTO raw.{table} SELECT {columns}, source_file, source_line FROM revived"
        )
        con.execute(
            "DELETE FROM meta.quarantine q USING revived r WHERE q.table_name = $table"
            " AND q.reason = 'unknown_patient' AND q.source_file = r.source_file"
            " AND q.source_line = r.source_line",
            {"table": table},
        )


def _write_manifest(con: duckdb.DuckDBPyConnection, table: str) -> None:
    con.execute("DELETE FROM meta.ingest_manifest WHERE table_name = ?", [table])
    con.execute(
        f"""
        INSERT INTO meta.ingest_manifest
        SELECT f.table_name, f.file_path, f.size_bytes, f.sha256, coalesce(r.n, 0),
               coalesce(q.n, 0), f.loaded_at
        FROM landing.files f
        LEFT JOIN (SELECT source_file, count(*) AS n FROM raw.{table} GROUP BY ALL) r
            ON r.source_file = f.file_path
        LEFT JOIN (SELECT source_file, count(DISTINCT source_line) AS n FROM meta.quarantine
                   WHERE table_name = $table GROUP BY ALL) q
            ON q.source_file = f.file_path
        WHERE f.table_name = $table
        ORDER BY f.part, f.file_path""",
        {"table": table},
    )


def update_raw(
    con: duckdb.DuckDBPyConnection,
    log: Log,
    export: Export | None = None,
    landed: _LandingChanges | None = None,
) -> list[str]:
    """Update every raw table that needs it (call inside a transaction); returns their names.
    Files of the tables parsed straight into raw are added to `landed.loaded`/`skipped`."""
    landed = landed or _LandingChanges()
    plan = plan_changes(con, export, landed.digests)
    updated = []
    ids_changed = False
    for table in schema.TABLES:  # patients first: the other tables are checked against it
        started = time.perf_counter()
        if table == "patients":
            changed = update_patients(con, plan[table])
            ids_changed = changed and _patient_ids_changed(con)
        else:
            changed = update_table(con, table, plan[table], ids_changed)
        if table not in LANDED_TABLES and export is not None:
            for message in plan[table].messages:
                log(message)
            landed.loaded += plan[table].loaded
            landed.skipped += [
                f.relative
                for f in export.files
                if f.table == table and f.relative not in plan[table].loaded
            ]
        if changed:
            updated.append(table)
            log(f"raw.{table} updated ({_seconds(started)})")
    return updated


def write_source_tables(con: duckdb.DuckDBPyConnection, export: Export) -> None:
    """One row per canonical table: required, present, files, rows, and a note."""
    con.execute("DELETE FROM meta.source_tables")
    for name, t in schema.TABLES.items():
        files = [f for f in export.files if f.table == name]
        n_rows = con.execute(f"SELECT count(*) FROM raw.{name}").fetchone()[0]
        con.execute(
            "INSERT INTO meta.source_tables VALUES (?, ?, ?, ?, ?, ?)",
            [name, t.required, bool(files), len(files), n_rows, table_note(export, name)],
        )


def table_note(export: Export, table: str) -> str:
    """The `meta.source_tables` note of one table (also written by the Spark engine)."""
    notes = []
    if table in export.empty_optional:
        notes.append(f"empty file(s) treated as absent: {', '.join(export.empty_optional[table])}")
    if table not in export.tables_present():
        notes.append("absent from the export: features that need it are not ascertainable")
    return "; ".join(notes)


# ---------------------------------------------------------------- summary


@dataclass
class IngestSummary:
    """What one ingest did: counts only, never row contents."""

    source: str
    warehouse: str
    table_rows: dict[str, int]
    quarantined: dict[str, dict[str, int]]  # table -> reason -> rows
    files_loaded: list[str]
    files_skipped: list[str]
    files_removed: list[str]
    tables_updated: list[str]
    absent_tables: list[str]
    ignored_files: list[str]
    notes: list[str]
    seconds: float = 0.0
    contracts: str = ""  # one-line result of the input contracts, filled by the flow

    @property
    def total_quarantined(self) -> int:
        return sum(sum(r.values()) for r in self.quarantined.values())

    def counts(self) -> dict[str, int]:
        """Rows in each raw table."""
        return dict(self.table_rows)

    def format(self) -> str:
        """Readable multi-line summary for the terminal and the run log."""
        lines = [
            f"ingest {display_name(self.source)} -> {display_name(self.warehouse)}"
            f" ({self.seconds:.1f} s)",
            f"files: {len(self.files_loaded)} loaded, {len(self.files_skipped)} unchanged"
            f" (not re-read), {len(self.files_removed)} removed",
            f"{'table':<16}{'rows':>12}{'quarantined':>13}",
        ]
        for table, rows in self.table_rows.items():
            bad = sum(self.quarantined.get(table, {}).values())
            absent = "  (absent)" if table in self.absent_tables else ""
            lines.append(f"{table:<16}{rows:>12}{bad:>13}{absent}")
        for table, reasons in self.quarantined.items():
            detail = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
            lines.append(f"quarantined in {table}: {detail} (see meta.quarantine)")
        if self.absent_tables:
            lines.append(
                f"absent optional tables: {', '.join(self.absent_tables)}"
                " (features that need them are reported as not ascertainable)"
            )
        if self.ignored_files:
            lines.append(f"ignored (not used by the study): {', '.join(self.ignored_files)}")
        lines += [f"note: {note}" for note in self.notes]
        if self.contracts:
            lines.append(self.contracts)
        return "\n".join(lines)


def _quarantine_counts(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    rows = con.execute(
        "SELECT table_name, reason, count(DISTINCT (source_file, source_line)) FROM meta.quarantine"
        " GROUP BY ALL ORDER BY table_name, reason"
    ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for table, reason, n in rows:
        counts.setdefault(table, {})[reason] = n
    return {t: counts[t] for t in schema.TABLES if t in counts}


def _file_notes(con: duckdb.DuckDBPyConnection) -> list[str]:
    notes = []
    for relative, parsed, rejected, blank, continued in con.execute(
        "SELECT file_path, rows_parsed, lines_rejected, coalesce(blank_lines, 0),"
        " coalesce(continuation_lines, 0) FROM landing.files ORDER BY file_path"
    ).fetchall():
        if blank or continued:
            notes.append(
                f"{display_name(relative)}: {blank} blank lines and {continued} lines"
                " continuing a quoted value (Synthea writes neither; counted, line numbers"
                " stay exact)"
            )
        if rejected > parsed:
            name = display_name(relative)
            notes.append(f"{name}: most lines could not be parsed; check the export format")
    return notes


# ---------------------------------------------------------------- entry points


def ingest_export(
    source: Path,
    warehouse: Path,
    *,
    log: Log = print,
    accept_shrink: bool = False,
    lock: bool = True,
    wait_seconds: float = 0.0,
) -> IngestSummary:
    """Load (or incrementally update) raw.* from the export folder; see the module docstring.

    Holds the warehouse lock (`lock=False` when the caller, a run, already holds it). An
    empty required table, or a table that shrank past settings.MAX_ROW_DROP_FRACTION
    (unless `accept_shrink`), rolls the whole ingest back (pipelines/guards.py)."""
    from contextlib import nullcontext

    from pipelines.guards import check_table_sizes

    started = time.perf_counter()
    export = discover_export(Path(source))
    if export.ignored:
        log(f"ignored (not used by the study): {', '.join(export.ignored)}")
    held = wh.warehouse_lock(warehouse, wait_seconds) if lock else nullcontext()
    with held, wh.open_warehouse(warehouse) as con:
        _ensure_tables(con)
        changes = sync_landing(con, export, log)
        with _Transaction(con):
            before = dict(
                con.execute("SELECT table_name, n_rows FROM meta.source_tables").fetchall()
            )
            updated = update_raw(con, log, export, changes)
            order = {f.relative: i for i, f in enumerate(export.files)}
            for names in (changes.loaded, changes.skipped):
                names.sort(key=lambda name: order.get(name, len(order)))
            write_source_tables(con, export)
            # a Synthea export has no observation periods: drop a previous OMOP load's
            con.execute("DELETE FROM meta.observation_periods")
            after = dict(
                con.execute("SELECT table_name, n_rows FROM meta.source_tables").fetchall()
            )
            # Before COMMIT: a failed check leaves raw (and so mart and release) as they were.
            check_table_sizes(before, after, schema.REQUIRED_TABLES, accept_shrink=accept_shrink)
        table_rows = dict(
            con.execute("SELECT table_name, n_rows FROM meta.source_tables").fetchall()
        )
        summary = IngestSummary(
            source=str(source),
            warehouse=str(warehouse),
            table_rows={t: table_rows[t] for t in schema.TABLES},
            quarantined=_quarantine_counts(con),
            files_loaded=changes.loaded,
            files_skipped=changes.skipped,
            files_removed=changes.removed,
            tables_updated=updated,
            absent_tables=[t for t in schema.OPTIONAL_TABLES if t not in export.tables_present()],
            ignored_files=export.ignored,
            notes=export.notes + _file_notes(con),
        )
    summary.seconds = time.perf_counter() - started
    return summary
