"""Reading the release: the release tables of one run, its record in `meta.runs` and its
data-quality profile (`dq.data_quality_profile`), as one `Released`. The only part of the
report that touches the warehouse; nothing here reads `mart.*` or row-level data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.report.text import Released, none_if_na, parse_json

if TYPE_CHECKING:
    import duckdb
    import pandas as pd


def load_released(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> Released:
    """Read the release tables of one run, and that run's record from meta.runs."""
    from pipelines.errors import UserFacingError
    from pipelines.settings import StudySettings
    from pipelines.warehouse import tables_in

    present = tables_in(con, "release")
    if not present:
        raise UserFacingError(
            "the warehouse has no release tables yet: run the study first (redflags run)"
        )
    released_ids = _released_run_ids(con, present)
    runs = _runs(con)
    if run_id is None:
        candidates = [r for r in runs if not released_ids or r["run_id"] in released_ids]
        run_id = candidates[0]["run_id"] if candidates else max(released_ids, default=None)
    elif released_ids and run_id not in released_ids:
        raise UserFacingError(
            f"run {run_id} has no release tables; released: {', '.join(sorted(released_ids))}"
        )
    tables = {t: _read_release(con, t, run_id) for t in present}
    run = next((r for r in runs if r["run_id"] == run_id), {})
    params = parse_json(run.get("parameters")) or {}
    min_cell = int(params.get("min_cell", StudySettings().min_cell))
    params = params if isinstance(params, dict) else {}
    return Released(tables, run, run_id, min_cell, params, quality=_read_quality(con, run_id))


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?"
        " ORDER BY column_index",
        [schema, table],
    ).fetchall()
    return [r[0] for r in rows]


def _released_run_ids(con: duckdb.DuckDBPyConnection, tables: list[str]) -> set[str]:
    ids: set[str] = set()
    for t in tables:
        # run_history lists every earlier run too (pipelines/history.py): not this release's
        if t != "run_history" and "run_id" in _columns(con, "release", t):
            rows = con.execute(f'SELECT DISTINCT run_id FROM release."{t}"').fetchall()
            ids.update(r[0] for r in rows if r[0] is not None)
    return ids


def _runs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    from pipelines.warehouse import table_exists

    if not table_exists(con, "meta", "runs"):
        return []
    df = con.execute("SELECT * FROM meta.runs ORDER BY started_at DESC NULLS LAST").df()
    return [{k: none_if_na(v) for k, v in row.items()} for row in df.to_dict("records")]


def _read_release(con: duckdb.DuckDBPyConnection, table: str, run_id: str | None) -> pd.DataFrame:
    if run_id is not None and "run_id" in _columns(con, "release", table):
        return con.execute(f'SELECT * FROM release."{table}" WHERE run_id = ?', [run_id]).df()
    return con.execute(f'SELECT * FROM release."{table}"').df()


def _read_quality(con: duckdb.DuckDBPyConnection, run_id: str | None) -> pd.DataFrame | None:
    """The run's data-quality profile: one row per input check, counts only (no values)."""
    from pipelines.warehouse import tables_in

    if "data_quality_profile" not in tables_in(con, "dq"):
        return None
    return con.execute(
        "SELECT * FROM dq.data_quality_profile WHERE run_id = ? OR ? IS NULL"
        " ORDER BY table_name, check_name, column_name",
        [run_id, run_id],
    ).df()
