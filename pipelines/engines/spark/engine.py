"""The Spark engine (`redflags run --engine spark`): ingest, models and sensitivity on Spark.

`pipelines.study.run_study` calls the same stages for every engine (`pipelines/engines`);
with a `SparkEngine`, the `SparkRun` it binds to the run does the engine's part:

- ingest: a Synthea CSV export is read by Spark (`execution.ingest_to_spark`) into Parquet
  under the run's folder, `<spark-dir>/runs/<run_id>/{raw,meta}`; an OMOP or FHIR export is
  loaded by its DuckDB source adapter into a scratch warehouse whose tables are written as
  the same Parquet (`ingest_with_adapter`). The DuckDB engine's `raw`,
  `meta` and `landing` tables are never touched, so the two engines can share a
  warehouse. The warehouse gets views `spark_raw__build.<table>` on the raw Parquet (the
  input contracts run on them) and copies of the small `meta` tables (quarantine,
  source_tables, ingest_manifest) in `spark_meta__build`.
- models: every model of `sql/` is built on Spark into `<run>/{staging,intermediate,mart}`;
  the episode-level mart tables are copied into `mart__build`, where the statistics,
  output contracts, release and publish run exactly as after a DuckDB build, and
  `int_data_extract_date` into `intermediate__build` (`extract_schema`: the run history's
  extract date, pipelines/history.py).
- sensitivity: each variant builds on Spark only the models downstream of the parameter it
  changes (the others read the primary build's Parquet), into `<run>/sens_<name>/`.
- publish: `mart` and `release`, `spark_meta` (copied) and `spark_raw` (views on this run's
  raw Parquet) are replaced in one transaction; the study then drops the build schemas and
  older run folders are removed. A run that fails removes its own folder and leaves the
  published tables and folder as they were.

pyspark is imported only when a session is started (`execution.spark_session`).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines import schema
from pipelines.engines.spark import execution as se
from pipelines.guards import check_table_sizes
from pipelines.models import model_graph
from pipelines.settings import StudySettings
from pipelines.warehouse import BUILD_SUFFIX, open_for_run, open_warehouse, table_exists

log = logging.getLogger(__name__)

RAW_SCHEMA = "spark_raw"  # views on the published run's raw Parquet
META_SCHEMA = "spark_meta"  # copies of the published run's quarantine, source_tables, manifest
META_COPIED = ("quarantine", "source_tables", "ingest_manifest")
# Models the warehouse reads besides the marts, copied into `intermediate<suffix>` as a
# DuckDB build leaves them: the run history's extract date (pipelines/history.py).
INTERMEDIATE_COPIED = ("int_data_extract_date",)
RUNS_FOLDER = "runs"


@dataclass(frozen=True)
class SparkEngine:
    """What the user chose: a Spark master (or Spark Connect address) and an output folder."""

    master: str = se.DEFAULT_MASTER
    spark_dir: Path | None = None  # default: beside the warehouse, <warehouse>.spark/
    name: str = "spark"

    @classmethod
    def from_options(
        cls, spark_master: str = se.DEFAULT_MASTER, spark_dir: str | Path | None = None
    ) -> SparkEngine:
        """From the command line's or the flow's parameters (`--spark-master`, `--spark-dir`)."""
        return cls(spark_master or se.DEFAULT_MASTER, Path(spark_dir) if spark_dir else None)

    def folder(self, warehouse: Path) -> Path:
        return Path(self.spark_dir) if self.spark_dir else Path(str(warehouse) + ".spark")

    def for_run(self, warehouse: Path, run_id: str) -> SparkRun:
        return SparkRun(self.master, (self.folder(warehouse) / RUNS_FOLDER / run_id).resolve())


@dataclass(frozen=True)
class SparkRun:
    """One run on Spark: the master, and the folder its Parquet tables go to
    (`pipelines.engines.base.EngineRun`)."""

    master: str
    run_dir: Path
    name: str = "spark"
    raw_schema: str = RAW_SCHEMA + BUILD_SUFFIX  # views on this run's raw Parquet
    meta_schema: str = META_SCHEMA
    extract_schema: str = "intermediate" + BUILD_SUFFIX  # INTERMEDIATE_COPIED, by `models`
    note: str = " (engine spark)"
    reusable: bool = False  # spark_raw views read this run's Parquet folder (pipelines/reuse.py)

    def resources(self, warehouse: Path) -> AbstractContextManager[SparkRun]:
        return run_folder(warehouse, self)

    def ingest(
        self,
        source: Path,
        warehouse: Path,
        say: Callable[[str], None] = print,
        source_format: str = "auto",
        accept_shrink: bool = False,
    ) -> dict[str, int]:
        from pipelines.sources import resolve_format

        # the layout first (auto-detected as the DuckDB engine does): Synthea CSV is read by
        # Spark; OMOP and FHIR by their DuckDB source adapter, whose tables become Parquet
        fmt = resolve_format(Path(source), source_format, say)
        if fmt != "synthea":
            return ingest_with_adapter(
                Path(source), Path(warehouse), self, fmt, say, accept_shrink=accept_shrink
            )
        return ingest(Path(source), Path(warehouse), self, say, accept_shrink=accept_shrink)

    def build_models(
        self,
        warehouse: Path,
        settings: StudySettings,
        suffix: str = BUILD_SUFFIX,
        reuse_suffix: str | None = None,
    ) -> dict[str, int]:
        """Every model on Spark (`reuse_suffix` is DuckDB's: Spark builds a variant with
        `build_variant`); the mart tables are copied in."""
        return models(Path(warehouse), settings, self, suffix)

    def build_variant(
        self, warehouse: Path, primary: StudySettings, variant: StudySettings, suffix: str
    ) -> None:
        build_variant(Path(warehouse), primary, variant, suffix, self)

    def publish_extra(self, con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
        return publish_extra(con, self, run_id)

    def after_publish(self) -> None:
        remove_other_runs(self)


def _connect(warehouse: Path) -> duckdb.DuckDBPyConnection:
    return open_for_run(Path(warehouse))


def _folders(root: Path, schema_name: str) -> dict[str, Path]:
    base = Path(root) / schema_name
    return {p.name: p for p in sorted(base.iterdir()) if p.is_dir()} if base.is_dir() else {}


def _session(spark_run: SparkRun):
    return se.spark_session(spark_run.master)


def ingest(
    source: Path,
    warehouse: Path,
    spark_run: SparkRun,
    say: Callable[[str], None] = print,
    *,
    accept_shrink: bool = False,
) -> dict[str, int]:
    """Read the export on Spark into the run's raw and meta Parquet; expose them to DuckDB."""
    started = time.perf_counter()
    say(f"starting Spark ({spark_run.master}) ...")
    spark = _session(spark_run)
    say(f"Spark {spark.version} ready in {time.perf_counter() - started:.1f}s")
    counts = se.ingest_to_spark(spark, Path(source), spark_run.run_dir)
    return _expose_ingest(warehouse, spark_run, counts, say, accept_shrink)


