"""Reuse of the last run when nothing it depends on changed (the nightly run on an unchanged export).

A run's outputs are a function of four things the run already records: the export's bytes
(their sha256, taken again only for files whose size, mtime or inode changed: `file_digests`),
the settings, the value sets and the code version (and the engine and source layout). Their
hash is the run's *fingerprint*, kept in `meta.run_fingerprints` beside `meta.runs`. When a
new run's fingerprint equals that of the last successful run, and the published `mart`,
`release` and `dq` tables are still that run's, nothing is rebuilt: the run is recorded with
status `reused` (and `reused_from` the run that built the tables), the published tables are
kept as they are, and the report and Parquet folder are written again from them only when
missing or not that run's (`stale`, `stale_parquet`: a report or Parquet folder already
written for that run, every file intact, is left untouched, so a re-run writes nothing).
`force=True` (`redflags run --force`) always rebuilds.

Reuse is the engine's call (`EngineRun.reusable`): the DuckDB engine's published tables hold
all their rows; a Spark run's published views point into its own run folder, so it never reuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from pipelines.engines.base import EngineRun
    from pipelines.settings import StudySettings

FINGERPRINTS_DDL = """
CREATE TABLE IF NOT EXISTS meta.run_fingerprints (
    run_id VARCHAR PRIMARY KEY,
    fingerprint VARCHAR,
    reused_from VARCHAR
)
"""
CHUNK = 1 << 20

# The sha256 of each export file from earlier runs, with the size, mtime and inode it had then
# (pipelines/reuse.py: `file_digests`), so that an unchanged export is not read again.
DIGESTS_DDL = """
CREATE TABLE IF NOT EXISTS meta.export_file_digests (
    source VARCHAR,
    file_path VARCHAR,
    size_bytes BIGINT,
    mtime_ns BIGINT,
    inode BIGINT,
    sha256 VARCHAR,
    hashed_at_ns BIGINT,
    PRIMARY KEY (source, file_path)
)
"""
# A file modified less than this before its hash was taken is hashed again next time: a
# second write in the same timestamp tick (2 s on FAT, coarse clocks elsewhere) could leave
# size and mtime as they were (git's "racily clean" rule).
RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class FileDigest:
    path: str  # relative to the export folder, POSIX separators
    size: int
    mtime_ns: int
    inode: int
    sha256: str
    hashed_at_ns: int  # when the hash was taken (time.time_ns(), before reading)

    def still_holds(self, stat: os.stat_result) -> bool:
        """True when the file looks untouched since this digest was taken: same size, mtime
        (nanoseconds) and inode, and it was not modified just before it was hashed."""
        return (self.size, self.mtime_ns, self.inode) == (
            stat.st_size,
            stat.st_mtime_ns,
            stat.st_ino,
        ) and self.mtime_ns < self.hashed_at_ns - RACY_NS


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(
    source: Path,
    known: dict[str, FileDigest] | None = None,
    loaded_sizes: dict[str, int] | None = None,
) -> list[FileDigest]:
    """The digest of every file under the export, sorted by path. A file whose size, mtime
    and inode are those `known` recorded (and not racily so) keeps its recorded sha256
    without being read; any other file is read in full and hashed, a few at a time.

    The hash is the ingest's digest (pipelines/ingest/digests.py: sha256, line statistics
    and, for a file that grew, the sha256 of its first bytes up to the size the ingest last
    loaded, in one read), so that within a study run the ingest that follows reads no file a
    second time. `loaded_sizes` (relative path -> size at the last load,
    pipelines/ingest/landing.py `previous_sizes`) gives that size; without it, the size this
    folder's file had when last hashed (the same, unless the export moved to another folder
    or was loaded by `redflags ingest` alone)."""
    from pipelines.ingest.digests import file_digest

    source, known, loaded_sizes = Path(source), known or {}, loaded_sizes or {}
    found = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative, stat = path.relative_to(source).as_posix(), path.stat()
        old = known.get(relative)
        found.append(
            (path, relative, stat, old if old is not None and old.still_holds(stat) else None, old)
        )

    def digest(entry: tuple) -> FileDigest:
        path, relative, stat, kept, old = entry
        if kept is not None:
            return kept
        hashed_at = time.time_ns()
        # where an appended-to file's old bytes end: the prefix the ingest's append check asks
        prefix = loaded_sizes.get(relative, old.size if old is not None else 0)
        sha = file_digest(path, prefix).sha256
        return FileDigest(relative, stat.st_size, stat.st_mtime_ns, stat.st_ino, sha, hashed_at)

    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL
        return list(pool.map(digest, found))


def export_digest(source: Path) -> list[tuple[str, int, str]]:
    """(relative path, size, sha256) of every file under the export, sorted, every file read:
    any added, removed or changed file (a single row) changes it, whatever the source layout."""
    return [(d.path, d.size, d.sha256) for d in file_digests(source)]


def loaded_file_sizes(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The size of each export file at the warehouse's last load (empty before the first):
    the prefix the ingest will hash a grown file up to, whatever folder it was loaded from."""
    from pipelines.ingest.landing import previous_sizes
    from pipelines.warehouse import table_exists

    return previous_sizes(con) if table_exists(con, "landing", "files") else {}


