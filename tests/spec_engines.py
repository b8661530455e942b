"""The engines the spec tests build on (docs/testing.md, "Spec tests on both engines").

`tests/model_spec.build_study` writes the hand-written raw rows into DuckDB; on the default
engine the models are then built in that connection, as always. On another engine the rows
are staged the way that engine's ingest leaves them, the engine's run object
(`pipelines.engines`, `EngineRun.build_models`) builds every model, and the model tables are
copied back into the DuckDB connection, so that every `assert_rows(con, "select ...")` of a
spec test reads the same schemas whichever engine built them.

The Spark session is local (`SPEC_MASTER`), started once per test process and reused
(`spark_session` is `getOrCreate`); small shuffles (`SPEC_SHUFFLE_PARTITIONS`): the spec
tables have a few rows, and 200 partitions per join would cost more than the join.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipelines.engines import engine_for
from pipelines.settings import StudySettings
from pipelines.valuesets import load_value_sets
from pipelines.warehouse import connect

DEFAULT = "duckdb"
ENGINES = ("duckdb", "spark")
SPEC_MASTER = "local[2]"
SPEC_SHUFFLE_PARTITIONS = "2"
MODEL_SCHEMAS = ("staging", "intermediate", "mart")
# The spec tests run on Spark by `make test-spark`: one or more per spec file, covering the
# cohort (windows, dates, attrition), every flag family with a missing optional table, units,
# the pathway and the clinical marts. A Spark build of the 44 models costs about a minute of
# CPU (docs/testing.md), so not all 57 study-building tests; REDFLAGS_SPEC_SPARK=all runs all.
SPARK_SUBSET = {
    "test_models_cohort.py::test_the_default_extract_date_is_the_latest_record_date_and_ignores_stop_dates",
    "test_models_cohort.py::test_the_landmark_population_excludes_episodes_diagnosed_dead_or_unobserved_by_day_42",
    "test_models_cohort.py::test_attrition_reports_every_protocol_step_in_order",
    "test_models_flags.py::test_a_missing_optional_table_nulls_and_lists_only_the_flags_that_need_it",
    "test_models_flags.py::test_elevated_alp_is_a_value_above_the_upper_limit_in_the_window",
    "test_models_flags.py::test_the_first_spine_imaging_after_index_and_its_modality_make_the_pathway",
    "test_clinical_baseline.py::test_baseline_characteristics_are_taken_at_index",
    "test_clinical_prognosis.py::test_prognosis_mart_interval_sre_window_and_survival_from_diagnosis",
    "test_clinical_care.py::test_care_is_counted_from_the_diagnosis_day_to_the_end_of_the_window",
    "test_flags_registry.py::test_the_built_tables_follow_the_registry",
}  # fmt: skip


def on_spark(file_name: str, test_name: str) -> bool:
    """Whether a study-building spec test also runs on Spark (SPARK_SUBSET, or all)."""
    import os

    return (
        os.environ.get("REDFLAGS_SPEC_SPARK") == "all"
        or f"{file_name}::{test_name}" in SPARK_SUBSET
    )


# The raw inputs a model build reads besides raw.*: what an ingest writes in meta.
INGEST_META = ("source_tables", "observation_periods")


def _copy_to_parquet(con: duckdb.DuckDBPyConnection, qualified: str, folder: Path) -> None:
    """One DuckDB table as a Parquet folder, as the Spark engine's ingest writes each table."""
    folder.mkdir(parents=True)
    con.execute(
        f"COPY (SELECT * FROM {qualified}) TO ? (FORMAT parquet)", [str(folder / "0.parquet")]
    )


def _stage_for_spark(con: duckdb.DuckDBPyConnection, run) -> None:
    """The raw and meta tables where a Spark run's ingest leaves them: `<run>/raw/<table>/`,
    `<run>/meta/<table>/` (the engine registers them as its temp views)."""
    from pipelines import schema

    for table in schema.TABLES:
        _copy_to_parquet(con, f"raw.{table}", run.run_dir / "raw" / table)
    for table in INGEST_META:
        _copy_to_parquet(con, f"meta.{table}", run.run_dir / "meta" / table)


def _spark_session() -> None:
    from pipelines.engines.spark.execution import spark_session

    spark = spark_session(SPEC_MASTER)
    spark.conf.set("spark.sql.shuffle.partitions", SPEC_SHUFFLE_PARTITIONS)


def _load_spark_tables(con: duckdb.DuckDBPyConnection, run) -> None:
    """staging and intermediate from the run's Parquet (the engine itself copies only the
    marts into the warehouse: the statistics read nothing else)."""
    from pipelines.engines.spark.execution import load_into_duckdb

    for schema_name in MODEL_SCHEMAS[:-1]:
        base = run.run_dir / schema_name
        folders = {p.name: p for p in sorted(base.iterdir()) if p.is_dir()}
        load_into_duckdb(con, folders, schema_name)


# How hand-written raw tables reach each engine other than the default, and how its other
# model tables come back: (start, stage, load back).
STAGING: dict[str, tuple[Callable[[], None], Callable, Callable]] = {
    "spark": (_spark_session, _stage_for_spark, _load_spark_tables),
}


@contextmanager
def _scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="redflags-spec-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build_on_engine(
    name: str,
    settings: StudySettings,
    create: Callable[[duckdb.DuckDBPyConnection], None],
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection holding the raw tables `create` writes and every model
    table as engine `name` builds it."""
    start, stage, load_back = STAGING[name]
    start()
    with _scratch() as folder:
        warehouse = folder / "spec.duckdb"
        with connect(warehouse) as con:
            create(con)
            con.execute(
                "CREATE TABLE IF NOT EXISTS meta.observation_periods (patient_id VARCHAR,"
                " start_date DATE, end_date DATE, source_file VARCHAR, source_line BIGINT)"
            )
        run = engine_for(name, spark_master=SPEC_MASTER).for_run(warehouse, "spec")
        with run.resources(warehouse):
            stage_con = connect(warehouse, read_only=True)
            try:
                stage(stage_con, run)
            finally:
                stage_con.close()
            run.build_models(warehouse, settings, "")
            with connect(warehouse) as con:
                load_back(con, run)
                load_value_sets(con)  # meta.value_sets, meta.flags, as a DuckDB build leaves them
        out = duckdb.connect()
        out.execute("ATTACH ? AS spec (READ_ONLY)", [str(warehouse)])
        for schema_name, table in out.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'spec'"
        ).fetchall():
            out.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
            out.execute(
                f'CREATE TABLE "{schema_name}"."{table}" AS SELECT * FROM spec."{schema_name}"."{table}"'
            )
        out.execute("DETACH spec")
        return out
