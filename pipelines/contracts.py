"""Data contracts: Great Expectations suites (JSON, one per table) run inside DuckDB.

`validate_tables(con_or_warehouse, schema, suite_dir)` validates `<schema>.<table>` against
`<suite_dir>/<table>.json` for every suite in the folder, and raises ContractError listing
each failed expectation (table, column, unexpected count) when one fails. Input contracts
live in data_contracts/raw/; the same runner serves output contracts on mart tables.

GX talks to DuckDB through SQLAlchemy (duckdb-engine), so every metric is a SQL query in
DuckDB: nothing is pulled into pandas. GX 1.24 limitations shape this module (details in
docs/ingest.md): regex expectations are not implemented for DuckDB, so code formats are
`UnexpectedRowsExpectation`s with DuckDB SQL (braces doubled, as GX formats the query);
GX closes its connection between metrics, which makes DuckDB drop results, unless the
dialect is in GX's persisted-connection list (`_allow_persisted_duckdb_connections`); and
duckdb-engine cannot open a warehouse that is already open, so GX gets cursors of it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from pipelines import warehouse as wh
from pipelines.errors import ContractError
from pipelines.settings import StudySettings

REPO = Path(__file__).resolve().parents[1]
RAW_SUITES = REPO / "data_contracts" / "raw"
MART_SUITES = REPO / "data_contracts" / "mart"
# result_format: counts of unexpected rows, never their values
_RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}


def default_parameters(today: dt.date | None = None) -> dict[str, str]:
    """Suite parameters of the raw contracts: plausible dates lie in 1900-01-01..tomorrow."""
    today = today or dt.date.today()
    return {"min_date": "1900-01-01", "max_date": (today + dt.timedelta(days=1)).isoformat()}


@dataclass(frozen=True)
class Failure:
    table: str
    expectation: str
    column: str | None
    unexpected: int | None  # rows that broke it (None when it is not a row count)
    detail: str = ""

    def format(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        count = "" if self.unexpected is None else f": {self.unexpected} unexpected rows"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{where}: {self.expectation}{count}{detail}"


@dataclass
class ValidationReport:
    schema: str
    expectations: dict[str, int] = field(default_factory=dict)  # table -> expectations run
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    table_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.failures

    def format(self) -> str:
        total = sum(self.expectations.values())
        head = (
            f"contracts {self.schema}: {len(self.expectations)} tables, {total} expectations,"
            f" {len(self.failures)} failed ({self.seconds:.1f} s)"
        )
        return "\n".join([head, *("  " + f.format() for f in self.failures)])

    def __str__(self) -> str:
        return self.format()


def _import_gx() -> Any:
    """`import great_expectations`, safe where `__main__` has no file (pytest-xdist workers,
    `python -c`): with pyspark installed, GX imports pyspark.sql.connect, which then assumes
    it runs doctests and calls sys.exit(0). A placeholder `__main__.__file__` prevents that."""
    main = sys.modules.get("__main__")
    patch = main is not None and main.__spec__ is None and not hasattr(main, "__file__")
    if patch:
        main.__file__ = "<redflags>"
    try:
        import great_expectations
    finally:
        if patch:
            del main.__file__
    return great_expectations


def load_suite(path: Path, substitutions: dict[str, str] | None = None) -> Any:
    """The ExpectationSuite in a JSON file; an error if GX skipped any expectation in it.

    `${name}` in the file is replaced by `substitutions[name]` (schema names and study
    parameters inside SQL expectations, where GX's own $PARAMETER cannot reach)."""
    gx = _import_gx()
    try:
        text = Path(path).read_text(encoding="utf-8")
        for name, value in (substitutions or {}).items():
            text = text.replace("${" + name + "}", value)
        data = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f"{path}: not a readable suite: {exc}") from exc
    suite = gx.ExpectationSuite(**data)
    if len(suite.expectations) != len(data.get("expectations", [])):
        raise ContractError(
            f"{path}: only {len(suite.expectations)} of {len(data['expectations'])} expectations"
            " could be loaded (GX skips malformed ones; see its log for which)"
        )
    return suite


def validate_tables(
    con_or_warehouse: duckdb.DuckDBPyConnection | str | Path,
    schema: str,
    suite_dir: Path,
    *,
    parameters: dict[str, Any] | None = None,
    substitutions: dict[str, str] | None = None,
    raise_on_failure: bool = True,
) -> ValidationReport:
    """Validate `<schema>.<table>` against every `<suite_dir>/<table>.json`.

    A connection is used through cursors of its own, so only committed data is validated."""
    started = time.perf_counter()
    suites = {
        path.stem: load_suite(path, substitutions)
        for path in sorted(Path(suite_dir).glob("*.json"))
    }
    if not suites:
        raise ContractError(f"no suites (*.json) in {suite_dir}")
    report = ValidationReport(schema)
    with _connection(con_or_warehouse) as con, _gx_datasource(con) as datasource:
        for table, suite in suites.items():
            table_started = time.perf_counter()
            report.expectations[table] = len(suite.expectations)
            if not wh.table_exists(con, schema, table):
                report.failures.append(Failure(f"{schema}.{table}", "table exists", None, None))
                continue
            asset = datasource.add_table_asset(table, table_name=table, schema_name=schema)
            batch = asset.add_batch_definition_whole_table("whole table").get_batch()
            result = batch.validate(
                suite, result_format=_RESULT_FORMAT, expectation_parameters=parameters or {}
            )
            report.failures += [
                _failure(f"{schema}.{table}", r) for r in result.results if not r.success
            ]
            report.table_seconds[table] = time.perf_counter() - table_started
    report.seconds = time.perf_counter() - started
    if raise_on_failure and report.failures:
        raise ContractError(report.format())
    return report


