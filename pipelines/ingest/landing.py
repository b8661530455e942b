"""Phase 1, landing: every new or changed patients file is parsed once into its own table
`landing.patients__<id>` (raw.patients is rebuilt from them, since duplicates are judged
across files); files whose path, sha256 and parse fingerprint are unchanged are not read
again; vanished files are forgotten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import duckdb

from pipelines import progress
from pipelines.errors import IngestError
from pipelines.ingest.digests import Digest, digest_files
from pipelines.ingest.discover import Export, SourceFile, display_name
from pipelines.ingest.parse import (
    REJECTED_LINES,
    Parsed,
    check_accounting,
    fingerprint,
    first_line,
    parse_into,
    record_file,
)
from pipelines.ingest.tables import Log, Transaction, landing_table_name, quote


def load_file(con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest) -> Parsed:
    """Parse one file into its landing table, in one transaction."""
    table = f"landing.{quote(landing_table_name(f.relative))}"
    try:
        with Transaction(con):
            parsed = parse_into(con, f, digest, table)
            check_accounting(con, f, parsed, table, REJECTED_LINES)
            record_file(con, f, digest, parsed, landing_table_name(f.relative))
    except duckdb.Error as exc:
        raise IngestError(f"{f.relative}: cannot be read: {first_line(exc)}") from exc
    return parsed


def drop_file(con: duckdb.DuckDBPyConnection, relative: str) -> None:
    """Forget a file that vanished from the export (its rows leave raw in phase 2)."""
    with Transaction(con):
        con.execute(f"DROP TABLE IF EXISTS landing.{quote(landing_table_name(relative))}")
        con.execute("DELETE FROM landing.rejects WHERE file_path = ?", [relative])
        con.execute("DELETE FROM landing.files WHERE file_path = ?", [relative])


# Tables whose files phase 1 parses into landing tables; the others are parsed straight
# into raw in phase 2.
LANDED_TABLES = frozenset({"patients"})


def previous_sizes(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The size of each plain file of the tables parsed straight into raw when it was last
    loaded: a larger file is hashed up to that size too, in the same read, to see whether it
    only grew by appended rows (pipelines/ingest/append.py)."""
    return dict(
        con.execute(
            "SELECT file_path, size_bytes FROM landing.files"
            " WHERE NOT list_contains($landed, table_name) AND NOT lower(file_path) LIKE '%.gz'",
            {"landed": sorted(LANDED_TABLES)},
        ).fetchall()
    )


@dataclass
class LandingChanges:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    digests: dict[str, Digest] = field(default_factory=dict)


def sync_landing(con: duckdb.DuckDBPyConnection, export: Export, log: Log) -> LandingChanges:
    """Parse new and changed files, forget vanished ones; unchanged files are not read again."""
    known = {
        path: (sha, fp)
        for path, sha, fp in con.execute(
            "SELECT file_path, sha256, fingerprint FROM landing.files"
        ).fetchall()
    }
    changes = LandingChanges()
    digests = changes.digests = digest_files(export.files, previous_sizes(con))
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
