"""The one way to open the DuckDB warehouse."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipelines.errors import UserFacingError


class UserFacingValueError(UserFacingError, ValueError):
    """A setting from the environment that is not a valid value."""


SCHEMAS = ("raw", "meta", "staging", "intermediate", "mart", "release")

# DuckDB's memory budget (buffer manager); past it, DuckDB spills to `<warehouse>.tmp/`.
MEMORY_LIMIT_ENV = "REDFLAGS_MEMORY_LIMIT"
DEFAULT_MEMORY_FRACTION = 0.25  # of physical RAM (DuckDB's own default is 80%)
MIN_MEMORY_LIMIT_MB = 1024
# DuckDB 2.0 takes `\` for a path separator and `?` for the start of connection options in a
# database path (its write-ahead log then goes elsewhere): such a warehouse path is refused.
UNOPENABLE_CHARACTERS = "?\\"
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
            raise UserFacingValueError(
                f"{MEMORY_LIMIT_ENV}={configured!r}: expected a size such as 4GB or 800MB,"
                " or 'duckdb' for DuckDB's default"
            )
        return configured.replace(" ", "")
    total = _physical_memory_mb()
    if total is None:
        return None
    return f"{max(MIN_MEMORY_LIMIT_MB, int(total * DEFAULT_MEMORY_FRACTION))}MB"


# The ingest's budget when REDFLAGS_MEMORY_LIMIT is not set. The ingest streams each file into
# compressed row groups of a stored stage (docs/ingest.md, step 3); a larger budget only lets
# DuckDB keep blocks it already wrote: at 100k patients the ingest peaked at 2,431 MB RSS with
# the 6 GB default and at 1,619 MB with 1.5 GB, for the same CPU seconds (docs/benchmark.md,
# "Ingest memory: a stored stage").
INGEST_MEMORY_LIMIT_MB = 1536


def ingest_memory_limit() -> str | None:
    """The ingest's memory budget: REDFLAGS_MEMORY_LIMIT when set (the user's value wins),
    else the smaller of INGEST_MEMORY_LIMIT_MB and the default budget."""
    default = default_memory_limit()
    if os.environ.get(MEMORY_LIMIT_ENV, "").strip() or default is None:
        return default
    return f"{min(INGEST_MEMORY_LIMIT_MB, int(default.removesuffix('MB')))}MB"


def connect(
    warehouse: str | Path, *, read_only: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the warehouse file, with the project's schemas present.

    `memory_limit` (a DuckDB size, e.g. `2GB`) defaults to `default_memory_limit()`; DuckDB
    spills what does not fit to `<warehouse>.tmp/`."""
    path = Path(warehouse)
    bad = sorted(set(UNOPENABLE_CHARACTERS) & set(str(path)))
    if bad:
        raise UserFacingError(
            f"warehouse path {str(path)!r} contains {' '.join(bad)}, which DuckDB does not"
            " read as part of a file name; choose another path"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    # Settings are bound as parameters, never spliced into SQL: the warehouse path is user
    # input and may contain quotes (a path with `'` once ran the SQL after it). Not passed
    # as duckdb.connect(config=...): a second in-process connection to the same file with
    # another config is refused.
    memory_limit = memory_limit or default_memory_limit()
    if memory_limit:
        if not _SIZE.match(memory_limit):
            con.close()
            raise UserFacingValueError(
                f"memory_limit {memory_limit!r}: expected a size such as 4GB"
            )
        con.execute("SET memory_limit = ?", [memory_limit])
    if not read_only:
        con.execute("SET temp_directory = ?", [str(path.parent / (path.name + ".tmp"))])
        for schema in SCHEMAS:  # internal names (SCHEMAS above), not input
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


def quote_identifier(name: str) -> str:
    """A schema, table or column name as a quoted SQL identifier (`"` doubled inside)."""
    return '"' + str(name).replace('"', '""') + '"'


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    # fetchall, not fetchone: DuckDB 2.0 refuses other work on a connection whose result is
    # not read to the end (build_release asks for tables that may not exist last)
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
    )


class WarehouseBusyError(UserFacingError):
    """Another process (a run, an ingest, a demo) is writing into the warehouse."""


@contextmanager
def warehouse_lock(warehouse: str | Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold `<warehouse>.lock`; wait up to `wait_seconds`, then stop with a clear message.

    Every command that writes into the warehouse holds it for its whole duration, so an
    ingest cannot slip in between a run's stages (it once made a run publish another
    export's data). Not re-entrant: a caller that already holds it passes that on."""
    lock_path = Path(str(warehouse) + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")  # noqa: SIM115 (closed below, after the unlock)
    except OSError as exc:
        raise UserFacingError(
            f"cannot create the lock file {lock_path}: {exc.strerror or exc}"
            " (is the warehouse folder writable?)"
        ) from exc
    with handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise WarehouseBusyError(
                        f"another run is using {warehouse} ({holder}); wait for it to finish "
                        f"or pass --wait SECONDS"
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"pid {os.getpid()} since {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}"
        )
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# What a study run needs of the warehouse (the study and every engine use these: they live
# here, below both, so that neither imports the other).

# A run builds everything into `<schema>__build` and publishes it at the end (study.publish).
# The schemas a run publishes in one transaction (pipelines/study.py publish).
PUBLISHED_SCHEMAS = ("mart", "release", "dq")
BUILD_SUFFIX = "__build"


def open_for_run(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """Open the warehouse for writing, turning DuckDB's lock error into a clear message."""
    try:
        return connect(warehouse)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusyError(
                f"{warehouse} is open in another process (a run, a notebook or a dashboard); "
                "close it and try again"
            ) from exc
        raise


@contextmanager
def run_connection(warehouse: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """`open_for_run` as a context manager: one connection per step, always closed."""
    con = open_for_run(Path(warehouse))
    try:
        yield con
    finally:
        con.close()


def tables_in(con: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    """The base tables of one schema, sorted by name."""
    return [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ? ORDER BY table_name",
            [schema],
        ).fetchall()
    ]


def drop_schema(con: duckdb.DuckDBPyConnection, schema: str) -> None:
    con.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")


# A schema or table name the statistics put into SQL: lowercase letters, digits, underscores.
_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def plain_name(name: str) -> str:
    """`name` itself when it is a plain lowercase identifier; ValueError otherwise."""
    if not _PLAIN_NAME.match(name):
        raise ValueError(f"not a plain schema name: {name!r}")
    return name


def write_table(con: duckdb.DuckDBPyConnection, schema: str, name: str, frame, run_id: str) -> int:
    """CREATE OR REPLACE {schema}.{name} from a pandas frame, with run_id on every row."""
    out = frame.drop(columns=["run_id"], errors="ignore").assign(run_id=run_id)
    view = f"_redflags_{name}"
    con.register(view, out)
    try:
        con.execute(f"create schema if not exists {plain_name(schema)}")
        con.execute(
            f"create or replace table {plain_name(schema)}.{plain_name(name)} as select * from {view}"
        )
    finally:
        con.unregister(view)
    return len(out)
