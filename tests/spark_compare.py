"""Compare the Spark engine's Parquet output with DuckDB tables, row by row (test helpers
for tests/integration/test_spark_engine.py and tests/integration/test_spark_study.py; not part of the product)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from pathlib import Path
from typing import Any

import duckdb

from pipelines.engines.spark.execution import parquet_glob
from pipelines.models import model_graph

_FAMILIES = {
    "boolean": ("BOOLEAN",),
    "integer": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"),
    "number": ("FLOAT", "DOUBLE", "DECIMAL"),
    "text": ("VARCHAR",),
    "date": ("DATE",),
    "timestamp": ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "TIMESTAMP WITH TIME ZONE"),
}  # fmt: skip


def _family(duckdb_type: str) -> str:
    """Type family compared across engines (Spark writes INT where DuckDB has BIGINT, etc.)."""
    name = re.sub(r"\(.*", "", duckdb_type).upper()
    return next((family for family, names in _FAMILIES.items() if name in names), name.lower())


def _normalize(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_normalize(v) for v in value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, str(type(v)), v if v is not None else 0) for v in row)


def _values_differ(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, float) and isinstance(b, float | int):
        return not math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(b, float) and isinstance(a, int):
        return not math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    return a != b


def _fetch(con: duckdb.DuckDBPyConnection, query: str) -> tuple[list[str], list[str], list[tuple]]:
    """Column names, DuckDB type names and rows of a query."""
    rel = con.sql(query)
    names, types = rel.columns, [str(t) for t in rel.types]
    return names, types, con.execute(query).fetchall()


def compare_table(con: duckdb.DuckDBPyConnection, duckdb_table: str, parquet_folder: Path,
                  tolerance: float = 1e-9, max_examples: int = 5) -> list[str]:  # fmt: skip
    """Differences between a DuckDB table and a Spark Parquet folder (empty when equal)."""
    duck_names, duck_types, duck_rows = _fetch(con, f"SELECT * FROM {duckdb_table}")
    spark_names, spark_types, spark_rows = _fetch(
        con, f"SELECT * FROM read_parquet('{parquet_glob(parquet_folder)}')"
    )
    if duck_names != spark_names:
        return [f"columns differ: duckdb {duck_names} vs spark {spark_names}"]
    problems = [
        f"column {name}: duckdb {d} vs spark {s}"
        for name, d, s in zip(duck_names, duck_types, spark_types, strict=True)
        if _family(d) != _family(s)
    ]
    float_columns = [i for i, t in enumerate(duck_types) if _family(t) == "number"]
    order = [i for i in range(len(duck_names)) if i not in float_columns] + float_columns
    duck_rows, spark_rows = ([tuple(_normalize(r[i]) for i in order) for r in rows]
                             for rows in (duck_rows, spark_rows))  # fmt: skip
    if len(duck_rows) != len(spark_rows):
        only_duck = sorted(set(duck_rows) - set(spark_rows), key=_sort_key)[:max_examples]
        only_spark = sorted(set(spark_rows) - set(duck_rows), key=_sort_key)[:max_examples]
        return problems + [f"{len(duck_rows)} rows in duckdb, {len(spark_rows)} on spark;"
                           f" only in duckdb {only_duck}; only on spark {only_spark}"]  # fmt: skip
    names = [duck_names[i] for i in order]
    for d_row, s_row in zip(
        sorted(duck_rows, key=_sort_key), sorted(spark_rows, key=_sort_key), strict=True
    ):
        bad = [
            n
            for n, a, b in zip(names, d_row, s_row, strict=True)
            if _values_differ(a, b, tolerance)
        ]
        if bad:
            problems.append(f"row differs in {bad}: duckdb {d_row} vs spark {s_row}")
            if len(problems) >= max_examples:
                break
    return problems


def compare_with_duckdb(
    parquet_dir: Path,
    duckdb_con: duckdb.DuckDBPyConnection,
    tolerance: float = 1e-9,
    duckdb_schema: str = "mart",
) -> dict[str, list[str]]:
    """Compare every mart model's table in DuckDB with `<parquet_dir>/<table>/` from Spark.

    Returns table -> differences; only tables that differ are listed (empty dict: equal).
    parquet_dir is the Spark run's `out_dir/mart`."""
    differences = {}
    for model in model_graph():
        if model.schema != "mart":
            continue
        folder = Path(parquet_dir) / model.name
        if not folder.is_dir():
            differences[model.name] = [f"no Spark output at {folder}"]
            continue
        found = compare_table(duckdb_con, f"{duckdb_schema}.{model.name}", folder, tolerance)
        if found:
            differences[model.name] = found
    return differences
