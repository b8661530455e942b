"""Prefect flows: thin wrappers that read like the pipeline's table of contents.

Tasks take paths and plain values (never open connections) and call the plain functions
in pipelines/*.py, which hold the logic and are tested without Prefect.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from pipelines import study
from pipelines.contracts import validate_raw
from pipelines.engines import DEFAULT_ENGINE, engine_for
from pipelines.ingest import IngestSummary
from pipelines.settings import load_settings
from pipelines.sources import load_source

STUDY_FLOW_NAME = "redflags-study"
DEFAULT_DEPLOYMENT = "redflags-nightly"


def _task(step, name: str):
    """A Prefect task over a plain step function (no caching: every run recomputes)."""
    return task(step, name=name.replace("_", " "), cache_policy=NO_CACHE)


@task(cache_policy=NO_CACHE)
def ingest_task(
    source: str,
    warehouse: str,
    source_format: str = "auto",
    accept_shrink: bool = False,
    lock: bool = True,
) -> IngestSummary:
    """Load the export into raw.* in any source layout (atomic; Synthea CSV incrementally)."""
    return load_source(
        Path(source),
        Path(warehouse),
        source_format,
        get_run_logger().info,
        accept_shrink=accept_shrink,
        lock=lock,
    )


@task(cache_policy=NO_CACHE)
def validate_raw_task(warehouse: str) -> str:
    """Run the input contracts on raw.*; raises ContractError when one fails."""
    report = validate_raw(Path(warehouse))
    get_run_logger().info(report.format())
    return report.format()


@flow(name="ingest")
def ingest_flow(
    source: str,
    warehouse: str,
    source_format: str = "auto",
    accept_shrink: bool = False,
    lock: bool = True,
) -> IngestSummary:
    """Export folder -> raw.* behind the input contracts. `lock=False` when the caller
    already holds the warehouse lock (`redflags ingest` takes it before Prefect starts)."""
    summary = ingest_task(source, warehouse, source_format, accept_shrink, lock)
    contracts = validate_raw_task(warehouse)
    return dataclasses.replace(summary, contracts=contracts)


TASK_STEPS = study.StudySteps().wrapped(_task)


@flow(name=STUDY_FLOW_NAME)
def study_flow(
    source: str,
    warehouse: str,
    config: str | None = None,
    report: str | None = None,
    parquet_dir: str | None = None,
    wait_seconds: float = 0.0,
    engine: str = DEFAULT_ENGINE,
    spark_master: str = "local[*]",
    spark_dir: str | None = None,
    source_format: str = "auto",
    accept_shrink: bool = False,
    force: bool = False,
) -> study.RunResult:
    """Export -> ingest -> contracts -> SQL models -> statistics -> release -> report.

    `engine="spark"` runs ingest and the SQL models on Spark at `spark_master` (a master URL
    or a Spark Connect address), writing Parquet under `spark_dir` (default
    `<warehouse>.spark/`); see docs/spark.md. An unchanged export, settings and code
    re-publish the last run's outputs unless `force` (pipelines/reuse.py)."""
    return study.run_study(
        Path(source),
        Path(warehouse),
        load_settings(config),
        report=Path(report) if report else None,
        parquet_dir=Path(parquet_dir) if parquet_dir else None,
        wait_seconds=wait_seconds,
        say=get_run_logger().info,
        flow_run_id=flow_run.id,
        steps=TASK_STEPS,
        engine=engine_for(engine, spark_master=spark_master, spark_dir=spark_dir),
        source_format=source_format,
        accept_shrink=accept_shrink,
        force=force,
    )


def study_parameters(
    source: str,
    warehouse: str,
    config: str | None = None,
    report: str | None = None,
    parquet_dir: str | None = None,
    wait_seconds: float = 600.0,
    engine: str = DEFAULT_ENGINE,
    spark_master: str = "local[*]",
    spark_dir: str | None = None,
    source_format: str = "auto",
    accept_shrink: bool = False,
) -> dict[str, Any]:
    """The study flow's parameters for a scheduled deployment (waits for a running run)."""
    engine_for(engine)  # an unknown engine fails now, not at 02:00
    return {
        "source": str(source),
        "warehouse": str(warehouse),
        "config": config,
        "report": report,
        "parquet_dir": parquet_dir,
        "wait_seconds": wait_seconds,
        "engine": engine,
        "spark_master": spark_master,
        "spark_dir": spark_dir,
        "source_format": source_format,
        "accept_shrink": accept_shrink,
    }


def study_deployment(
    source: str,
    warehouse: str,
    cron: str = "0 2 * * *",
    timezone: str = "UTC",
    name: str = DEFAULT_DEPLOYMENT,
    **parameters: Any,
):
    """The scheduled deployment of the study flow (what `redflags serve` serves)."""
    from prefect.schedules import Cron

    return study_flow.to_deployment(
        name=name,
        schedule=Cron(cron, timezone=timezone),
        parameters=study_parameters(source, warehouse, **parameters),
        concurrency_limit=1,
        tags=["redflags"],
        description="Study run on the newest export; ingest is incremental by file hash.",
    )


def serve_study(
    source: str,
    warehouse: str,
    cron: str = "0 2 * * *",
    timezone: str = "UTC",
    name: str = DEFAULT_DEPLOYMENT,
    **parameters: Any,
) -> None:
    """Serve the scheduled deployment until interrupted (Ctrl-C)."""
    from prefect import serve

    serve(study_deployment(source, warehouse, cron, timezone, name, **parameters))
