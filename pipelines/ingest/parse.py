"""One file parsed into a table with the line number of every row, and its row accounting.

The fast path is one typed DuckDB `read_csv` of the whole file; the slow path
(pipelines/resync.py) re-reads it line by line when the fast path cannot account for every
physical line. Bad lines go to `landing.rejects`; `check_accounting` proves rows read =
rows loaded + quarantined before anything commits; `record_file` notes the file in
`landing.files`, with the `fingerprint` of how it was parsed.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipelines import resync, schema
from pipelines.errors import IngestError
from pipelines.ingest.checks import unit_rules_digest
from pipelines.ingest.digests import Digest, text_line_stats
from pipelines.ingest.discover import SourceFile
from pipelines.ingest.tables import insert_rows, seconds

# Bump when the way files are parsed into landing tables changes: every file is then re-read.
# 5: rows carry their line numbers from the parse (a fast path, or the line-by-line slow path
# of pipelines/resync.py), checked by the row accounting; and the files of the tables parsed
# into raw go through a staging table, with the duplicate_record and unit checks.
LANDING_FORMAT = "5"


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
MAX_CASE_OFFSETS = 200


def fingerprint(source_file: SourceFile) -> str:
    """Identifies how a file is parsed: a change of schema.py or of the parser re-reads it
    (for observations, also a change of the unit rules: units.csv or the value sets)."""
    rules = unit_rules_digest() if source_file.table == "observations" else ""
    text = repr((LANDING_FORMAT, schema.TABLES[source_file.table], source_file.positions, rules))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    inserted by insert_rows (never an empty INSERT). With `numbered` (the slow path's clean
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
class Parsed:
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
        return f"{relative}: {counts} ({seconds(started)}{how})"


def parse_into(
    con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest, target: str
) -> Parsed:
    """Parse the file's records into `target` (a table with the raw columns) with their line
    numbers, and its bad lines into landing.rejects.

    Fast path: one typed DuckDB read_csv of the whole file. It is kept only when its rows
    and rejected lines account for every physical line of the byte scan, one line each;
    otherwise (a stray quote swallowed lines, blank lines, records spanning lines) it is
    undone and the slow path (pipelines/resync.py) re-reads the file line by line, as it
    does straight away when the byte scan saw a bare CR, a NUL byte or mixed line ends."""
    newlines, ends_with_newline, stray_bytes = line_stats(f, digest)
    physical_lines = newlines + (0 if ends_with_newline else 1)
    con.execute("DELETE FROM landing.rejects WHERE file_path = ?", [f.relative])
    if stray_bytes or not _fast_parse(con, f, target, physical_lines, ends_with_newline):
        split = _slow_parse(con, f, target)
        parsed = Parsed(0, 0, physical_lines, split.blank_lines, split.extra_lines, True)
    else:
        parsed = Parsed(0, 0, physical_lines)
        if not ends_with_newline:
            rows_from = f"FROM {target} WHERE source_line IS NULL"
            _quarantine_last_line(con, f, physical_lines, rows_from, target)
        number_lines(con, f, target)
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
        insert_rows(
            con,
            "landing.rejects",
            _rejects_sql(f),
            _params(f, table=True, ends_with_newline=ends_with_newline, last_line=physical_lines),
        )
    except duckdb.Error as exc:
        raise IngestError(f"{f.relative}: cannot be read: {first_line(exc)}") from exc
    rows = con.execute(f"SELECT count(*) FROM {target} WHERE source_line IS NULL").fetchone()[0]
    rejected, spanning = con.execute(
        "SELECT count(DISTINCT line), count(*) FILTER (extra_lines > 0) FROM landing.rejects"
        " WHERE file_path = ?",
        [f.relative],
    ).fetchone()
    if not spanning and 1 + rows + rejected == physical_lines:
        return True
    # undone: the slow path replaces `target`; the rejects are deleted (no INSERT follows
    # here that could be empty: see insert_rows)
    con.execute("DELETE FROM landing.rejects WHERE file_path = ?", [f.relative])
    return False


def _slow_parse(con: duckdb.DuckDBPyConnection, f: SourceFile, target: str) -> resync.Split:
    """The file split into records by pipelines/resync.py; its clean copy parsed by the same
    typed read_csv into `target` (line numbers included); its bad lines into landing.rejects."""
    with tempfile.TemporaryDirectory(prefix="redflags-resync-", dir=spill_folder(con)) as tmp:
        clean = Path(tmp) / "clean.csv"
        try:
            split = resync.split_file(f.path, len(f.header), clean)
        except (OSError, EOFError, zlib.error) as exc:
            raise IngestError(f"{f.relative}: cannot be read: {first_line(exc)}") from exc
        _drop_reject_tables(con)
        try:
            con.execute(
                f"{_create_or_replace(target)} AS {_read_csv_sql(f, numbered=True)}",
                {"relative": f.relative, "path": str(clean)},
            )
            insert_rows(
                con,
                "landing.rejects",
                _rejects_sql(f, numbered=True),
                _params(f, table=True, ends_with_newline=True, last_line=0),
            )
        except duckdb.Error as exc:
            raise IngestError(f"{f.relative}: cannot be read: {first_line(exc)}") from exc
    if split.bad:
        con.execute(
            "INSERT INTO landing.rejects SELECT $table, $relative, b.line, b.extra_lines, NULL,"
            " b.reason, b.text FROM (SELECT unnest($bad) AS b)",
            _params(f, table=True, bad=[vars(b) for b in split.bad]),
        )
    return split


def _create_or_replace(target: str) -> str:
    """CREATE ... TABLE statement head for the parse's `target`: created from the parse's
    SELECT, never filled by an INSERT (which could be empty: see insert_rows)."""
    if target.startswith("temp."):
        return f"CREATE OR REPLACE TEMP TABLE {target.removeprefix('temp.')}"
    return f"CREATE OR REPLACE TABLE {target}"


def first_line(exc: Exception) -> str:
    """DuckDB's messages run over many lines (hints, the reader's options); a user-facing
    error is one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def spill_folder(con: duckdb.DuckDBPyConnection) -> str | None:
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