def validate_raw(
    con_or_warehouse: duckdb.DuckDBPyConnection | str | Path,
    *,
    schema: str = "raw",
    raise_on_failure: bool = True,
) -> ValidationReport:
    """The input contracts (data_contracts/raw) on the raw tables (or on `schema`, which holds
    tables of the same names, such as the Spark engine's views on its Parquet)."""
    return validate_tables(
        con_or_warehouse,
        schema,
        RAW_SUITES,
        parameters=default_parameters(),
        substitutions={"raw": schema},
        raise_on_failure=raise_on_failure,
    )


def validate_outputs(
    con_or_warehouse: duckdb.DuckDBPyConnection | str | Path,
    settings: StudySettings | None = None,
    *,
    schema: str = "mart",
    raise_on_failure: bool = True,
) -> ValidationReport:
    """The output contracts (data_contracts/mart) on the episode-level tables in `schema`."""
    settings = settings or StudySettings()
    scalars = {k: str(v) for k, v in settings.sql_parameters().items()}
    return validate_tables(
        con_or_warehouse,
        schema,
        MART_SUITES,
        parameters={"min_age": settings.min_age, "sexes": list(settings.sexes)},
        substitutions={**scalars, "mart": schema},
        raise_on_failure=raise_on_failure,
    )


def _failure(table: str, result: Any) -> Failure:
    config = result.expectation_config
    kwargs = config.kwargs
    column = (
        kwargs.get("column")
        or (config.meta or {}).get("column")  # SQL expectations name their column in meta
        or (f"{kwargs['column_B']}/{kwargs['column_A']}" if "column_A" in kwargs else None)
    )
    name = config.description or config.type
    outcome = result.result or {}
    message = _exception_message(result.exception_info)
    if message is not None:
        return Failure(table, name, column, None, f"could not run: {message}")
    if "unexpected_count" in outcome:
        return Failure(table, name, column, outcome["unexpected_count"])
    observed = outcome.get("observed_value")
    if config.type == "unexpected_rows_expectation":
        return Failure(table, name, column, int(observed or 0))
    return Failure(table, name, column, None, f"observed {observed!r}")


def _exception_message(info: Any) -> str | None:
    """The first line of the error an expectation raised, or None. GX reports it either at
    the top level or, for metric-based expectations such as unexpected_rows_expectation,
    per metric ({metric id: {"raised_exception": ..., "exception_message": ...}})."""
    if not isinstance(info, dict):
        return None
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    for entry in candidates:
        if entry.get("raised_exception"):
            lines = str(entry.get("exception_message", "")).strip().splitlines() or ["error"]
            return lines[0][:200]
    return None


@contextmanager
def _connection(
    con_or_warehouse: duckdb.DuckDBPyConnection | str | Path,
) -> Iterator[duckdb.DuckDBPyConnection]:
    if isinstance(con_or_warehouse, duckdb.DuckDBPyConnection):
        yield con_or_warehouse
    else:
        with wh.open_warehouse(con_or_warehouse) as con:
            yield con


@contextmanager
def _gx_datasource(con: duckdb.DuckDBPyConnection) -> Iterator[Any]:
    """An ephemeral GX SQL datasource over cursors of `con` (same database, own connections)."""
    gx = _import_gx()
    from duckdb_engine import ConnectionWrapper
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _allow_persisted_duckdb_connections()
    logging.getLogger("great_expectations.expectations.type_comparison").setLevel(logging.ERROR)
    cursors: list[duckdb.DuckDBPyConnection] = []

    def new_connection() -> ConnectionWrapper:
        # duckdb-engine would open the file again with its own config, which DuckDB refuses
        # while `con` is open; a cursor is a new connection to the same open database. Each
        # SQLAlchemy connection needs its own: duckdb-engine starts a transaction on each.
        cursors.append(con.cursor())
        return ConnectionWrapper(cursors[-1])

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    datasource = context.data_sources.add_sql(
        "warehouse", connection_string="duckdb:///:memory:", kwargs={"creator": new_connection}
    )
    try:
        yield datasource
    finally:
        # release GX's persisted connection before the cursors under it are closed
        execution_engine = datasource.get_execution_engine()
        if getattr(execution_engine, "_connection", None) is not None:
            execution_engine._connection.close()
        execution_engine.engine.dispose()
        datasource.get_engine().dispose()
        for cursor in cursors:
            cursor.close()


class _DialectName(str):
    """A dialect name GX's persisted-connection checks accept (they read `.value`)."""

    @property
    def value(self) -> str:
        return str(self)


def _allow_persisted_duckdb_connections() -> None:
    """Monkeypatch (GX 1.24): keep one connection open for DuckDB as GX does for SQLite.

    Without it every metric fails with `IndexError: list index out of range` (GX issues
    #10738, #11579): GX closes the connection before it reads the result, and DuckDB drops
    results on close. Remove when GX lists duckdb in `_PERSISTED_CONNECTION_DIALECTS`."""
    from great_expectations.execution_engine import sqlalchemy_execution_engine as engine

    if "duckdb" not in engine._PERSISTED_CONNECTION_DIALECTS:
        engine._PERSISTED_CONNECTION_DIALECTS = (
            *engine._PERSISTED_CONNECTION_DIALECTS,
            _DialectName("duckdb"),
        )
