"""A file that only grew by rows appended at its end: parse its new rows alone.

A nightly Synthea-style export usually grows by lines appended to each CSV. Re-reading the
whole file for them (what a changed file otherwise gets, pipelines/ingest/direct.py) costs
the whole file; here only the new bytes are parsed, when that is provably the same as a
full load of the file:

- the file's first `old size` bytes are byte for byte what was loaded: their sha256 (taken
  in the same read as the whole file's, pipelines/ingest/digests.py) equals the sha256 the
  manifest recorded, and raw was built from exactly that load;
- the old content ended with a newline, had no stray bytes (bare CR, NUL, mixed line ends),
  no blank line, no record spanning lines and no malformed quote: every old line was a line
  of its own on the fast path, so no new line can change how an old one is read;
- the file is plain CSV of a table parsed straight into raw (not gzip: re-read whole; not
  patients: duplicate ids are judged across all patients files) and its parse rules
  (fingerprint) did not change.

The new rows are parsed by the same code as a full load (pipelines/ingest/parse.py:
`parse_into`) from a temporary copy of the header line plus the new bytes, then their line
numbers (and those of their rejected lines) are shifted by the old line count, so file and
line in raw and meta.quarantine are those a full load gives. The checks then run on them as
on a full load (direct.py: `quarantine_new_rows`). Two cases found only after that parse
fall back to a full reload of the file, in the same transaction: the new lines need the
line-by-line slow path (a full load would then read the old lines by it too), or a new row
repeats an old row of the file (`duplicate_record` is judged over the whole file). Last, the
row accounting of the whole file is checked (rows in raw + lines quarantined = the file's
data lines), as after a full load.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from pipelines import schema
from pipelines.ingest.checks import as_text
from pipelines.ingest.digests import Digest, file_digest
from pipelines.ingest.direct import STAGE, held_table, load_into_raw, quarantine_new_rows
from pipelines.ingest.discover import SourceFile
from pipelines.ingest.landing import LANDED_TABLES
from pipelines.ingest.parse import (
    QUARANTINED_LINES,
    Parsed,
    check_accounting,
    fingerprint,
    parse_into,
    record_file,
    spill_folder,
)
from pipelines.ingest.plan import TableChanges
from pipelines.ingest.tables import insert_rows, seconds

# Quarantine reasons of an old line that may read differently once lines follow it (a quote
# left open) or that only the slow path gives (the old file was not read line for line by
# DuckDB's fast path): such a file is re-read whole.
_NOT_LINE_LOCAL = ("malformed_quotes", "truncated_last_line", "bare_carriage_return", "nul_byte")


@dataclass(frozen=True)
class Tail:
    """What a grown file had at its last load."""

    old_bytes: int
    old_lines: int  # physical lines, header included
    old_rows_parsed: int
    old_lines_rejected: int


@dataclass
class TailParsed(Parsed):
    """The row accounting of the whole file after its new rows were parsed alone."""

    first_line: int = 0  # the first new line
    new_rows: int = 0
    new_bad: int = 0

    def message(self, relative: str, started: float) -> str:
        return (
            f"{relative}: appended lines {self.first_line}-{self.physical_lines} parsed alone,"
            f" {self.new_rows} rows parsed, {self.new_bad} lines rejected ({seconds(started)})"
        )


def find_tails(con: duckdb.DuckDBPyConnection, plan: dict[str, TableChanges]) -> None:
    """Mark the fresh files that only grew by appended rows (plan.appends): their old rows
    stay in raw (they leave plan.stale). A grown file that cannot be appended gets a log line
    saying why it is re-read whole."""
    for table, changes in plan.items():
        if table in LANDED_TABLES or changes.recreate:
            continue
        for relative in changes.fresh:
            f, digest = changes.sources[relative]
            tail, why = _tail_of(con, f, digest)
            if tail is not None:
                changes.appends[relative] = tail
                changes.stale.remove(relative)
            elif why:
                changes.messages.append(f"{relative}: grew, but {why}; re-read whole")


def _tail_of(
    con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest
) -> tuple[Tail | None, str | None]:
    """The file's Tail when only rows were appended to it since raw was built from it; else
    None and why (None when it did not grow: an ordinary change)."""
    old = con.execute(
        "SELECT l.size_bytes, l.sha256, l.fingerprint, l.physical_lines, l.rows_parsed,"
        " l.lines_rejected, coalesce(l.blank_lines, 0) + coalesce(l.continuation_lines, 0),"
        " m.file_path IS NOT NULL"
        " FROM landing.files l LEFT JOIN meta.ingest_manifest m"
        " ON m.file_path = l.file_path AND m.table_name = l.table_name"
        " AND m.sha256 = l.sha256 AND m.loaded_at = l.loaded_at"
        " WHERE l.file_path = ? AND l.table_name = ?",
        [f.relative, f.table],
    ).fetchone()
    if old is None:
        return None, None
    size, sha, print_, lines, rows, rejected, irregular, built = old
    if digest.size_bytes <= size:
        return None, None
    if f.compressed:
        return None, "it is compressed"
    if print_ != fingerprint(f) or not built:
        return None, None  # parse rules changed, or raw was not built from that load
    if digest.prefix_bytes != size or digest.prefix_sha256 != sha:
        return None, f"its first {size} bytes changed"
    if not digest.prefix_ends_with_newline or digest.prefix_newlines != lines:
        return None, "its old content did not end with a complete line"
    if digest.prefix_stray_bytes or irregular or _irregular_lines(con, f):
        return None, "its old lines are not all plain lines"
    return Tail(size, lines, rows, rejected), None


def _irregular_lines(con: duckdb.DuckDBPyConnection, f: SourceFile) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM meta.quarantine WHERE table_name = ? AND source_file = ?"
            " AND list_contains(?, reason)",
            [f.table, f.relative, list(_NOT_LINE_LOCAL)],
        ).fetchone()[0]
    )


def tail_loader(changes: TableChanges):
    """The `load` of direct.update_direct_table: the new rows alone for a file of
    changes.appends (or the whole file when that turns out not to be equivalent)."""

    def load(con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest) -> Parsed:
        tail = changes.appends.get(f.relative)
        if tail is not None:
            started = time.perf_counter()
            parsed, why = load_tail(con, f, digest, tail)
            if parsed is not None:
                return parsed
            changes.messages.append(
                f"{f.relative}: {why}; re-read whole ({seconds(started)} spent on its new rows)"
            )
            _forget_rows(con, f)
        return load_into_raw(con, f, digest)

    return load


def load_tail(
    con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest, tail: Tail
) -> tuple[TailParsed | None, str | None]:
    """Parse the new lines of `f` into raw (inside the update transaction), numbered as in
    the whole file. None and why when a full load of the file is needed after all (nothing
    of the new rows is kept then)."""
    offset = tail.old_lines - 1  # line n of the copy (header = 1) is line n + offset
    with tempfile.TemporaryDirectory(prefix="redflags-append-", dir=spill_folder(con)) as tmp:
        copy = Path(tmp) / "appended.csv"
        _write_tail(f.path, tail.old_bytes, copy)
        part = replace(f, path=copy)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE append_old_rejects AS"
            " SELECT * FROM landing.rejects WHERE file_path = ?",
            [f.relative],
        )
        parsed = parse_into(con, part, file_digest(copy), STAGE)
        if parsed.resynced:
            why = "its new lines need the line-by-line parse"
        elif _repeats_old_rows(con, f):
            why = "a new row repeats an old row of the file"
        else:
            why = None
        if why:
            con.execute(f"DROP TABLE {STAGE}")
            return None, why
        # the parse numbered the copy's lines; shift them to the file's
        con.execute(f"UPDATE {STAGE} SET source_line = source_line + {int(offset)}")
        con.execute(
            f"UPDATE landing.rejects SET line = line + {int(offset)} WHERE file_path = ?",
            [f.relative],
        )
        table = f.table
        rows_before = con.execute(
            f"SELECT count(*) FROM raw.{table} WHERE source_file = ?", [f.relative]
        ).fetchone()[0]
        quarantine_new_rows(con, f, f"SELECT * FROM {STAGE}", rows_before, (copy, offset))
    # landing.rejects keeps the old lines' rejects too, as after a full load
    insert_rows(con, "landing.rejects", "SELECT * FROM temp.append_old_rejects")
    con.execute("DROP TABLE temp.append_old_rejects")
    whole = TailParsed(
        rows=tail.old_rows_parsed + parsed.rows,
        bad=tail.old_lines_rejected + parsed.bad,
        physical_lines=tail.old_lines + parsed.physical_lines - 1,
        first_line=tail.old_lines + 1,
        new_rows=parsed.rows,
        new_bad=parsed.bad,
    )
    check_accounting(con, f, whole, f"raw.{f.table}", QUARANTINED_LINES)
    record_file(con, f, digest, whole, None)
    return whole, None


def _write_tail(path: Path, old_bytes: int, out: Path) -> None:
    """The file's header line (with its own line end) and every byte after `old_bytes`."""
    with open(path, "rb") as source, open(out, "wb") as target:
        target.write(source.readline())
        source.seek(old_bytes)
        while chunk := source.read(1 << 22):
            target.write(chunk)


