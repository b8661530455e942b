"""The ingest's entry point, `ingest_export`: discover the export, land the patients files,
then update raw and meta in one transaction guarded by the row-count checks
(pipelines/guards.py), and summarise.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipelines import schema
from pipelines import warehouse as wh
from pipelines.ingest.discover import discover_export
from pipelines.ingest.landing import sync_landing
from pipelines.ingest.summary import (
    IngestSummary,
    file_notes,
    quarantine_counts,
    write_source_tables,
)
from pipelines.ingest.tables import Log, Transaction, ensure_tables
from pipelines.ingest.update import update_raw


def ingest_export(
    source: Path,
    warehouse: Path,
    *,
    log: Log = print,
    accept_shrink: bool = False,
    lock: bool = True,
    wait_seconds: float = 0.0,
) -> IngestSummary:
    """Load (or incrementally update) raw.* from the export folder; see the package docstring
    (pipelines/ingest/__init__.py).

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
    with held, wh.open_warehouse(warehouse, memory_limit=wh.ingest_memory_limit()) as con:
        ensure_tables(con)
        changes = sync_landing(con, export, log)
        with Transaction(con):
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
            quarantined=quarantine_counts(con),
            files_loaded=changes.loaded,
            files_skipped=changes.skipped,
            files_removed=changes.removed,
            tables_updated=updated,
            absent_tables=[t for t in schema.OPTIONAL_TABLES if t not in export.tables_present()],
            ignored_files=export.ignored,
            notes=export.notes + file_notes(con),
        )
    summary.seconds = time.perf_counter() - started
    return summary