def known_digests(con: duckdb.DuckDBPyConnection, source: Path) -> dict[str, FileDigest]:
    """The digests earlier runs recorded for the files of this export folder."""
    con.execute(DIGESTS_DDL)
    rows = con.execute(
        "SELECT file_path, size_bytes, mtime_ns, inode, sha256, hashed_at_ns"
        " FROM meta.export_file_digests WHERE source = ?",
        [_source_key(source)],
    ).fetchall()
    return {r[0]: FileDigest(*r) for r in rows}


def save_digests(con: duckdb.DuckDBPyConnection, source: Path, digests: list[FileDigest]) -> None:
    """Replace the recorded digests of this export folder by `digests` (files gone from the
    export are forgotten)."""
    key = _source_key(source)
    con.execute("BEGIN")
    con.execute("DELETE FROM meta.export_file_digests WHERE source = ?", [key])
    con.executemany(
        "INSERT INTO meta.export_file_digests VALUES (?, ?, ?, ?, ?, ?, ?)",
        [[key, d.path, d.size, d.mtime_ns, d.inode, d.sha256, d.hashed_at_ns] for d in digests],
    )
    con.execute("COMMIT")


def _source_key(source: Path) -> str:
    return str(Path(source).resolve())


def fingerprint(
    source: Path,
    settings: StudySettings,
    engine: str,
    source_format: str,
    digests: list[FileDigest] | None = None,
) -> str:
    """The hash of everything a run's published outputs depend on. `digests` are the
    export's file digests when already taken (`file_digests`); otherwise every file is read."""
    from pipelines.resources import code_version
    from pipelines.valuesets import value_set_hashes

    if digests is None:
        digests = file_digests(source)
    parts: dict[str, Any] = {
        "export": [(d.path, d.size, d.sha256) for d in digests],
        "settings": settings.as_dict(),
        "value_sets": value_set_hashes(),
        "code": code_version(),
        "engine": engine,
        "source_format": source_format,
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def reusable_run(con: duckdb.DuckDBPyConnection, run_id: str, print_: str) -> str | None:
    """The run whose published tables a run with fingerprint `print_` can keep, or None.

    That is the last run that ended as succeeded or reused (not this one), when it had the
    same fingerprint and every published table still carries the run that built them."""
    last = con.execute(
        "SELECT f.fingerprint, coalesce(f.reused_from, r.run_id) FROM meta.runs r"
        " JOIN meta.run_fingerprints f USING (run_id)"
        " WHERE r.status IN ('succeeded', 'reused') AND r.run_id <> ?"
        " ORDER BY r.started_at DESC LIMIT 1",
        [run_id],
    ).fetchone()
    if last is None or last[0] != print_:
        return None
    origin = last[1]
    return origin if published_by(con) == {origin} else None


# Published tables that keep rows of every run (pipelines/history.py), not only the last.
KEPT_ACROSS_RUNS = {("release", "run_history")}


def published_by(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The run ids found in the published tables (a run that failed after publishing, or a
    manual change, makes them differ from the last successful run's)."""
    from pipelines.warehouse import PUBLISHED_SCHEMAS, quote_identifier

    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_columns()"
        " WHERE schema_name IN ? AND column_name = 'run_id'",
        [list(PUBLISHED_SCHEMAS)],
    ).fetchall()
    ids: set[str] = set()
    for schema, table in tables:
        if (schema, table) in KEPT_ACROSS_RUNS:  # one row per earlier run: many run ids
            continue
        rows = con.execute(
            f"SELECT DISTINCT run_id FROM {quote_identifier(schema)}.{quote_identifier(table)}"
        ).fetchall()
        ids.update(r[0] for r in rows)
    return ids or {"<nothing published>"}


def try_reuse(
    run: Any,  # pipelines.study.RunResult (not imported: study imports this module)
    engine_run: EngineRun,
    source: Path,
    settings: StudySettings,
    source_format: str,
    *,
    force: bool,
    stage: Callable[..., Any],
) -> str | None:
    """Record this run's fingerprint; when the last run's published tables still hold, keep
    them, mark this run `reused` and return the id of the run that built them (the caller
    writes the report and Parquet again from that run). Otherwise return None: the caller
    runs the whole study (always when the engine's runs are not `reusable`)."""
    from pipelines.warehouse import run_connection

    if not engine_run.reusable:
        return None
    with run_connection(run.warehouse) as con:
        # Files unchanged in size, mtime and inode since an earlier run are not read again
        # (docs/operations.md, "An unchanged export"). Not a stage: the stages of a full run
        # stay those of docs/architecture.md.
        digests = file_digests(source, known_digests(con, source), loaded_file_sizes(con))
        save_digests(con, source, digests)
        print_ = fingerprint(source, settings, run.engine, source_format, digests)
        con.execute(FINGERPRINTS_DDL)
        origin = None if force else reusable_run(con, run.run_id, print_)
        con.execute(
            "INSERT INTO meta.run_fingerprints VALUES (?, ?, ?)", [run.run_id, print_, origin]
        )
        if origin is None:
            return None
        counts = con.execute(
            "SELECT output_row_counts FROM meta.runs WHERE run_id = ?", [origin]
        ).fetchone()[0]
    run.row_counts = json.loads(counts or "{}")
    stage("reuse", lambda: f"reused from run {origin}: nothing changed, published tables kept")
    run.status = "reused"
    return origin


def stale(report: Path | None, origin: str) -> Path | None:
    """The report to write for a reused run: None when the file is already the report of
    the run that built the published tables (it would differ only in that run's end time,
    recorded after its report was written)."""
    if report is None or not Path(report).is_file():
        return report
    mark = f'<tr><th scope="row">Run ID</th><td>{origin}</td></tr>'
    return None if mark in Path(report).read_text(encoding="utf-8", errors="replace") else report


def stale_parquet(parquet_dir: Path | None, origin: str) -> Path | None:
    """The Parquet folder to write for a reused run: None when it already holds the export of
    the run that built the published tables, whole (its manifest names that run for every
    table and figure, and every file it lists is there with the sha256 it recorded). Writing
    it again would give the same bytes at the cost of the figures' drawing (most of an
    unchanged re-run's time: docs/benchmark.md); a deleted or edited file is written again."""
    from pipelines.export import MANIFEST

    if parquet_dir is None:
        return None
    try:
        entries = json.loads((Path(parquet_dir) / MANIFEST).read_text(encoding="utf-8"))
        intact = bool(entries) and all(_entry_intact(Path(parquet_dir), e, origin) for e in entries)
    except (OSError, ValueError, TypeError, AttributeError):  # missing or unreadable: write it
        intact = False
    return None if intact else Path(parquet_dir)


# manifest keys naming a file -> the key of its sha256 (pipelines/export.py, report/figures.py)
MANIFEST_FILES = {"file": "sha256", "csv": "csv_sha256", "svg": "svg_sha256"}


def _entry_intact(folder: Path, entry: dict, origin: str) -> bool:
    if entry.get("run_id") != origin:
        return False
    for key, digest in MANIFEST_FILES.items():
        name = entry.get(key)
        if name is None:  # a figure shown as a notice in words has no file
            continue
        path = folder / name
        if not path.is_file() or sha256_of(path) != entry.get(digest):
            return False
    return True