def line_stats(f: SourceFile, digest: Digest) -> tuple[int, bool, bool]:
    """Newlines, whether the text ends with one, and whether it holds a bare CR or NUL byte."""
    if digest.newlines is not None:
        return digest.newlines, bool(digest.ends_with_newline), bool(digest.stray_bytes)
    try:
        scan = text_line_stats(f.path)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"{f.relative}: cannot be decompressed: {exc}") from exc
    return scan.newlines, scan.last == b"\n", scan.stray_bytes


def number_lines(con: duckdb.DuckDBPyConnection, f: SourceFile, target: str) -> None:
    """source_line of the file's new rows in `target` (those without one): the row's position in
    the file (rowid - base) + 2 (header, 1-based) plus the lines rejected before it."""
    base = con.execute(f"SELECT min(rowid) FROM {target} WHERE source_line IS NULL").fetchone()[0]
    if base is None:
        return
    offsets = con.execute(_OFFSETS_SQL, {"file": f.relative}).fetchall()
    if len(offsets) <= MAX_CASE_OFFSETS:
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


def _line_number_sql(offsets: list[tuple[int, int]]) -> str:
    """source_line of a parsed row from its landing rowid: rowid + 2 (header, 1-based) plus the
    lines rejected before it. `offsets` are (rows accepted before a rejected line, lines
    rejected up to and including it), in order."""
    if not offsets:
        return "l.rowid + 2"
    if len(offsets) > MAX_CASE_OFFSETS:
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


def check_accounting(
    con: duckdb.DuckDBPyConnection, f: SourceFile, parsed: Parsed, rows: str, bad_lines: str
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


# The file's quarantined lines, for check_accounting (parameters $file, $table)
REJECTED_LINES = "SELECT DISTINCT line FROM landing.rejects WHERE file_path = $file"


QUARANTINED_LINES = (
    "SELECT DISTINCT source_line AS line FROM meta.quarantine"
    " WHERE table_name = $table AND source_file = $file"
)


def record_file(
    con: duckdb.DuckDBPyConnection,
    f: SourceFile,
    digest: Digest,
    parsed: Parsed,
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


def _params(f: SourceFile, *, path: bool = False, table: bool = False, **extra) -> dict:
    params = {"relative": f.relative, **extra}
    if path:
        params["path"] = str(f.path)
    if table:
        params["table"] = f.table
    return params


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
