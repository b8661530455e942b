"""What a dashboard reads from a warehouse, for tests that compare runs."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.study import PUBLISHED_SCHEMAS

# The run history lists every run by design (pipelines/history.py): runs that end with the
# same tables differ there, so comparisons of "the same tables" leave it out.
HISTORY = "release.run_history"


def snapshot(warehouse: Path, schemas=PUBLISHED_SCHEMAS) -> dict[str, list[tuple]]:
    """Every published table's rows, sorted, without run_id: what a dashboard would read
    (the run history aside)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        out = {}
        for schema, table in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE schema_name IN ?"
            " ORDER BY ALL",
            [list(schemas)],
        ).fetchall():
            if f"{schema}.{table}" == HISTORY:
                continue
            columns = [
                d[0] for d in con.execute(f'SELECT * FROM {schema}."{table}" LIMIT 0').description
            ]
            select = "* EXCLUDE (run_id)" if "run_id" in columns else "*"
            out[f"{schema}.{table}"] = con.execute(
                f'SELECT {select} FROM {schema}."{table}" ORDER BY ALL'
            ).fetchall()
        return out
    finally:
        con.close()
