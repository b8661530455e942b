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
import functools
import itertools
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb

from pipelines import contracts_sql, resources
from pipelines import warehouse as wh
from pipelines.errors import ContractError
from pipelines.flags import expand_flag_expectations
from pipelines.schema import TABLES
from pipelines.settings import StudySettings

RAW_SUITES = resources.CONTRACTS_DIR / "raw"  # package data (pipelines/resources.py)
MART_SUITES = resources.CONTRACTS_DIR / "mart"
# result_format: counts of unexpected rows, never their values
_RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}


def default_parameters(today: dt.date | None = None) -> dict[str, str]:
    """Suite parameters of the raw contracts: plausible dates lie in 1900-01-01..tomorrow."""
    today = today or dt.date.today()
    return {"min_date": "1900-01-01", "max_date": (today + dt.timedelta(days=1)).isoformat()}


SEVERITIES = ("error", "warn")
CATEGORIES = ("conformance", "completeness", "plausibility")  # the Data Quality Dashboard's
# (check name, DQD category) of each expectation type; `meta.check` / `meta.category` override
_CHECK_KINDS = {
    "expect_table_columns_to_match_set": ("column_set", "conformance"),
    "expect_column_values_to_be_of_type": ("column_type", "conformance"),
    "expect_column_values_to_not_be_null": ("not_null", "completeness"),
    "expect_column_values_to_be_unique": ("unique", "conformance"),
    "expect_column_values_to_be_in_set": ("value_set", "conformance"),
    "expect_column_values_to_be_between": ("value_range", "plausibility"),
    "expect_column_pair_values_a_to_be_greater_than_b": ("dates_in_order", "plausibility"),
    "unexpected_rows_expectation": ("sql", "conformance"),
}


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


@dataclass(frozen=True)
class Check:
    """One expectation's outcome, as a row of the data-quality profile.

    `threshold` is the fraction of checked rows allowed to fail (OHDSI DQD's threshold;
    `1 - mostly` for GX column expectations, `meta.threshold` for SQL ones). Beyond it the
    check fails: with severity `error` the run stops, with `warn` it is recorded and the
    run goes on."""

    table: str  # <schema>.<table>
    expectation: str  # description or GX type
    column: str | None
    check: str
    category: str
    severity: str
    threshold: float
    rows_checked: int | None  # None for table-level checks (columns, types)
    rows_failed: int | None
    within_threshold: bool
    detail: str = ""

    @property
    def fraction(self) -> float | None:
        if self.rows_failed is None or not self.rows_checked:
            return None
        return self.rows_failed / self.rows_checked

    @property
    def status(self) -> str:
        if self.within_threshold:
            return "pass"
        return "warn" if self.severity == "warn" else "fail"

    def failure(self) -> Failure:
        return Failure(self.table, self.expectation, self.column, self.rows_failed, self.detail)


@dataclass
class ValidationReport:
    schema: str
    expectations: dict[str, int] = field(default_factory=dict)  # table -> expectations run
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    table_seconds: dict[str, float] = field(default_factory=dict)
    flagged_rows: int | None = None  # rows listed in data_quality_issues (check_raw)

    @property
    def failures(self) -> list[Failure]:
        """Checks beyond their threshold with severity error: these stop a run."""
        return [c.failure() for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Failure]:
        """Checks beyond their threshold with severity warn: recorded, the run goes on."""
        return [c.failure() for c in self.checks if c.status == "warn"]

    @property
    def success(self) -> bool:
        return not self.failures

    def headline(self) -> str:
        total = sum(self.expectations.values())
        flagged = "" if not self.flagged_rows else f"; {self.flagged_rows} rows flagged"
        return (
            f"contracts {self.schema}: {len(self.expectations)} tables, {total} expectations,"
            f" {len(self.failures)} failed, {len(self.warnings)} warned ({self.seconds:.1f} s)"
            + (f"{flagged} (data_quality_issues)" if flagged else "")
        )

    def one_line(self) -> str:
        """The error message of a failed contract: the headline and each failure, one line."""
        return "; ".join([self.headline(), *(f.format() for f in self.failures)])

    def format(self) -> str:
        lines = [self.headline()]
        lines += ["  failed: " + f.format() for f in self.failures]
        lines += ["  warning: " + f.format() for f in self.warnings]
        return "\n".join(lines)

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


