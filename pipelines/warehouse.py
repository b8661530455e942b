"""The one way to open the DuckDB warehouse."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

SCHEMAS = ("raw", "meta", "staging", "intermediate", "mart", "release")

# DuckDB's memory budget (buffer manager); past it, DuckDB spills to `<warehouse>.tmp/`.
MEMORY_LIMIT_ENV = "REDFLAGS_MEMORY_LIMIT"
DEFAULT_MEMORY_FRACTION = 0.25  # of physical RAM (DuckDB's own default is 80%)
MIN_MEMORY_LIMIT_MB = 1024
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.I)


def _physical_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_limit() -> str | None:
    """The memory budget the pipeline gives DuckDB: env REDFLAGS_MEMORY_LIMIT (a DuckDB size
    such as `4GB`, or `duckdb` for DuckDB's own default), else 25% of physical RAM (at
    least 1 GB). None means DuckDB's default."""
    configured = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if configured.lower() == "duckdb":
        return None
    if configured:
        if not _SIZE.match(configured):
            raise ValueError(
                f"{MEMORY_LIMIT_ENV}={configured!r}: expected a size such as 4GB or 800MB,"
                " or 'duckdb' for DuckDB's default"
            )
        return configured.replace(" ", "")
    total = _physical_memory_mb()
    if total is None:
        return None
    return f"{max(MIN_MEMORY_LIMIT_MB, int(total * DEFAULT_MEMORY_FRACTION))}MB"


def connect(
    warehouse: str | Path, *, read_only: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the warehouse file, with the project's schemas present.

    `memory_limit` (a DuckDB size, e.g. `2GB`) defaults to `default_memory_limit()`; DuckDB
    spills what does not fit to `<warehouse>.tmp/`."""
    path = Path(warehouse)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    memory_limit = memory_limit or default_memory_limit()
    if memory_limit:
        if not _SIZE.match(memory_limit):
            con.close()
            raise ValueError(f"memory_limit {memory_limit!r}: expected a size such as 4GB")
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if not read_only:
        tmp = path.parent / (path.name + ".tmp")
        con.execute(f"SET temp_directory = '{tmp}'")
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    return con


@contextmanager
def open_warehouse(
    warehouse: str | Path, *, read_only: bool = False, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Context-managed connection that is always closed."""
    con = connect(warehouse, read_only=read_only, memory_limit=memory_limit)
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
