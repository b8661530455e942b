"""Row accounting of the OMOP and FHIR loads, per file, as the CSV ingest does it
(pipelines/ingest/parse.py `check_accounting`, docs/reliability.md):

    records read = records loaded + records quarantined + blank lines + records not used

and no record is counted outside its file. A record is a physical line of a CSV file
(header excluded) or of an NDJSON file, an entry of a Bundle, a row of a Parquet file or a
database table. The number of records is counted independently of the parse where the
format allows it: by a byte scan of the newlines of CSV and NDJSON files (the same pass
that hashes the file), so a line the parser swallowed or skipped makes the sum fail.

A record that gives several raw rows (one per coding or concept) counts once; one that
gives some rows loaded and some quarantined counts once, as quarantined. A mismatch is an
IngestError naming the file; the load's transaction rolls back, so the previous raw tables
stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines import ingest, schema
from pipelines.errors import IngestError


@dataclass(frozen=True)
class Records:
    """The records a file holds: numbers `first` .. `first + count - 1`."""

    relative: str  # the file's source_file
    first: int
    count: int
    what: str = "lines"  # for the message: lines, entries, rows
    skipped: int = 0  # of those, blank lines and continuation lines of multi-line records


@dataclass(frozen=True)
class LineCount:
    """A file's bytes counted once: its sha256 (for meta.ingest_manifest) and its physical
    lines (text lines of the decompressed bytes for .gz)."""

    sha256: str
    physical_lines: int


def count_lines(path: Path) -> LineCount:
    """sha256 and physical lines of a text file in one read (a .gz file is decompressed
    for the lines). A last line without a newline still counts."""
    digest = ingest.file_digest(path)
    if digest.newlines is None:  # gzip: the lines of the decompressed text
        scan = ingest.text_line_stats(path)
        newlines, ends_with_newline = scan.newlines, scan.last == b"\n"
    else:
        newlines, ends_with_newline = digest.newlines, digest.ends_with_newline
    empty = path.stat().st_size == 0
    return LineCount(digest.sha256, newlines + (0 if ends_with_newline or empty else 1))


def check(con: duckdb.DuckDBPyConnection, files: list[Records], extra_sql: str = "") -> None:
    """IngestError unless every record of every file in `files` is loaded (a row of raw.* or
    meta.observation_periods with its source_file and source_line), quarantined (a line of
    meta.quarantine) or in `extra_sql` (a SELECT of source_file, source_line: blank lines,
    records the study does not use), and nothing of those names a record outside its file
    or a file not in `files`."""
    if not files:
        return
    con.execute(
        "CREATE OR REPLACE TEMP TABLE acct_files (source_file VARCHAR, first BIGINT,"
        " last BIGINT, what VARCHAR, skipped BIGINT)"
    )
    con.executemany(
        "INSERT INTO acct_files VALUES (?, ?, ?, ?, ?)",
        [(f.relative, f.first, f.first + f.count - 1, f.what, f.skipped) for f in files],
    )
    parts = [f"SELECT source_file, source_line FROM raw.{t}" for t in schema.TABLES]
    parts += [
        "SELECT source_file, source_line FROM meta.observation_periods",
        "SELECT source_file, source_line FROM meta.quarantine",
    ]
    if extra_sql:
        parts.append(f"SELECT source_file, source_line FROM ({extra_sql})")
    low = min(f.first for f in files)
    high = max(max(f.first + f.count - 1 for f in files), low)
    # distinct records by a bitmap over the record numbers (as in the CSV ingest: much
    # cheaper than count(DISTINCT) over tens of millions of rows)
    problems = con.execute(
        f"""WITH records AS ({" UNION ALL ".join(parts)}),
        per_file AS (
            SELECT r.source_file, any_value(a.source_file) IS NULL AS unknown_file,
                   count(*) FILTER (WHERE r.source_line NOT BETWEEN a.first AND a.last) AS outside,
                   bit_count(bitstring_agg(r.source_line, {int(low)}, {int(high)})
                             FILTER (WHERE r.source_line BETWEEN a.first AND a.last)) AS counted
            FROM records r LEFT JOIN acct_files a ON a.source_file = r.source_file
            GROUP BY r.source_file
        )
        SELECT coalesce(a.source_file, p.source_file), a.first, a.last, a.what, a.skipped,
               coalesce(p.counted, 0), coalesce(p.outside, 0), coalesce(p.unknown_file, false)
        FROM acct_files a FULL JOIN per_file p ON p.source_file = a.source_file
        WHERE coalesce(p.unknown_file, false) OR coalesce(p.outside, 0) > 0
           OR coalesce(p.counted, 0) + a.skipped <> a.last - a.first + 1
        ORDER BY 1 LIMIT 1"""
    ).fetchall()
    con.execute("DROP TABLE temp.acct_files")
    if not problems:
        return
    name, first, last, what, skipped, counted, outside, unknown = problems[0]
    if unknown:
        raise IngestError(f"{name}: rows with this source file but no such input file was read")
    raise IngestError(
        f"{name}: records do not add up for {what} {first}-{last}: {last - first + 1} {what},"
        f" but {counted} loaded, quarantined or not used + {skipped} blank or continuation"
        f" lines ({outside} outside the file); nothing was changed"
    )