def ingest_with_adapter(
    source: Path,
    warehouse: Path,
    spark_run: SparkRun,
    fmt: str,
    say: Callable[[str], None] = print,
    *,
    accept_shrink: bool = False,
) -> dict[str, int]:
    """An OMOP or FHIR export: its DuckDB source adapter (pipelines/sources) loads it into a
    scratch warehouse in `<warehouse>.tmp/`, whose raw.* and ingest meta tables are written
    as Parquet where `ingest_to_spark` writes its own (`<run>/raw/<table>/`,
    `<run>/meta/<table>/`); the Spark models read them as they read a Synthea CSV ingest.
    The scratch warehouse is removed whether the load succeeds or not."""
    from pipelines.sources import adapters

    scratch = Path(str(warehouse) + ".tmp") / f"spark-source-{spark_run.run_dir.name}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        summary = adapters()[fmt].load(
            Path(source), scratch / "source.duckdb", say, accept_shrink=accept_shrink, lock=False
        )
        say(summary.format())
        with open_warehouse(scratch / "source.duckdb", read_only=True) as con:
            for schema_name, tables in (("raw", schema.TABLES), ("meta", se.INGEST_META_TABLES)):
                for table in tables:
                    folder = spark_run.run_dir / schema_name / table
                    folder.mkdir(parents=True, exist_ok=True)
                    # a Python call, not COPY: the path is never part of SQL text
                    con.table(f"{schema_name}.{table}").write_parquet(
                        str(folder / "part-0.parquet")
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with suppress(OSError):  # `<warehouse>.tmp/` too, when nothing else is in it
            scratch.parent.rmdir()
    return _expose_ingest(warehouse, spark_run, summary.counts(), say, accept_shrink)


def _expose_ingest(
    warehouse: Path,
    spark_run: SparkRun,
    counts: dict[str, int],
    say: Callable[[str], None],
    accept_shrink: bool = False,
) -> dict[str, int]:
    """The run's raw Parquet as views `spark_raw__build.*`, its small meta tables copied into
    `spark_meta__build`; returns rows loaded per raw table.

    Then the guards of the DuckDB ingest (pipelines/guards.py): an empty required table, or
    (unless `accept_shrink`) a table that lost more than MAX_ROW_DROP_FRACTION of its rows
    since the published run, fails the ingest, so nothing is published from a truncated or
    emptied export. The published run's sizes are `spark_meta.source_tables` (a Spark run)
    or else `meta.source_tables` (the DuckDB engine's last ingest)."""
    root = spark_run.run_dir
    with _connect(warehouse) as con:
        se.load_into_duckdb(con, _folders(root, "raw"), RAW_SCHEMA + "__build", as_views=True)
        meta = {t: root / "meta" / t for t in META_COPIED}
        se.load_into_duckdb(con, meta, META_SCHEMA + "__build")
        quarantined = con.execute(
            f"SELECT count(*) FROM {META_SCHEMA}__build.quarantine"
        ).fetchone()[0]
        after = _table_sizes(con, META_SCHEMA + "__build")
        before = _table_sizes(con, META_SCHEMA) or _table_sizes(con, "meta")
    check_table_sizes(before, after, schema.REQUIRED_TABLES, accept_shrink=accept_shrink)
    say(
        f"spark ingest: {sum(counts.values()):,} rows in {len(counts)} tables, "
        f"{quarantined:,} quarantine rows ({META_SCHEMA}__build.quarantine), Parquet in {root}"
    )
    return {f"raw.{t}": n for t, n in counts.items()}


def _table_sizes(con: duckdb.DuckDBPyConnection, schema_name: str) -> dict[str, int]:
    """Rows per raw table in `<schema_name>.source_tables`; empty when there is none."""
    if not table_exists(con, schema_name, "source_tables"):
        return {}
    return dict(
        con.execute(f"SELECT table_name, n_rows FROM {schema_name}.source_tables").fetchall()
    )


def _prepare_session(spark_run: SparkRun):
    """The session, with the run's raw and meta tables and the value sets as temp views."""
    spark = _session(spark_run)
    se.register_tables(spark, spark_run.run_dir, ("raw", "meta"))
    se.load_value_set_tables(spark)
    return spark


def _mart_folders(written: dict[str, Path]) -> dict[str, Path]:
    return {q.split(".", 1)[1]: p for q, p in written.items() if q.startswith("mart.")}


def models(
    warehouse: Path, settings: StudySettings, spark_run: SparkRun, suffix: str
) -> dict[str, int]:
    """Build every model on Spark; copy the mart tables into `mart<suffix>` in the warehouse,
    and the few intermediate ones it reads (`INTERMEDIATE_COPIED`) into `intermediate<suffix>`."""
    spark = _prepare_session(spark_run)
    written = se.build_models_on_spark(spark, settings, spark_run.run_dir)
    marts = _mart_folders(written)
    intermediate = {t: written[f"intermediate.{t}"] for t in INTERMEDIATE_COPIED}
    with _connect(warehouse) as con:
        for schema_name in ("staging", "intermediate", "mart"):
            con.execute(f'DROP SCHEMA IF EXISTS "{schema_name}{suffix}" CASCADE')
        se.load_into_duckdb(con, marts, "mart" + suffix)
        # copies, not views: one row each, and the warehouse must not depend on the run's folder
        se.load_into_duckdb(con, intermediate, "intermediate" + suffix)
        return {
            f"mart.{t}": con.execute(f'SELECT count(*) FROM mart{suffix}."{t}"').fetchone()[0]
            for t in marts
        }


def build_variant(
    warehouse: Path,
    settings: StudySettings,
    variant: StudySettings,
    suffix: str,
    spark_run: SparkRun,
) -> None:
    """One sensitivity variant on Spark, reusing the primary build's unchanged models; its
    marts become views in the warehouse schema `mart<suffix>`."""
    spark = _prepare_session(spark_run)
    name = suffix.strip("_")
    folder = spark_run.run_dir / name
    written = se.build_models_on_spark(spark, variant, folder, reuse=(spark_run.run_dir, settings))
    rebuilt = sum(1 for p in written.values() if folder in p.parents)
    log.info("spark sensitivity %s: %d of %d models rebuilt", name, rebuilt, len(model_graph()))
    with _connect(warehouse) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "mart{suffix}" CASCADE')
        se.load_into_duckdb(con, _mart_folders(written), "mart" + suffix, as_views=True)


def publish_extra(
    con: duckdb.DuckDBPyConnection, spark_run: SparkRun, run_id: str
) -> dict[str, int]:
    """Inside the publish transaction: `spark_meta` from its build copy (rows carry `run_id`,
    as every published row does), `spark_raw` as views on this run's raw Parquet."""
    counts = {}
    con.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")
    se.load_into_duckdb(con, _folders(spark_run.run_dir, "raw"), RAW_SCHEMA, as_views=True)
    con.execute(f"DROP SCHEMA IF EXISTS {META_SCHEMA} CASCADE")
    con.execute(f"CREATE SCHEMA {META_SCHEMA}")
    for table in META_COPIED:
        con.execute(
            f"CREATE TABLE {META_SCHEMA}.{table} AS"
            f" SELECT *, $run_id::VARCHAR AS run_id FROM {META_SCHEMA}__build.{table}",
            {"run_id": run_id},
        )
        counts[f"{META_SCHEMA}.{table}"] = con.execute(
            f"SELECT count(*) FROM {META_SCHEMA}.{table}"
        ).fetchone()[0]
    return counts


def remove_other_runs(spark_run: SparkRun) -> None:
    """After a successful publish: delete the Parquet of every earlier run."""
    for folder in spark_run.run_dir.parent.iterdir():
        if folder.is_dir() and folder != spark_run.run_dir:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def run_folder(warehouse: Path, spark_run: SparkRun) -> Iterator[SparkRun]:
    """The run's folder: created now; on failure removed, with the views that read it."""
    spark_run.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield spark_run
    except BaseException:
        shutil.rmtree(spark_run.run_dir, ignore_errors=True)
        with suppress(Exception), _connect(warehouse) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA}__build CASCADE")
        raise
