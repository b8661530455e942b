"""`redflags run --engine spark`: the whole study with ingest and the SQL models on Spark.

Marker `spark` (`make test-spark`). One generated export goes through the DuckDB engine
(`run_study`, no Prefect) and through `redflags run --engine spark` in a process of its own
(Prefect, a local Spark). Every published table must be the same; the Spark run's own
tables (raw views, quarantine, manifest), its provenance and its folder are checked, and a
Spark run that fails must leave what was published, and its folder, as they were.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from snapshots import snapshot

from pipelines.errors import ContractError
from pipelines.generator import generate
from pipelines.settings import StudySettings
from pipelines.study import run_study

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]


def column_types(warehouse: Path) -> dict[tuple[str, str, str], str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns()"
            " WHERE schema_name IN ('mart', 'release')"
        ).fetchall()
    return {(s, t, c): ty for s, t, c, ty in rows}


def same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float | int):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def differences(left: dict[str, list[tuple]], right: dict[str, list[tuple]]) -> list[str]:
    found = [f"tables differ: {sorted(set(left) ^ set(right))}"] if set(left) != set(right) else []
    for table in sorted(set(left) & set(right)):
        a, b = left[table], right[table]
        if len(a) != len(b):
            found.append(f"{table}: {len(a)} rows vs {len(b)}")
            continue
        bad = [i for i, (x, y) in enumerate(zip(a, b, strict=True))
               if len(x) != len(y) or not all(map(same_value, x, y))]  # fmt: skip
        if bad:
            found.append(
                f"{table}: {len(bad)} rows differ, first duckdb {a[bad[0]]} spark {b[bad[0]]}"
            )
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same export through both engines; the Spark one as a user runs it."""
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs Java")
    pytest.importorskip("pyspark")
    root = tmp_path_factory.mktemp("spark_study")
    generate(root / "export", patients=300, seed=11)
    run_study(root / "export", root / "duckdb.duckdb", StudySettings(), say=lambda m: None)
    warehouse = root / "spark.duckdb"
    env = {**os.environ, "PREFECT_LOGGING_TO_API_ENABLED": "false"}
    process = subprocess.run(
        [str(Path(sys.executable).with_name("redflags")), "run", "--engine", "spark",
         "--spark-master", "local[2]", "--source", str(root / "export"),
         "--warehouse", str(warehouse), "--report", str(root / "report.html")],
        capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    return root, warehouse, process.stdout + process.stderr


def test_spark_run_publishes_the_same_tables_as_the_duckdb_engine(runs):
    root, warehouse, _ = runs
    duck, spark = snapshot(root / "duckdb.duckdb"), snapshot(warehouse)
    assert len(duck) >= 20  # every mart and release table, sensitivity analyses included
    assert "release.sensitivity_analyses" in spark
    assert differences(duck, spark) == []
    assert column_types(root / "duckdb.duckdb") == column_types(warehouse)
    assert (root / "report.html").stat().st_size > 10_000


def test_spark_run_records_the_same_extract_date_in_the_run_history_as_duckdb(runs):
    """The history's extract date is the engine's `int_data_extract_date` (EngineRun
    .extract_schema): a Spark run copies it into the warehouse, so it is not NULL."""
    root, warehouse, _ = runs
    dates = []
    for path in (root / "duckdb.duckdb", warehouse):
        with duckdb.connect(str(path), read_only=True) as con:
            dates.append(con.execute("SELECT extract_date FROM release.run_history").fetchall())
    duck, spark = dates
    assert len(duck) == 1 and duck[0][0] is not None  # the export's newest date, as text
    assert spark == duck


def test_spark_run_keeps_its_own_raw_quarantine_and_manifest_beside_the_duckdb_tables(runs):
    root, warehouse, output = runs
    with duckdb.connect(str(root / "duckdb.duckdb"), read_only=True) as con:
        duck_rows = {t: con.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0]
                     for t in ("patients", "observations", "conditions")}  # fmt: skip
        duck_manifest = con.execute(
            "SELECT file_path, sha256, row_count FROM meta.ingest_manifest ORDER BY 1"
        ).fetchall()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        # the DuckDB ingest's tables are not made or touched by a Spark run
        assert (
            con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name IN ('raw', 'landing')"
            ).fetchone()[0]
            == 0
        )
        spark_rows = {t: con.execute(f"SELECT count(*) FROM spark_raw.{t}").fetchone()[0]
                      for t in duck_rows}  # fmt: skip
        assert spark_rows == duck_rows
        manifest = con.execute(
            "SELECT file_path, sha256, row_count FROM spark_meta.ingest_manifest ORDER BY 1"
        ).fetchall()
        assert manifest == duck_manifest
        engine, status, inputs = con.execute(
            "SELECT engine, status, input_manifest FROM meta.runs"
        ).fetchone()
    assert (engine, status) == ("spark", "succeeded")
    assert sorted(f["sha256"] for f in __import__("json").loads(inputs)) == sorted(
        sha for _, sha, _ in duck_manifest
    )
    (folder,) = (warehouse.parent / "spark.duckdb.spark" / "runs").iterdir()
    assert {p.name for p in folder.iterdir()} >= {
        "raw",
        "meta",
        "staging",
        "mart",
        "sens_washout_180",
    }
    assert "[sensitivity] done" in output and "engine spark" in output


def test_a_failed_spark_run_leaves_the_published_tables_and_folder_as_they_were(runs, tmp_path):
    from pipelines.engines.spark import SparkEngine

    root, warehouse, _ = runs
    before = snapshot(warehouse, ("mart", "release", "spark_meta"))
    runs_folder = warehouse.parent / "spark.duckdb.spark" / "runs"
    folders = sorted(runs_folder.iterdir())

    broken = shutil.copytree(root / "export", tmp_path / "export")
    conditions = broken / "conditions.csv"
    with conditions.open(newline="") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index("CODE")] = (
        "not-a-code"  # parses, so ingest keeps it; the contract does not
    )
    with conditions.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)

    with pytest.raises(ContractError, match=r"spark_raw__build\.conditions\.code"):
        run_study(broken, warehouse, StudySettings(), say=lambda m: None,
                  engine=SparkEngine("local[2]"))  # fmt: skip
    assert snapshot(warehouse, ("mart", "release", "spark_meta")) == before
    assert sorted(runs_folder.iterdir()) == folders  # the failed run's Parquet is gone
    with duckdb.connect(str(warehouse), read_only=True) as con:
        status, error = con.execute(
            "SELECT status, error FROM meta.runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        assert con.execute("SELECT count(*) FROM spark_raw.patients").fetchone()[0] > 0
    assert status == "failed" and error.startswith("input contracts: ")
