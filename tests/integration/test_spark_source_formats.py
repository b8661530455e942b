"""`--engine spark` with an OMOP or FHIR export: the DuckDB source adapter loads it into a
scratch warehouse (in `<warehouse>.tmp/`, removed after), whose raw and meta tables become
the run's Parquet where the Spark ingest writes its own; the Spark models read them.

Without Spark (part of `make test`): the Parquet holds exactly the adapter's rows, the
warehouse gets the `spark_raw__build` views and `spark_meta__build` copies, Spark is not
started for the ingest, and a load that fails leaves no scratch warehouse nor run folder.
With Spark (`make test-spark`): the whole study on a generated OMOP and FHIR export
publishes the same tables and report headline as the DuckDB engine on the same export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from snapshots import snapshot
from test_spark_study import column_types, differences

from pipelines import schema
from pipelines.engines.spark import SparkEngine
from pipelines.engines.spark import execution as se
from pipelines.errors import UserFacingError
from pipelines.generator.convert import generate_in_format
from pipelines.settings import StudySettings
from pipelines.sources import load_source
from pipelines.study import run_study

FORMATS = ("omop", "fhir")
# The source layout matters up to raw.*; the sensitivity variants on Spark (the same models
# downstream of raw) are checked by test_spark_study.py, so this test skips them.
SETTINGS = StudySettings(sensitivity_analyses=())


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark_formats")
    for fmt in FORMATS:
        generate_in_format(root / fmt, fmt, patients=30, seed=3)
    return root


def rows(con: duckdb.DuckDBPyConnection, relation: str, exclude: str = "") -> list[tuple]:
    select = f"* EXCLUDE ({exclude})" if exclude else "*"
    return con.execute(f"SELECT {select} FROM {relation} ORDER BY ALL").fetchall()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("named", [False, True])
def test_spark_ingest_of_omop_or_fhir_writes_the_source_adapter_s_tables_as_parquet(
    exports, tmp_path, fmt, named
):
    duck = tmp_path / "duck.duckdb"
    load_source(exports / fmt, duck, fmt, log=lambda m: None)
    warehouse = tmp_path / "w.duckdb"
    on = SparkEngine("local[1]", spark_dir=tmp_path / "spark").for_run(warehouse, "run1")
    said = []
    with on.resources(warehouse):
        counts = on.ingest(exports / fmt, warehouse, said.append, fmt if named else "auto")
    assert not any(line.startswith("starting Spark") for line in said)  # no Spark to ingest
    assert not list((tmp_path / "w.duckdb.tmp").glob("spark-source-*"))  # scratch removed
    with duckdb.connect(str(duck), read_only=True) as con:
        expected_counts = {f"raw.{t}": con.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0]
                           for t in schema.TABLES}  # fmt: skip
        assert counts == expected_counts and counts["raw.patients"] == 30
        for table in schema.TABLES:
            folder = on.run_dir / "raw" / table
            assert rows(con, f"raw.{table}") == rows(
                con, f"read_parquet('{se.parquet_glob(folder)}')"
            ), table
        for table in se.INGEST_META_TABLES:
            folder = on.run_dir / "meta" / table
            exclude = "loaded_at" if table == "ingest_manifest" else ""  # the time of the load
            assert rows(con, f"meta.{table}", exclude) == rows(
                con, f"read_parquet('{se.parquet_glob(folder)}')", exclude
            ), table
        expected_patients = rows(con, "raw.patients")
        expected_manifest = rows(con, "meta.ingest_manifest", "loaded_at")
        periods = con.execute("SELECT count(*) FROM meta.observation_periods").fetchone()[0]
    assert (periods > 0) == (fmt == "omop")  # OMOP's observation periods reach the models
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert rows(con, "spark_raw__build.patients") == expected_patients
        assert rows(con, "spark_meta__build.ingest_manifest", "loaded_at") == expected_manifest
        assert con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name IN ('raw', 'landing')"
        ).fetchone() == (0,)  # the DuckDB engine's own ingest tables are not touched


def test_a_spark_run_whose_omop_load_fails_leaves_no_scratch_warehouse_nor_run_folder(
    exports, tmp_path
):
    broken = shutil.copytree(exports / "omop", tmp_path / "omop")
    person = broken / "person.csv"
    person.write_text(person.read_text().splitlines()[0] + "\n")  # the header only
    warehouse = tmp_path / "w.duckdb"
    with pytest.raises(UserFacingError, match="patients"):
        run_study(broken, warehouse, SETTINGS, say=lambda m: None,
                  engine=SparkEngine("local[1]", spark_dir=tmp_path / "spark"))  # fmt: skip
    with duckdb.connect(str(warehouse), read_only=True) as con:
        status, error = con.execute("SELECT status, error FROM meta.runs").fetchone()
    assert status == "failed" and error.startswith("ingest: ")
    assert not any((tmp_path / "spark" / "runs").iterdir())  # the run's folder is removed
    assert not list((tmp_path / "w.duckdb.tmp").glob("spark-source-*"))


def headline_numbers(warehouse: Path) -> list[tuple[str, str]]:
    from pipelines.report.load import load_released
    from pipelines.report.tables import headline
    from pipelines.report.text import Fmt

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return headline(load_released(con), Fmt())


@pytest.mark.spark
@pytest.mark.parametrize("fmt", FORMATS)
def test_spark_run_of_an_omop_or_fhir_export_publishes_what_duckdb_does(
    spark, tmp_path_factory, fmt
):
    root = tmp_path_factory.mktemp(f"spark_{fmt}")
    generate_in_format(root / "export", fmt, patients=300, seed=11)
    run_study(root / "export", root / "duck.duckdb", SETTINGS, say=lambda m: None)
    warehouse = root / "spark.duckdb"
    run = run_study(root / "export", warehouse, SETTINGS, say=lambda m: None,
                    engine=SparkEngine("local[2]"))  # fmt: skip
    assert run.status == "succeeded"

    duck, on_spark = snapshot(root / "duck.duckdb"), snapshot(warehouse)
    assert {"mart.cohort", "mart.red_flags", "mart.flag_accuracy"} <= set(duck)
    assert len(duck["mart.cohort"]) > 20  # a cohort to compare, not two empty tables
    assert differences(duck, on_spark) == []
    assert column_types(root / "duck.duckdb") == column_types(warehouse)
    headline = headline_numbers(warehouse)
    assert headline == headline_numbers(root / "duck.duckdb") and len(headline) == 5

    with duckdb.connect(str(root / "duck.duckdb"), read_only=True) as con:
        raw = {t: con.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0] for t in schema.TABLES}
        quarantine = rows(con, "meta.quarantine")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert {
            t: con.execute(f"SELECT count(*) FROM spark_raw.{t}").fetchone()[0]
            for t in schema.TABLES
        } == raw
        assert rows(con, "spark_meta.quarantine", "run_id") == quarantine
        assert con.execute("SELECT engine FROM meta.runs").fetchall() == [("spark",)]
    assert not list(Path(str(warehouse) + ".tmp").glob("spark-source-*"))


def test_a_spark_run_refuses_an_export_that_shrank_since_the_published_run(exports, tmp_path):
    """The DuckDB engine's guards hold on Spark too (pipelines/guards.py, run at the end of
    the Spark ingest): after a published run on 30 patients, an export of 10 fails the
    ingest with one line naming the tables, so nothing is published from it; with
    `--accept-shrink` it loads. Checked on the OMOP path (no Spark needed to ingest); the
    Synthea CSV path runs the same check on the same tables."""
    from pipelines.guards import ShrinkError
    from pipelines.warehouse import open_for_run

    warehouse = tmp_path / "w.duckdb"
    engine = SparkEngine("local[1]", spark_dir=tmp_path / "spark")
    first = engine.for_run(warehouse, "run1")
    with first.resources(warehouse):
        first.ingest(exports / "omop", warehouse, lambda m: None, "omop")
    with open_for_run(warehouse) as con:  # what the study's publish step does for Spark
        con.execute("BEGIN TRANSACTION")
        first.publish_extra(con, "run1")
        con.execute("COMMIT")
    smaller = shutil.copytree(exports / "omop", tmp_path / "omop")
    person = smaller / "person.csv"
    person.write_text("\n".join(person.read_text().splitlines()[:11]) + "\n")  # 10 of 30
    second = engine.for_run(warehouse, "run2")
    with second.resources(warehouse), pytest.raises(ShrinkError, match=r"patients 30 -> 10"):
        second.ingest(smaller, warehouse, lambda m: None, "omop")
    third = engine.for_run(warehouse, "run3")
    with third.resources(warehouse):
        counts = third.ingest(smaller, warehouse, lambda m: None, "omop", accept_shrink=True)
    assert counts["raw.patients"] == 10
