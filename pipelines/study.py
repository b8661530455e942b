"""The whole study as plain functions: the Prefect flow in flows.py only wires these.

A run builds everything apart, in `*__build` schemas, and publishes `mart` and `release`
in one transaction at the end, so a run that fails or is killed leaves the previous
outputs readable and intact; the build schemas are then dropped (a failed run keeps them,
for diagnosis). Where ingest and the SQL models run is the engine's business
(`pipelines/engines`): this module never asks which one it got. One run at a time per
warehouse (a lock file beside it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import duckdb

from pipelines import progress, reuse, table_docs, valuesets
from pipelines.engines import DuckDBEngine, Engine, EngineRun
from pipelines.errors import UserFacingError
from pipelines.ingest import digests
from pipelines.resources import code_version
from pipelines.settings import StudySettings
from pipelines.warehouse import (
    BUILD_SUFFIX,
    PUBLISHED_SCHEMAS,
    WarehouseBusyError,
    drop_schema,
    run_connection,
    tables_in,
    warehouse_lock,
)

log = logging.getLogger("redflags")

# dq: the run's data-quality profile and flagged input records (contracts.check_raw)

# How each sensitivity analysis (PROTOCOL.md section 6.4) changes the settings.
SENSITIVITY_VARIANTS: dict[str, dict[str, int]] = {
    "landmark_0": {"landmark_days": 0},
    "persistence_28": {"persistence_days": 28},
    "washout_180": {"washout_days": 180},
}


# The lock lives with the warehouse (every writer takes it: run, ingest, demo, serve's runs);
# these names stay here for the callers and tests that know them from the study.
RunLockedError = WarehouseBusyError
# The default engine: ingest and models in the warehouse itself (pipelines/engines).
DUCKDB = DuckDBEngine()


@dataclass
class StageTiming:
    stage: str
    seconds: float
    detail: str = ""


@dataclass
class RunResult:
    run_id: str
    warehouse: Path
    status: str = "running"
    stages: list[StageTiming] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    report: Path | None = None
    error: str | None = None
    current_stage: str = "start"
    engine: str = "duckdb"
    # where the run's ingest manifest is: `<schema>__build` until publish, then `<schema>`
    manifest_schema: str = "meta"


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


RUNS_DDL = """
CREATE TABLE IF NOT EXISTS meta.runs (
    run_id VARCHAR PRIMARY KEY,
    flow_run_id VARCHAR,
    started_at TIMESTAMP,
    ended_at TIMESTAMP,
    status VARCHAR,
    error VARCHAR,
    source VARCHAR,
    parameters JSON,
    value_set_hashes JSON,
    input_manifest JSON,
    code_version VARCHAR,
    output_row_counts JSON,
    stage_seconds JSON,
    engine VARCHAR
)
"""
# Warehouses made before the engine column was added gain it on their next run.
RUNS_MIGRATIONS = ("ALTER TABLE meta.runs ADD COLUMN IF NOT EXISTS engine VARCHAR",)


def record_run_start(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    settings: StudySettings,
    source: Path,
    flow_run_id: str | None,
    engine: str = "duckdb",
) -> None:
    con.execute(RUNS_DDL)
    for migration in RUNS_MIGRATIONS:
        con.execute(migration)
    # A run that was killed never wrote its end: say so rather than leave it "running".
    con.execute(
        "UPDATE meta.runs SET status = 'abandoned', ended_at = NULL WHERE status = 'running'"
    )
    con.execute(
        "INSERT INTO meta.runs (run_id, flow_run_id, started_at, status, source, parameters,"
        " code_version, engine) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
        [
            run_id,
            flow_run_id,
            dt.datetime.now(dt.UTC).replace(tzinfo=None),
            str(source),
            json.dumps(settings.as_dict()),
            code_version(),
            engine,
        ],
    )


def record_run_end(con: duckdb.DuckDBPyConnection, result: RunResult) -> None:
    # The files this run read, from the engine's manifest: its build copy before publish (and
    # when the run failed), the published one after (the build schemas are dropped then).
    manifest_schema = result.manifest_schema + BUILD_SUFFIX
    if not _exists(con, manifest_schema, "ingest_manifest"):
        manifest_schema = result.manifest_schema
    manifest = (
        con.execute(
            "SELECT coalesce(json_group_array(json_object('file', file_path, 'sha256', sha256, "
            "'size_bytes', size_bytes, 'rows', row_count)), '[]')"
            f" FROM {manifest_schema}.ingest_manifest"
        ).fetchone()[0]
        if _exists(con, manifest_schema, "ingest_manifest")
        else "[]"
    )
    hashes = "{}"
    if _exists(con, "meta", "value_sets"):
        from pipelines.valuesets import value_set_hashes

        hashes = json.dumps(value_set_hashes())
    con.execute(
        "UPDATE meta.runs SET ended_at = ?, status = ?, error = ?, input_manifest = ?, "
        "value_set_hashes = ?, output_row_counts = ?, stage_seconds = ? WHERE run_id = ?",
        [
            dt.datetime.now(dt.UTC).replace(tzinfo=None),
            result.status,
            result.error,
            manifest,
            hashes,
            json.dumps(result.row_counts),
            json.dumps({s.stage: round(s.seconds, 3) for s in result.stages}),
            result.run_id,
        ],
    )


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def publish(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    schemas: tuple[str, ...] = PUBLISHED_SCHEMAS,
    also: Callable[[duckdb.DuckDBPyConnection], dict[str, int]] | None = None,
) -> dict[str, int]:
    """Replace each published schema's tables by the build's, in one transaction.

    Every published row carries `run_id`. Either all of the run's outputs become visible or
    none do; tables the new run no longer makes are dropped in the same transaction.
    `also(con)` runs inside the same transaction (the engine's own tables) and returns
    row counts of what it published.
    """
    counts: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for schema in schemas:
            build = schema + BUILD_SUFFIX
            new_tables = tables_in(con, build)
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            for old in tables_in(con, schema):
                if old not in new_tables:
                    con.execute(f'DROP TABLE "{schema}"."{old}"')
            for table in new_tables:
                columns = [
                    r[0]
                    for r in con.execute(
                        "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?",
                        [build, table],
                    ).fetchall()
                ]
                select = f'SELECT * FROM "{build}"."{table}"'
                if "run_id" not in columns:
                    select = f'SELECT *, $run_id::VARCHAR AS run_id FROM "{build}"."{table}"'
                    con.execute(
                        f'CREATE OR REPLACE TABLE "{schema}"."{table}" AS {select}',
                        {"run_id": run_id},
                    )
                else:
                    con.execute(f'CREATE OR REPLACE TABLE "{schema}"."{table}" AS {select}')
                counts[f"{schema}.{table}"] = con.execute(
                    f'SELECT count(*) FROM "{schema}"."{table}"'
                ).fetchone()[0]
        if also is not None:
            counts.update(also(con))
        # The catalog describes what was published (release.run_history included, rebuilt by
        # `also`): one source with docs/data-dictionary.md.
        table_docs.comment_tables(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return counts


def plural(n: int, noun: str) -> str:
    """`1 table`, `2 tables`, `1,234 rows`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def describe(result: object) -> str:
    """A short, count-only description of what a step returned, for its progress line."""
    if isinstance(result, dict) and all(isinstance(v, int) for v in result.values()):
        rows = sum(result.values())
        return f"{plural(len(result), 'table')}, {plural(rows, 'row')}"
    if isinstance(result, str):
        return result.splitlines()[0] if result else ""
    if isinstance(result, Path):
        return str(result)
    if isinstance(result, list):
        folders = {p.parent for p in result if isinstance(p, Path)}
        where = f" in {folders.pop()}" if len(folders) == 1 else ""
        return f"{plural(len(result), 'file')}{where}"
    return ""


@dataclass
class Stages:
    """Runs the stages of one run: times each, prints a line as it starts and ends."""

    result: RunResult
    say: Callable[[str], None] = print

    def __call__(self, name: str, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.say(f"[{name}] started")
        self.result.current_stage = name
        timing = StageTiming(name, 0.0)
        start = time.perf_counter()
        try:
            with progress.track(f"[{name}]"):  # a spinner and the elapsed time (TTY only)
                value = step(*args, **kwargs)
            timing.detail = describe(value)
            return value
        except BaseException:
            timing.detail = "failed"
            raise
        finally:
            timing.seconds = time.perf_counter() - start
            self.result.stages.append(timing)
            extra = f" ({timing.detail})" if timing.detail else ""
            self.say(f"[{name}] done in {timing.seconds:.1f}s{extra}")


@contextmanager
def recorded_run(
    result: RunResult,
    settings: StudySettings,
    source: Path,
    flow_run_id: str | None,
    say: Callable[[str], None] = print,
    note: str = "",
) -> Iterator[RunResult]:
    """Record the run in meta.runs: `running` now, `succeeded` or `failed` (with why) at the end."""
    step_begin(result.warehouse, settings, source, result.run_id, flow_run_id, result.engine)
    say(f"run {result.run_id}: {source} -> {result.warehouse}{note}")
    try:
        yield result
    except BaseException as exc:
        result.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result.error = f"{result.current_stage}: {message}"
        with suppress(Exception):  # the original error matters more than the record
            step_end(result.warehouse, result)
        published = any(s.stage == "publish" and s.detail != "failed" for s in result.stages)
        outputs = (
            "the new tables were published"
            if published
            else "the previous mart and release tables are unchanged; the build schemas"
            " (*__build) are kept for diagnosis"
        )
        say(f"run {result.run_id} {result.status} at {result.current_stage}; {outputs}")
        raise
    result.status = "reused" if result.status == "reused" else "succeeded"
    step_end(result.warehouse, result)
    say(f"run {result.run_id} {result.status}")


# ---------------------------------------------------------------------------
# Steps: each opens its own connection (tasks take paths and plain values).


def step_ingest(
    source: Path,
    warehouse: Path,
    say: Callable[[str], None] = print,
    engine: EngineRun = DUCKDB,
    source_format: str = "auto",
    accept_shrink: bool = False,
) -> dict[str, int]:
    """Read the export on the run's engine (DuckDB: into raw.*, atomic, in any source layout,
    `pipelines/sources`). The run holds the lock."""
    return engine.ingest(Path(source), Path(warehouse), say, source_format, accept_shrink)


def step_input_contracts(warehouse: Path, engine: EngineRun = DUCKDB) -> str:
    """Run the raw-table contracts and write the data-quality profile and flagged records
    into dq__build (published with mart and release); raises ContractError (one line) when
    an error-severity check fails beyond its threshold."""
    from pipelines.contracts import check_raw

    return str(
        check_raw(Path(warehouse), schema=engine.raw_schema, target_schema="dq" + BUILD_SUFFIX)
    )


def step_models(
    warehouse: Path,
    settings: StudySettings,
    suffix: str = BUILD_SUFFIX,
    *,
    reuse_suffix: str | None = None,
    engine: EngineRun = DUCKDB,
) -> dict[str, int]:
    """Build every SQL model into the build schemas; returns the row count of each table built.

    With `reuse_suffix`, models identical to those of that build (same SQL and parameter
    values up their dependency chain) are views on it instead of being computed again."""
    return engine.build_models(Path(warehouse), settings, suffix, reuse_suffix)


def step_statistics(warehouse: Path, settings: StudySettings, run_id: str) -> dict[str, int]:
    from pipelines.analysis import run_statistics

    with run_connection(warehouse) as con:
        return run_statistics(con, settings, run_id, schema="mart" + BUILD_SUFFIX)


def step_sensitivity(
    warehouse: Path, settings: StudySettings, run_id: str, engine: EngineRun = DUCKDB
) -> dict[str, int]:
    """Rebuild the study under each sensitivity variant and tabulate it beside the primary.

    Each variant builds only the models downstream of the parameters it changes; the
    others are read from the primary build (`step_models`, same run), on either engine."""
    from pipelines.analysis import (
        sensitivity_rows,
        sensitivity_rows_written,
        write_sensitivity_table,
    )

    frames = []
    with run_connection(warehouse) as con:
        # the primary analysis' rows: from the statistics stage's tables, not computed again
        primary = sensitivity_rows_written(con, "primary", schema="mart" + BUILD_SUFFIX)
        if primary is None:
            primary = sensitivity_rows(con, settings, "primary", schema="mart" + BUILD_SUFFIX)
        frames.append(primary)
    for name in settings.sensitivity_analyses:
        variant = settings.replace(**SENSITIVITY_VARIANTS[name])
        suffix = f"__sens_{name}"
        engine.build_variant(Path(warehouse), settings, variant, suffix)
        with run_connection(warehouse) as con:
            frames.append(sensitivity_rows(con, variant, name, schema="mart" + suffix))
            for schema in ("staging", "intermediate", "mart"):
                drop_schema(con, schema + suffix)
    with run_connection(warehouse) as con:
        n = write_sensitivity_table(con, frames, run_id, schema="mart" + BUILD_SUFFIX)
    return {"mart.sensitivity_analyses": int(n)}


def step_output_contracts(warehouse: Path, settings: StudySettings) -> str:
    """Run the mart contracts on the build; raises ContractError with a summary when one fails."""
    from pipelines.contracts import validate_outputs

    return str(validate_outputs(Path(warehouse), settings, schema="mart" + BUILD_SUFFIX))


def step_release(warehouse: Path, settings: StudySettings, run_id: str) -> dict[str, int]:
    from pipelines import history
    from pipelines.analysis import build_release

    with run_connection(warehouse) as con:
        drop_schema(con, "release" + BUILD_SUFFIX)
        result = build_release(
            con,
            settings,
            run_id,
            source_schema="mart" + BUILD_SUFFIX,
            target_schema="release" + BUILD_SUFFIX,
            # what earlier runs released: no small difference to them (pipelines/history.py)
            previous=history.previous_counts(con),
        )
        return dict(result or {})


def step_publish(
    warehouse: Path,
    run_id: str,
    engine: EngineRun = DUCKDB,
    source_format: str | None = None,
    settings: StudySettings | None = None,
) -> dict[str, int]:
    """Publish mart and release (and the engine's own tables) in one transaction, appending
    the run's row to the release history in the same one (pipelines/history.py); then drop
    the build schemas (a failed run never gets here: it keeps them, for diagnosis)."""
    from pipelines import history

    def also(c: duckdb.DuckDBPyConnection) -> dict[str, int]:
        return engine.publish_extra(c, run_id) | history.append(
            c,
            run_id,
            source_format=source_format,
            settings=settings or StudySettings(),
            manifest_schema=engine.meta_schema,
            extract_schema=engine.extract_schema,
        )

    with run_connection(warehouse) as con:
        counts = publish(con, run_id, also=also)
        try:
            dropped = drop_build_schemas(con)
        except duckdb.Error as exc:  # the outputs are published: a leftover copy is no failure
            dropped = []
            log.warning("publish: could not drop the build schemas: %s", exc)
    engine.after_publish()
    if dropped:
        log.info("publish: dropped the build schemas %s", ", ".join(dropped))
    return counts


def drop_build_schemas(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Drop every `*__build` schema; returns their names. Once published they are a second
    copy of every output that an analyst browsing the warehouse would have to learn to
    ignore; a run that fails keeps them (the next run replaces them)."""
    schemas = [
        name
        for (name,) in con.execute(
            "SELECT schema_name FROM duckdb_schemas()"
            " WHERE database_name = current_database() ORDER BY schema_name"
        ).fetchall()
        if name.endswith(BUILD_SUFFIX)
    ]
    for schema in schemas:
        drop_schema(con, schema)
    return schemas


def default_parquet_dir(warehouse: Path) -> Path:
    """Where a run writes the release as Parquet and CSV unless told: beside the warehouse."""
    warehouse = Path(warehouse)
    return warehouse.with_name(f"{warehouse.stem}.release")


def step_parquet(warehouse: Path, out_dir: Path, run_id: str | None = None) -> list[Path]:
    """Parquet and CSV copy of every release table, the report's figures as PNG and SVG, and a
    manifest, for BI tools and slides, swapped in atomically (pipelines/export.py)."""
    from pipelines.export import export_release

    return export_release(Path(warehouse), Path(out_dir), run_id=run_id)


def step_report(warehouse: Path, out: Path, run_id: str) -> Path:
    from pipelines.report import write_report

    return write_report(Path(warehouse), Path(out), run_id=run_id)


def _source_format(source: Path, source_format: str) -> str | None:
    """The layout the run read (auto-detection repeated: cheap, file names only)."""
    from pipelines.sources import resolve_format

    try:
        return resolve_format(Path(source), source_format)
    except UserFacingError:
        return None


def step_begin(
    warehouse: Path,
    settings: StudySettings,
    source: Path,
    run_id: str,
    flow_run_id: str | None,
    engine: str = "duckdb",
) -> None:
    with run_connection(warehouse) as con:
        record_run_start(con, run_id, settings, source, flow_run_id, engine)


def step_end(warehouse: Path, result: RunResult) -> None:
    with run_connection(warehouse) as con:
        record_run_end(con, result)


# ---------------------------------------------------------------------------
# The run: the study's table of contents, the same with or without Prefect.


@dataclass(frozen=True)
class StudySteps:
    """The step functions a run calls; the Prefect flow passes task-wrapped ones."""

    ingest: Callable[..., Any] = step_ingest
    input_contracts: Callable[..., Any] = step_input_contracts
    models: Callable[..., Any] = step_models
    statistics: Callable[..., Any] = step_statistics
    sensitivity: Callable[..., Any] = step_sensitivity
    output_contracts: Callable[..., Any] = step_output_contracts
    release: Callable[..., Any] = step_release
    publish: Callable[..., Any] = step_publish
    report: Callable[..., Any] = step_report
    parquet: Callable[..., Any] = step_parquet

    def wrapped(self, wrap: Callable[[Callable[..., Any], str], Callable[..., Any]]) -> StudySteps:
        """The same steps, each passed through `wrap(step, name)`."""
        return StudySteps(**{f.name: wrap(getattr(self, f.name), f.name) for f in fields(self)})


def run_study(
    source: Path,
    warehouse: Path,
    settings: StudySettings,
    *,
    report: Path | None = None,
    parquet_dir: Path | None = None,
    wait_seconds: float = 0.0,
    say: Callable[[str], None] = print,
    flow_run_id: str | None = None,
    steps: StudySteps = StudySteps(),
    engine: Engine = DUCKDB,
    source_format: str = "auto",
    accept_shrink: bool = False,
    force: bool = False,
) -> RunResult:
    """Export -> ingest -> contracts -> SQL models -> statistics -> release -> publish -> report.

    Everything before publish builds apart; a failure stops the run, records it and re-raises,
    leaving the previously published tables as they were. `engine` (pipelines/engines) runs
    ingest and the SQL models; the rest always runs in the warehouse.
    The warehouse lock is held from start to end, ingest included; `accept_shrink` lets
    ingest accept tables that lost many rows (pipelines/guards.py). When nothing the outputs
    depend on changed since the last run, the run is `reused` (pipelines/reuse.py) unless
    `force`."""
    source, warehouse = Path(source), Path(warehouse)
    run = RunResult(new_run_id(), warehouse, engine=engine.name)
    on = engine.for_run(warehouse, run.run_id)
    run.manifest_schema = on.meta_schema
    with (
        warehouse_lock(warehouse, wait_seconds),
        recorded_run(run, settings, source, flow_run_id, say, on.note),
        on.resources(warehouse),
        # every build loads the value sets: an unreviewed one is warned about once per run
        valuesets.one_warning_per_run(),
        # the reuse check's file digests serve the ingest: each export file read once per run
        digests.sharing(),
    ):
        stage = Stages(run, say)
        if kept := reuse.try_reuse(
            run, on, source, settings, source_format, force=force, stage=stage
        ):
            run.report = report and Path(report)
            # nothing re-written that is already that run's (same bytes): a re-run writes no file
            report_to, parquet_to = (
                reuse.stale(report, kept),
                reuse.stale_parquet(parquet_dir, kept),
            )
            write_files(stage, steps, warehouse, run, report_to, parquet_to, kept)
            return run
        stage("ingest", steps.ingest, source, warehouse, say, on, source_format, accept_shrink)
        stage("input contracts", steps.input_contracts, warehouse, on)
        stage("models", steps.models, warehouse, settings, BUILD_SUFFIX, engine=on)
        stage("statistics", steps.statistics, warehouse, settings, run.run_id)
        stage("sensitivity", steps.sensitivity, warehouse, settings, run.run_id, on)
        stage("output contracts", steps.output_contracts, warehouse, settings)
        stage("release", steps.release, warehouse, settings, run.run_id)
        fmt = _source_format(source, source_format)
        run.row_counts = stage("publish", steps.publish, warehouse, run.run_id, on, fmt, settings)
        # The outputs are published: record the end now so that the run's own report shows
        # its final status and provenance (recorded again at the very end, with the timings
        # of the last stages, or as failed if one of them fails).
        run.status = "succeeded"
        step_end(warehouse, run)
        write_files(stage, steps, warehouse, run, report, parquet_dir, run.run_id)
    return run


def write_files(
    stage: Stages,
    steps: StudySteps,
    warehouse: Path,
    run: RunResult,
    report: Path | None,
    parquet_dir: Path | None,
    published_run: str,
) -> None:
    """The report and the Parquet copy of the published tables (built by `published_run`)."""
    if report:
        run.report = stage("report", steps.report, warehouse, Path(report), published_run)
    if parquet_dir:
        stage("parquet", steps.parquet, warehouse, Path(parquet_dir), published_run)
