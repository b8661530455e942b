"""Phase 2, the plan: what each raw table must give up (rows of vanished or changed files)
and take in (rows of new or changed files), from the landing files or the export's files
compared with the manifest raw was built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from pipelines import schema
from pipelines.ingest.digests import Digest
from pipelines.ingest.discover import Export, SourceFile
from pipelines.ingest.landing import LANDED_TABLES
from pipelines.ingest.parse import fingerprint


@dataclass
class TableChanges:
    """What raw.<table> must give up and take in to match its landing tables."""

    stale: list[str]  # files whose rows leave raw (vanished, or changed since raw was built)
    fresh: list[str]  # files whose rows enter raw (new, or changed)
    recreate: bool  # raw table missing or of an older shape: rebuilt from every file
    # for tables parsed straight into raw: each fresh file and its digest
    sources: dict[str, tuple[SourceFile, Digest]] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)  # files parsed (filled by update_table)
    # fresh files that only grew by appended rows: only their new rows are parsed, their old
    # rows stay (pipelines/ingest/append.py: find_tails); relative path -> append.Tail
    appends: dict[str, object] = field(default_factory=dict)
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