def _repeats_old_rows(con: duckdb.DuckDBPyConnection, f: SourceFile) -> bool:
    """Whether a staged new row has the loaded values of an old row of the file (in raw or
    held, or quarantined after it parsed): a candidate `duplicate_record`, judged over the
    whole file, so the file is re-read whole. Old rows are compared for the new rows'
    patients only (new patients have none)."""
    table = schema.TABLES[f.table]
    loaded = ", ".join(c.name for c in table.columns)
    patient = table.patient_column
    old_rows = " UNION ALL ".join(
        f"SELECT hash({loaded}) FROM {source} WHERE source_file = $file"
        f" AND {patient} IN (SELECT {patient} FROM {STAGE})"
        for source in (f"raw.{f.table}", held_table(f.table))
    )
    return bool(
        con.execute(
            f"SELECT count(*) FROM {STAGE} WHERE hash({loaded}) IN ({old_rows})"
            f" OR {as_text(f.table)} IN (SELECT raw_line FROM meta.quarantine"
            "  WHERE table_name = $table AND source_file = $file)",
            {"file": f.relative, "table": f.table},
        ).fetchone()[0]
    )


def _forget_rows(con: duckdb.DuckDBPyConnection, f: SourceFile) -> None:
    """The file's old rows leave raw, held and the quarantine (it is then re-read whole)."""
    for target in (f"raw.{f.table}", held_table(f.table)):
        con.execute(f"DELETE FROM {target} WHERE source_file = ?", [f.relative])
    con.execute(
        "DELETE FROM meta.quarantine WHERE table_name = ? AND source_file = ?",
        [f.table, f.relative],
    )
