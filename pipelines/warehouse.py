"""The one way to open the DuckDB warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

SCHEMAS = ("raw", "meta", "staging", "intermediate", "mart", "release")


def connect(
    warehouse: str | Path, *, read_only: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the warehouse file, with the project's schemas present."""
    path = Path(warehouse)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if not read_only:
        tmp = path.parent / (path.name + ".tmp")
        con.execute(f"SET temp_directory = '{tmp}'")
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    return con


@contextmanager
def open_warehouse(
    warehouse: str | Path, *, read_only: bool = False
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Context-managed connection that is always closed."""
    con = connect(warehouse, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )
