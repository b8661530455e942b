"""The fast path of the data contracts: a suite's expectations evaluated in DuckDB SQL.

Great Expectations runs each expectation as its own metric queries (two or three per
expectation, through SQLAlchemy), and its import and context set-up alone take seconds. Here
every column expectation of a table becomes an aggregate of ONE query over the table
(`count(*) FILTER (WHERE ...)`: its unexpected and non-null counts), every SQL expectation a
scalar subquery of one more query, and the table-level ones (columns, types) a look at the
catalog. The result of each is shaped like a GX validation result, with GX's own success
rule (`mostly` over the non-null rows), so `contracts._check` turns both into the same
`Check`.

The GX suites stay the declaration: this module only reads them. It returns None for an
expectation it cannot express exactly (an unknown type, an unknown kwarg, a parameter it does
not have, a type pair it does not know); contracts.py hands those, and every check that is
not a plain pass, to GX, so every warning and failure keeps GX's result and message.
tests/integration/test_contracts_fast.py proves the two agree on every expectation type the suites use,
on passing data and on planted failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb

# GX's type names (as duckdb-engine reports DuckDB's columns) -> the DuckDB types that pass.
# Only pairs GX accepts; any other pair is left to GX, which names the observed type.
_TYPES = {
    "String": {"VARCHAR"},
    "DATE": {"DATE"},
    "TIMESTAMP": {"TIMESTAMP"},
    "BigInteger": {"BIGINT"},
}
# The kwargs each expectation type may carry to be evaluated here (any other: GX).
_MAP_KWARGS = {
    "expect_column_values_to_not_be_null": {"column", "mostly"},
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "mostly"},
    "expect_column_values_to_be_in_set": {"column", "value_set", "mostly"},
    "expect_column_values_to_be_unique": {"column", "mostly"},
    "expect_column_pair_values_a_to_be_greater_than_b": {
        "column_A", "column_B", "or_equal", "ignore_row_if", "mostly",
    },
    "expect_compound_columns_to_be_unique": {"column_list", "mostly"},
}  # fmt: skip
_TABLE_KWARGS = {
    "expect_table_columns_to_match_set": {"column_set", "exact_match"},
    "expect_column_to_exist": {"column"},
    "expect_column_values_to_be_of_type": {"column", "type_"},
    "unexpected_rows_expectation": {"unexpected_rows_query"},
}


@dataclass(frozen=True)
class Config:
    """The parts of a GX ExpectationConfiguration that contracts._check reads."""

    type: str
    kwargs: Mapping[str, Any]
    meta: Mapping[str, Any] | None = None
    description: str | None = None


@dataclass(frozen=True)
class Result:
    """Shaped like GX's ExpectationValidationResult (what contracts._check reads)."""

    expectation_config: Config
    success: bool
    result: dict[str, Any] = field(default_factory=dict)
    exception_info: dict | None = None


def config_of(expectation: Mapping[str, Any]) -> Config:
    return Config(
        expectation["type"],
        dict(expectation.get("kwargs") or {}),
        expectation.get("meta"),
        expectation.get("description"),
    )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    """GX's rule (expectation._mostly_success); nothing considered is vacuously true."""
    if considered == 0:
        return True
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


class _Query:
    """The aggregates of one scan of a table, with their parameters (values never in SQL)."""

    def __init__(self, table: str) -> None:
        self.table = table  # the quoted `schema.table`, for subqueries over it
        self.columns: list[str] = []
        self.params: dict[str, Any] = {}

    def add(self, sql: str) -> int:
        self.columns.append(sql)
        return len(self.columns) - 1

    def param(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"


def evaluate(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    table: str,
    expectations: list[Mapping[str, Any]],
    parameters: Mapping[str, Any] | None = None,
) -> list[Result | None]:
    """One result per expectation of `<schema>.<table>` (which must exist), None where only
    GX can say. Two queries: the column aggregates in one scan, the SQL expectations as
    scalar subqueries of another."""
    parameters = parameters or {}
    name = f"{_quote(schema)}.{_quote(table)}"
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM duckdb_columns()"
            " WHERE schema_name = ? AND table_name = ? AND database_name = current_database()"
            " ORDER BY column_index",
            [schema, table],
        ).fetchall()
    )
    scan = _Query(name)
    rows_at = scan.add("count(*)")
    plans: list[Any] = []
    for expectation in expectations:
        config = config_of(expectation)
        try:
            plans.append(_plan(config, scan, types, parameters))
        except _NotHere:
            plans.append(None)
    values = con.execute(f"SELECT {', '.join(scan.columns)} FROM {name}", scan.params).fetchone()
    rows = int(values[rows_at])
    counts = _sql_counts(con, name, [p for p in plans if isinstance(p, _SqlPlan)])
    results: list[Result | None] = []
    for expectation, plan in zip(expectations, plans, strict=True):
        config = config_of(expectation)
        if plan is None:
            results.append(None)
        elif isinstance(plan, _SqlPlan):
            count = counts.get(id(plan))
            results.append(
                None if count is None else Result(config, count == 0, {"observed_value": count})
            )
        else:
            results.append(plan(values, rows, config))
    return results


