"""Spec-test helpers: raw tables in, study tables out, both written as pipe-separated text.

    con = build_study(
        patients='''
            patient_id | birth_date | sex
            p1         | 1960-05-01 | F
        ''',
        conditions='''...''',
        absent=["medications"],
    )
    assert_rows(con, "select patient_id, index_date from mart.cohort", '''
        patient_id | index_date
        p1         | 2016-03-01
    ''')

Every raw table is created empty first (`pipelines.schema.create_table_sql`), and
`meta.source_tables` says which optional tables are present (all but `absent`). An empty
cell is NULL. Expected values compare as text: dates ISO, booleans true/false, NULL ''.

The models are built by the engine the test runs on (`use_engine`, set by the `engine`
fixture of tests/conftest.py for every spec test that builds a study; docs/testing.md):
DuckDB by default, or another engine (tests/spec_engines.py) whose model tables are copied
back into the returned DuckDB connection.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import duckdb

from pipelines import schema
from pipelines.models import build_models
from pipelines.settings import StudySettings


def parse_table(text: str) -> tuple[list[str], list[list[str | None]]]:
    """Header and rows of a pipe-separated text table; empty cells are None."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    header = [c.strip() for c in lines[0].split("|")]
    rows = []
    for line in lines[1:]:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, header has {len(header)}: {line!r}")
        rows.append([c or None for c in cells])
    return header, rows


def create_raw_tables(
    con: duckdb.DuckDBPyConnection, absent: Iterable[str] = (), **tables: str
) -> None:
    """Create every raw table (empty), insert the given text tables, write meta.source_tables."""
    absent = set(absent)
    unknown = (set(tables) | absent) - set(schema.TABLES)
    if unknown:
        raise ValueError(f"unknown raw tables {sorted(unknown)}")
    if absent & set(tables):
        raise ValueError(f"tables both given and absent: {sorted(absent & set(tables))}")
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    for name in schema.TABLES:
        con.execute(schema.create_table_sql(name))
    for name, text in tables.items():
        header, rows = parse_table(text)
        types = {c.name: c.type for c in schema.TABLES[name].columns}
        bad = [c for c in header if c not in types]
        if bad:
            raise ValueError(f"{name}: unknown columns {bad}")
        values = ", ".join(f"CAST(? AS {types[c]})" for c in header)
        con.executemany(f"INSERT INTO raw.{name} ({', '.join(header)}) VALUES ({values})", rows)
    con.execute(
        "CREATE OR REPLACE TABLE meta.source_tables (table_name VARCHAR, is_required BOOLEAN, "
        "is_present BOOLEAN, n_files INTEGER, n_rows BIGINT, note VARCHAR)"
    )
    for name, table in schema.TABLES.items():
        present = name not in absent
        n_rows = con.execute(f"SELECT count(*) FROM raw.{name}").fetchone()[0]
        con.execute(
            "INSERT INTO meta.source_tables VALUES (?, ?, ?, ?, ?, ?)",
            [name, table.required, present, int(present), n_rows, "" if present else "file absent"],
        )


_engine = ["duckdb"]  # the engine build_study builds on (set by use_engine)


@contextmanager
def use_engine(name: str) -> Iterator[None]:
    """build_study builds on engine `name` inside this block."""
    _engine.append(name)
    try:
        yield
    finally:
        _engine.pop()


def build_study(
    settings: StudySettings | None = None, *, absent: Iterable[str] = (), **tables: str
) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse with these raw tables and every model built (on the engine
    of `use_engine`)."""
    settings = settings or StudySettings()
    if _engine[-1] != "duckdb":
        from spec_engines import build_on_engine

        return build_on_engine(
            _engine[-1], settings, lambda con: create_raw_tables(con, absent, **tables)
        )
    con = duckdb.connect()
    create_raw_tables(con, absent, **tables)
    build_models(con, settings)
    return con


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal | float):
        return format(value, "g")
    return str(value)


def query_text(con: duckdb.DuckDBPyConnection, sql: str) -> list[list[str]]:
    """Rows of a query, every value as text (see as_text)."""
    return [[as_text(v) for v in row] for row in con.execute(sql).fetchall()]


def assert_rows(con: duckdb.DuckDBPyConnection, sql: str, expected: str) -> None:
    """The query returns exactly the expected rows (any order); the header names its columns."""
    header, rows = parse_table(expected)
    cursor = con.execute(sql)
    columns = [d[0] for d in cursor.description]
    assert columns == header, f"columns {columns} != expected {header}"
    actual = sorted([as_text(v) for v in row] for row in cursor.fetchall())
    assert actual == sorted([c or "" for c in row] for row in rows)


def builds_a_study(function: Any, module: Any, fixtures: Iterable[str] = ()) -> bool:
    """Whether a test calls build_study: in its own code, or in a function or fixture of
    its module that it names (followed through), so that only these tests run once per
    engine (the others would run the same DuckDB-free code twice)."""
    seen, todo = set(), [function, *(getattr(module, f, None) for f in fixtures)]
    while todo:
        item = todo.pop()
        item = getattr(item, "__wrapped__", item)  # a fixture's own function
        unwrap = getattr(item, "_get_wrapped_function", None)  # pytest 8.4's fixture object
        item = unwrap() if unwrap else item
        code = getattr(item, "__code__", item)
        if not hasattr(code, "co_names") or id(code) in seen:
            continue
        seen.add(id(code))
        if "build_study" in code.co_names:
            return True
        todo.extend(c for c in code.co_consts if hasattr(c, "co_names"))  # nested functions
        todo.extend(getattr(module, n) for n in code.co_names if callable(getattr(module, n, None)))
    return False
