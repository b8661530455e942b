"""Where a file's rows wait between the parse and raw (issue 16). From 2026-12-07 the stage
was a temporary table, which DuckDB keeps uncompressed in memory: at 100k patients the
observations file alone (21M rows) filled DuckDB's whole budget (6 GB peak RSS, against
1.4 GB for a plain load of the export). The stage is now a table of the warehouse, created
and dropped inside the update transaction: DuckDB writes its full row groups compressed
ahead of COMMIT, so its memory does not grow with the file. A peak-RSS bound would need an
export of gigabytes to tell the two apart; DuckDB's own accounting of the memory held by
in-memory (temporary) tables tells them apart on a file of a few row groups, deterministically."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from recording import wrap_ingest_connections

from pipelines.generator import generate
from pipelines.ingest import ingest_export

ROWS = 400_000  # more than three of DuckDB's row groups (122,880 rows)


class SamplingConnection:
    """A real DuckDB connection that, before every statement (so after the one before it;
    sampling after would replace the statement's result), notes the bytes DuckDB holds in
    in-memory (temporary) tables and where the staging table lives."""

    def __init__(self, con) -> None:
        self._con = con
        self.peak_in_memory_tables = 0
        self.stage_tables: set[tuple[str, str, bool]] = set()

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def execute(self, sql: str, params=None):
        in_memory = self._con.execute(
            "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
            " WHERE tag = 'IN_MEMORY_TABLE'"
        ).fetchone()[0]
        self.peak_in_memory_tables = max(self.peak_in_memory_tables, in_memory)
        self.stage_tables |= set(
            self._con.execute(
                "SELECT database_name, schema_name, temporary FROM duckdb_tables()"
                " WHERE table_name = 'ingest_stage'"
            ).fetchall()
        )
        return self._con.execute(sql, params) if params is not None else self._con.execute(sql)


def _big_observations(export: Path) -> int:
    """observations.csv rewritten as ROWS distinct lines of its own rows (each a new time
    stamp, so no line is a duplicate and every patient is known); returns its size."""
    path = export / "observations.csv"
    header, *lines = path.read_text().splitlines()
    start = datetime(2001, 1, 1)
    with path.open("w") as out:
        out.write(header + "\n")
        for i in range(ROWS):
            fields = lines[i % len(lines)].split(",", 1)
            stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.write(f"{stamp},{fields[1]}\n")
    return path.stat().st_size


def test_the_stage_is_compressed_in_the_warehouse_not_held_in_memory(tmp_path, monkeypatch):
    export = tmp_path / "export"
    generate(export, patients=40, seed=11)
    size = _big_observations(export)
    sampled = wrap_ingest_connections(monkeypatch, SamplingConnection)
    summary = ingest_export(export, tmp_path / "w.duckdb", log=lambda _m: None)
    (con,) = sampled

    assert summary.table_rows["observations"] == ROWS  # every row loaded, none quarantined
    # the stage is a table of the warehouse (not DuckDB's temp database), and gone after
    assert con.stage_tables == {("w", "raw", False)}, con.stage_tables
    # a temporary stage held the whole file in memory, uncompressed: 1.5x the CSV's bytes
    # here (measured: 92 MB for this 62 MB file); with the stored stage what is left there
    # (the checks' small temporary tables, DuckDB's buffers) measured 5 MB
    assert con.peak_in_memory_tables < size / 4, (con.peak_in_memory_tables, size)