def read_suite(path: Path, substitutions: dict[str, str] | None = None) -> dict[str, Any]:
    """A suite file as data: `${name}` in the file replaced by `substitutions[name]` (schema
    names and study parameters inside SQL expectations, where GX's own $PARAMETER cannot
    reach); the flag names filled in from the registry (`pipelines.flags`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        for name, value in (substitutions or {}).items():
            text = text.replace("${" + name + "}", value)
        data = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f"{path}: not a readable suite: {exc}") from exc
    # suites on flag columns name the flags through the registry, never by hand
    data["expectations"] = expand_flag_expectations(data.get("expectations", []))
    return data


def load_suite(path: Path, substitutions: dict[str, str] | None = None) -> Any:
    """The ExpectationSuite in a JSON file; an error if GX skipped any expectation in it
    (`read_suite` for the substitutions)."""
    return _gx_suite(path, read_suite(path, substitutions))


def _gx_suite(path: Path, data: dict[str, Any]) -> Any:
    gx = _import_gx()
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
    fast: bool = True,
) -> ValidationReport:
    """Validate `<schema>.<table>` against every `<suite_dir>/<table>.json`.

    `fast` (the default): every expectation is first evaluated in SQL (contracts_sql.py, one
    scan per table); GX runs only what SQL cannot express and every check that does not
    pass, so warnings and failures are GX's own results. `fast=False`: GX runs everything
    (the reference the fast path is tested against).
    A connection is used through cursors of its own, so only committed data is validated."""
    started = time.perf_counter()
    paths = sorted(Path(suite_dir).glob("*.json"))
    suites = {path.stem: (path, read_suite(path, substitutions)) for path in paths}
    if not suites:
        raise ContractError(f"no suites (*.json) in {suite_dir}")
    report = ValidationReport(schema)
    with _connection(con_or_warehouse) as con, _GXTables(con) as gx_tables:
        for table, (path, data) in suites.items():
            table_started = time.perf_counter()
            expectations = data["expectations"]
            report.expectations[table] = len(expectations)
            if not wh.table_exists(con, schema, table):
                if not fast:
                    _gx_suite(path, data)  # GX's own check that every expectation loads
                report.checks.append(_missing_table(f"{schema}.{table}"))
                continue
            rows = con.execute(f"SELECT count(*) FROM {_name(schema, table)}").fetchone()[0]
            name = f"{schema}.{table}"
            checks: list[Check | None] = [None] * len(expectations)
            if fast:
                results = contracts_sql.evaluate(con, schema, table, expectations, parameters)
                checks = [None if r is None else _check(name, r, rows) for r in results]
            todo = [i for i, c in enumerate(checks) if c is None or c.status != "pass"]
            if todo:
                subset = {**data, "expectations": _positioned([expectations[i] for i in todo])}
                try:
                    suite = _gx_suite(path, subset)
                except ContractError:
                    _gx_suite(path, data)  # the message counts the whole suite
                    raise
                results = gx_tables.validate(schema, table, suite, parameters)
                for i, result in zip(todo, results, strict=True):
                    checks[i] = _check(name, result, rows)
            report.checks += [c for c in checks if c is not None]
            report.table_seconds[table] = time.perf_counter() - table_started
    report.seconds = time.perf_counter() - started
    if raise_on_failure and report.failures:
        raise ContractError(report.one_line())
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


def _name(schema: str, table: str) -> str:
    """A quoted `schema.table` (internal names only: suite file names and schema names)."""
    return f"{_quote(schema)}.{_quote(table)}"


def _missing_table(table: str) -> Check:
    return Check(table, "table exists", None, "table_exists", "conformance", "error", 0.0,
                 None, None, False)  # fmt: skip


def _check(table: str, result: Any, table_rows: int) -> Check:
    """The profile row of one GX result: counts, threshold, severity, within threshold or not."""
    config = result.expectation_config
    kwargs = config.kwargs
    meta = config.meta or {}
    column = (
        kwargs.get("column")
        or meta.get("column")  # SQL expectations name their column in meta
        or (f"{kwargs['column_B']}/{kwargs['column_A']}" if "column_A" in kwargs else None)
    )
    check, category = _CHECK_KINDS.get(config.type, (config.type, "conformance"))
    check, category = meta.get("check", check), meta.get("category", category)
    severity = meta.get("severity", "error")
    mostly = kwargs.get("mostly")
    threshold = float(meta.get("threshold", 0.0) if mostly is None else round(1 - mostly, 9))
    name = config.description or config.type
    outcome = result.result or {}

    def make(checked: int | None, failed: int | None, ok: bool, detail: str = "") -> Check:
        return Check(table, name, column, check, category, severity, threshold, checked,
                     failed, ok, detail)  # fmt: skip

    message = _exception_message(result.exception_info)
    if message is not None:  # a check that cannot run fails whatever its severity
        return replace(make(None, None, False, f"could not run: {message}"), severity="error")
    if "unexpected_count" in outcome:  # column map expectations: GX applied `mostly`
        checked = int(outcome.get("element_count") or 0) - int(outcome.get("missing_count") or 0)
        # (an empty table reports None: nothing checked, nothing failed)
        return make(checked, int(outcome["unexpected_count"] or 0), bool(result.success))
    observed = outcome.get("observed_value")
    if config.type == "unexpected_rows_expectation":  # GX has no `mostly` here: apply it
        failed = int(observed or 0)
        ok = bool(result.success) or (table_rows > 0 and failed / table_rows <= threshold)
        return make(table_rows, failed, ok)
    return make(
        None, None, bool(result.success), "" if result.success else f"observed {observed!r}"
    )


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


@functools.cache
def _gx_context() -> Any:
    """One ephemeral GX context per process, made the first time GX is needed and reused by
    every validation after it (input and output contracts of a run, the ingest flow's):
    importing GX and setting up a context cost seconds, a datasource on it milliseconds."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _allow_persisted_duckdb_connections()
    logging.getLogger("great_expectations.expectations.type_comparison").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


class _GXTables:
    """GX validation of tables of `con`, set up on first use: a SQL datasource (on the
    process's one context) over cursors of `con` (same database, own connections), removed
    again on exit. A validation that SQL decides entirely never imports GX."""

    _made = itertools.count()

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.cursors: list[duckdb.DuckDBPyConnection] = []
        self.datasource: Any = None

    def __enter__(self) -> _GXTables:
        return self

    def validate(
        self, schema: str, table: str, suite: Any, parameters: dict[str, Any] | None
    ) -> list[Any]:
        """GX's results for `suite` on `<schema>.<table>`, in the suite's order (the data-quality
        profile lists the checks as the suite does)."""
        if self.datasource is None:
            self.datasource = self._add_datasource()
        asset_name = f"{schema}.{table}"
        asset = self.datasource.add_table_asset(asset_name, table_name=table, schema_name=schema)
        batch = asset.add_batch_definition_whole_table("whole table").get_batch()
        result = batch.validate(
            suite, result_format=_RESULT_FORMAT, expectation_parameters=parameters or {}
        )
        # GX orders its results by the metrics they share: put them back in the suite's order
        # (`_POSITION` in each expectation's meta, set by `_positioned`)
        ordered: list[Any] = [None] * len(suite.expectations)
        for r in result.results:
            ordered[r.expectation_config.meta[_POSITION]] = r
        return ordered

    def _add_datasource(self) -> Any:
        from duckdb_engine import ConnectionWrapper

        def new_connection() -> ConnectionWrapper:
            # duckdb-engine would open the file again with its own config, which DuckDB
            # refuses while `con` is open; a cursor is a new connection to the same open
            # database. Each SQLAlchemy connection needs its own: duckdb-engine starts a
            # transaction on each.
            self.cursors.append(self.con.cursor())
            return ConnectionWrapper(self.cursors[-1])

        self.name = f"warehouse-{next(self._made)}"
        return _gx_context().data_sources.add_sql(
            self.name, connection_string="duckdb:///:memory:", kwargs={"creator": new_connection}
        )

    def __exit__(self, *exc: object) -> None:
        if self.datasource is not None:
            # release GX's persisted connection before the cursors under it are closed
            execution_engine = self.datasource.get_execution_engine()
            if getattr(execution_engine, "_connection", None) is not None:
                execution_engine._connection.close()
            execution_engine.engine.dispose()
            self.datasource.get_engine().dispose()
            _gx_context().data_sources.delete(self.name)
        for cursor in self.cursors:
            cursor.close()


_POSITION = "redflags_position"  # meta key: where an expectation sits in the suite


def _positioned(expectations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The expectations with their position in meta, which GX hands back with each result."""
    return [
        {**e, "meta": {**(e.get("meta") or {}), _POSITION: i}} for i, e in enumerate(expectations)
    ]


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


# ---------------------------------------------------------------------------
# Data-quality profile and row-level issues: what a run publishes about its input.

PROFILE_TABLE = "data_quality_profile"
ISSUES_TABLE = "data_quality_issues"
# Row-level anomalies listed one row per offending record (file and line, never values):
# the warn-severity plausibility checks whose records are kept, and handled in staging.
ROW_CHECKS = ("date_in_range", "dates_in_order", "after_birth")

_PROFILE_DDL = """
CREATE TABLE {target} (
    table_name VARCHAR, column_name VARCHAR, check_name VARCHAR, category VARCHAR,
    severity VARCHAR, threshold DOUBLE, rows_checked BIGINT, rows_failed BIGINT,
    fraction_failed DOUBLE, status VARCHAR, expectation VARCHAR
)
"""
_ISSUES_DDL = """
CREATE TABLE {target} (
    table_name VARCHAR, source_file VARCHAR, source_line BIGINT, column_name VARCHAR,
    check_name VARCHAR, category VARCHAR, severity VARCHAR, detail VARCHAR
)
"""


def check_raw(
    warehouse: str | Path,
    *,
    schema: str = "raw",
    target_schema: str | None = None,
    parameters: dict[str, str] | None = None,
) -> ValidationReport:
    """The input contracts on `schema`, with the data-quality profile and the row-level issues
    written into `target_schema` (when given) before a failure is raised, one line, as
    ContractError. Warnings and rows flagged within threshold let the run go on."""
    parameters = parameters or default_parameters()
    with _connection(warehouse) as con:
        report = validate_tables(
            con,
            schema,
            RAW_SUITES,
            parameters=parameters,
            substitutions={"raw": schema},
            raise_on_failure=False,
        )
        if target_schema is not None:
            report.flagged_rows = write_quality_tables(
                con, report, schema, target_schema, parameters
            )
    if report.failures:
        raise ContractError(report.one_line())
    return report


def write_quality_tables(
    con: duckdb.DuckDBPyConnection,
    report: ValidationReport,
    raw_schema: str,
    target_schema: str,
    parameters: dict[str, str],
) -> int:
    """(Re)create `<target>.data_quality_profile` (one row per check) and
    `<target>.data_quality_issues` (one row per flagged record); returns the issues written."""
    profile, issues = _name(target_schema, PROFILE_TABLE), _name(target_schema, ISSUES_TABLE)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(target_schema)}")
    con.execute(f"DROP TABLE IF EXISTS {profile}")
    con.execute(f"DROP TABLE IF EXISTS {issues}")
    con.execute(_PROFILE_DDL.format(target=profile))
    con.execute(_ISSUES_DDL.format(target=issues))
    rows = [
        [
            c.table.split(".", 1)[1],
            c.column,
            c.check,
            c.category,
            c.severity,
            c.threshold,
            c.rows_checked,
            c.rows_failed,
            c.fraction,
            c.status,
            c.expectation,
        ]
        for c in report.checks
    ]
    if rows:
        con.executemany(f"INSERT INTO {profile} VALUES ({', '.join('?' * 11)})", rows)
    for check in report.checks:
        if check.check in ROW_CHECKS and check.rows_failed:
            _insert_issues(con, check, raw_schema, issues, parameters)
    return con.execute(f"SELECT count(*) FROM {issues}").fetchone()[0]


def _insert_issues(
    con: duckdb.DuckDBPyConnection,
    check: Check,
    raw_schema: str,
    issues: str,
    parameters: dict[str, str],
) -> None:
    """List the records that failed a ROW_CHECKS check: the same condition as its expectation,
    in SQL over the raw table (identifiers are internal names, every value a parameter)."""
    table = check.table.split(".", 1)[1]
    source = _name(raw_schema, table)
    values: dict[str, Any] = {
        "table": table,
        "column": check.column,
        "check": check.check,
        "category": check.category,
        "severity": check.severity,
    }
    if check.check == "date_in_range":
        column = _quote(check.column)
        kind = next(c.type for c in TABLES[table].columns if c.name == check.column)
        where = f"{column} < CAST($min_date AS {kind}) OR {column} > CAST($max_date AS {kind})"
        detail = f"CASE WHEN {column} < CAST($min_date AS {kind}) THEN $early ELSE $late END"
        values |= {
            "min_date": parameters["min_date"],
            "max_date": parameters["max_date"],
            "early": f"{check.column} before {parameters['min_date']}",
            "late": f"{check.column} after {parameters['max_date']} (in the future)",
        }
        sql = f"SELECT *, {detail} AS detail FROM {source} WHERE {where}"
    elif check.check == "dates_in_order":
        start, stop = check.column.split("/")
        values["detail"] = f"{stop} before {start}"
        sql = f"SELECT *, $detail AS detail FROM {source} WHERE {_quote(stop)} < {_quote(start)}"
    else:  # after_birth
        values["detail"] = f"{check.column} before the patient's birth_date"
        sql = (
            f"SELECT records.*, $detail AS detail FROM {source} AS records"
            f" JOIN {_name(raw_schema, 'patients')} AS patients"
            " ON patients.patient_id = records.patient_id"
            f" WHERE CAST(records.{_quote(check.column)} AS DATE) < patients.birth_date"
        )
    con.execute(
        f"INSERT INTO {issues} SELECT $table, source_file, source_line, $column, $check,"
        f" $category, $severity, detail FROM ({sql}) AS flagged",
        values,
    )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