class _NotHere(Exception):
    """This expectation is left to GX."""


@dataclass(frozen=True)
class _SqlPlan:
    query: str


def _resolve(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        if set(value) != {"$PARAMETER"} or value["$PARAMETER"] not in parameters:
            raise _NotHere
        return parameters[value["$PARAMETER"]]
    return value


def _column(kwargs: Mapping[str, Any], key: str, types: Mapping[str, str]) -> str:
    column = kwargs.get(key)
    if not isinstance(column, str) or column not in types:
        raise _NotHere  # GX reports a missing column its own way
    return column


def _plan(config: Config, scan: _Query, types: Mapping[str, str], parameters) -> Any:
    kind, kwargs = config.type, config.kwargs
    allowed = _MAP_KWARGS.get(kind) or _TABLE_KWARGS.get(kind)
    if allowed is None or not set(kwargs) <= allowed:
        raise _NotHere
    if kind in _TABLE_KWARGS:
        return _table_plan(config, types)
    mostly = _resolve(kwargs.get("mostly", 1.0), parameters)
    if isinstance(mostly, bool) or not isinstance(mostly, int | float) or not 0 <= mostly <= 1:
        raise _NotHere
    if kind == "expect_column_values_to_not_be_null":
        c = _quote(_column(kwargs, "column", types))
        at = scan.add(f"count(*) - count({c})")

        def not_null(values, rows, config):
            unexpected = int(values[at])
            success = True if rows == 0 else (rows - unexpected) / rows >= mostly
            return Result(config, success, {"element_count": rows, "unexpected_count": unexpected})

        return not_null
    if kind == "expect_column_pair_values_a_to_be_greater_than_b":
        if kwargs.get("ignore_row_if") != "either_value_is_missing":
            raise _NotHere  # GX's other modes count rows with a missing value
        a = _quote(_column(kwargs, "column_A", types))
        b = _quote(_column(kwargs, "column_B", types))
        op = ">=" if _resolve(kwargs.get("or_equal"), parameters) else ">"
        both = f"{a} IS NOT NULL AND {b} IS NOT NULL"
        considered = scan.add(f"count(*) FILTER (WHERE {both})")
        unexpected = scan.add(f"count(*) FILTER (WHERE {both} AND NOT ({a} {op} {b}))")
        return _map_result(considered, unexpected, mostly)
    if kind == "expect_compound_columns_to_be_unique":
        columns = kwargs.get("column_list")
        if not isinstance(columns, list) or not columns:
            raise _NotHere
        quoted = [_quote(_column({"c": c}, "c", types)) for c in columns]
        any_null = " OR ".join(f"{c} IS NULL" for c in quoted)
        # GX ignores rows where all are missing; rows with some missing are left to GX
        partial = scan.add(f"count(*) FILTER (WHERE {any_null})")
        group = ", ".join(quoted)
        duplicated = scan.add(
            f"(SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {scan.table}"
            f" GROUP BY {group} HAVING count(*) > 1))"
        )
        return _map_result(None, duplicated, mostly, refuse_if=partial)
    c = _quote(_column(kwargs, "column", types))
    column_type = types[kwargs["column"]]
    nonnull = scan.add(f"count({c})")
    if kind == "expect_column_values_to_be_unique":
        duplicated = scan.add(
            f"(SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {scan.table}"
            f" WHERE {c} IS NOT NULL GROUP BY {c} HAVING count(*) > 1))"
        )
        return _map_result(nonnull, duplicated, mostly)
    if kind == "expect_column_values_to_be_between":
        low = _resolve(kwargs.get("min_value"), parameters)
        high = _resolve(kwargs.get("max_value"), parameters)
        if low is None and high is None:
            raise _NotHere
        outside = []
        for value, op in ((low, "<"), (high, ">")):
            if value is None:
                continue
            if isinstance(value, str):  # a date parameter: compared as the column's type
                if column_type not in ("DATE", "TIMESTAMP"):
                    raise _NotHere
                outside.append(f"{c} {op} CAST({scan.param(value)} AS {column_type})")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                outside.append(f"{c} {op} {scan.param(value)}")
            else:
                raise _NotHere
        where = " OR ".join(outside)
        unexpected = scan.add(f"count(*) FILTER (WHERE {where})")
        return _map_result(nonnull, unexpected, mostly)
    if kind == "expect_column_values_to_be_in_set":
        values = _resolve(kwargs.get("value_set"), parameters)
        if not isinstance(values, list | tuple) or column_type != "VARCHAR":
            raise _NotHere
        if not all(isinstance(v, str) for v in values):
            raise _NotHere
        allowed_values = scan.param(list(values))
        unexpected = scan.add(
            f"count(*) FILTER (WHERE {c} IS NOT NULL"
            f" AND NOT list_contains(CAST({allowed_values} AS VARCHAR[]), {c}))"
        )
        return _map_result(nonnull, unexpected, mostly)
    raise _NotHere


def _map_result(considered_at: int | None, unexpected_at: int, mostly: float, refuse_if=None):
    """A column map expectation's result as GX shapes it (BASIC): element, missing and
    unexpected counts; success by `mostly` over the considered (non-missing) rows."""

    def result(values, rows, config):
        if refuse_if is not None and values[refuse_if]:
            return None
        considered = rows if considered_at is None else int(values[considered_at])
        unexpected = int(values[unexpected_at])
        success = True if rows == 0 else _mostly_success(considered, unexpected, mostly)
        outcome = {
            "element_count": rows,
            "unexpected_count": unexpected,
            "missing_count": rows - considered,
        }
        return Result(config, success, outcome)

    return result


def _table_plan(config: Config, types: Mapping[str, str]) -> Any:
    """Columns, a column's existence and type: from the catalog. Only passes are decided
    here (GX words the failures: observed columns or type)."""
    kind, kwargs = config.type, config.kwargs
    if kind == "unexpected_rows_expectation":
        query = kwargs.get("unexpected_rows_query")
        if not isinstance(query, str):
            raise _NotHere
        return _SqlPlan(query)
    if kind == "expect_table_columns_to_match_set":
        wanted = kwargs.get("column_set")
        ok = kwargs.get("exact_match") is True and isinstance(wanted, list)
        ok = ok and sorted(wanted) == sorted(types)
    elif kind == "expect_column_to_exist":
        ok = kwargs.get("column") in types
    else:  # expect_column_values_to_be_of_type
        ok = types.get(kwargs.get("column")) in _TYPES.get(kwargs.get("type_"), set())
    if not ok:
        raise _NotHere

    def passed(values, rows, config):
        return Result(config, True, {"observed_value": None})

    return passed


def _sql_counts(con: duckdb.DuckDBPyConnection, name: str, plans: list[_SqlPlan]) -> dict[int, int]:
    """Rows returned by each SQL expectation (`{batch}` = the table), all in one query;
    one by one when that fails, so a query that cannot run is left to GX (which says why)."""
    queries: dict[int, str] = {}
    for plan in plans:
        try:
            # GX formats the query with str.format (regex braces doubled in the suites)
            queries[id(plan)] = plan.query.format(batch=name)
        except (KeyError, IndexError, ValueError):
            continue
    if not queries:
        return {}
    # the suites' own SQL (reviewed files, internal names), run as GX would run it
    parts = [f"(SELECT count(*) FROM ({q}) AS unexpected)" for q in queries.values()]
    try:
        counts = con.execute(f"SELECT {', '.join(parts)}").fetchone()
        return {key: int(n) for key, n in zip(queries, counts, strict=True)}
    except duckdb.Error:
        found = {}
        for key, q in queries.items():
            try:
                found[key] = int(
                    con.execute(f"SELECT count(*) FROM ({q}) AS unexpected").fetchone()[0]
                )
            except duckdb.Error:
                continue
        return found
