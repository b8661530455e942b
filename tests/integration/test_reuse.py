"""The nightly run on an unchanged export: nothing rebuilt, a new run recorded, same outputs.

Real Prefect flows (test harness), a real DuckDB warehouse, a generated export. A run whose
export, settings, value sets and code are those of the last successful run is `reused`
(pipelines/reuse.py); one changed setting, one changed input row or `force` rebuild.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import duckdb
import pytest
from snapshots import snapshot

from pipelines.generator import generate
from pipelines.reuse import published_by

FULL_RUN = ["ingest", "input contracts", "models", "statistics", "sensitivity",
            "output contracts", "release", "publish", "report", "parquet"]  # fmt: skip


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reuse") / "export"
    generate(out, patients=200, seed=5)
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def meta(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def run(export: Path, tmp_path: Path, config: str = "", **kwargs):
    from pipelines.flows import study_flow

    path = tmp_path / "study.toml"
    path.write_text("sensitivity_analyses = []\n" + config)  # the rebuilds are tested elsewhere
    return study_flow(
        source=str(export),
        warehouse=str(tmp_path / "wh.duckdb"),
        config=str(path),
        report=kwargs.pop("report", str(tmp_path / "report.html")),
        parquet_dir=str(tmp_path / "release"),
        **kwargs,
    )


def test_a_run_over_an_unchanged_export_reuses_the_last_run_and_writes_the_same_bytes(
    prefect_harness, export, tmp_path
):
    warehouse = tmp_path / "wh.duckdb"
    first = run(export, tmp_path)
    assert [s.stage for s in first.stages] == FULL_RUN
    tables, report = snapshot(warehouse), (tmp_path / "report.html").read_bytes()
    parquet = files(tmp_path / "release")

    second = run(export, tmp_path)
    assert second.status == "reused"
    assert [s.stage for s in second.stages] == ["reuse", "parquet"]  # the report is current
    assert f"reused from run {first.run_id}" in second.stages[0].detail
    assert second.row_counts == first.row_counts
    assert snapshot(warehouse) == tables
    assert (tmp_path / "report.html").read_bytes() == report
    assert files(tmp_path / "release") == parquet
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert published_by(con) == {first.run_id}  # the tables were not rebuilt
    assert meta(warehouse, "SELECT run_id, status FROM meta.runs ORDER BY started_at") == [
        (first.run_id, "succeeded"),
        (second.run_id, "reused"),
    ]
    fingerprints = meta(
        warehouse, "SELECT run_id, fingerprint, reused_from FROM meta.run_fingerprints"
    )
    assert {r[0]: r[2] for r in fingerprints} == {first.run_id: None, second.run_id: first.run_id}
    assert len({r[1] for r in fingerprints}) == 1

    # a third unchanged night still points at the run that built the tables, and writes
    # the report again when it is gone
    (tmp_path / "report.html").unlink()
    third = run(export, tmp_path)
    assert third.status == "reused"
    assert [s.stage for s in third.stages] == ["reuse", "report", "parquet"]
    assert f"reused from run {first.run_id}" in third.stages[0].detail
    assert f"<td>{first.run_id}</td>" in (tmp_path / "report.html").read_text()
    assert snapshot(warehouse) == tables


def test_a_changed_setting_a_changed_row_or_force_rebuild(prefect_harness, export, tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    first = run(export, tmp_path)

    setting = run(export, tmp_path, config="min_cell = 12\n")
    assert setting.status == "succeeded" and [s.stage for s in setting.stages] == FULL_RUN

    changed = shutil.copytree(export, tmp_path / "changed")
    with (changed / "conditions.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    column = rows[0].index("DESCRIPTION")
    rows[1][column] += " (edited)"  # one row of one file; loads as before
    with (changed / "conditions.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    row = run(changed, tmp_path, config="min_cell = 12\n")
    assert row.status == "succeeded" and [s.stage for s in row.stages] == FULL_RUN

    forced = run(changed, tmp_path, config="min_cell = 12\n", force=True)
    assert forced.status == "succeeded" and [s.stage for s in forced.stages] == FULL_RUN
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert published_by(con) == {forced.run_id}
    reused = meta(
        warehouse, "SELECT count(*) FROM meta.run_fingerprints WHERE reused_from IS NOT NULL"
    )
    assert reused == [(0,)]
    assert len({first.run_id, setting.run_id, row.run_id, forced.run_id}) == 4


def test_tables_published_by_a_run_that_failed_later_are_not_reused(
    prefect_harness, export, tmp_path
):
    """A run that fails after publishing (here: at its report) leaves its own tables
    published; the next run with the first run's fingerprint must not claim the first
    run's outputs: it rebuilds."""
    first = run(export, tmp_path)
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "report.html").mkdir()  # the report cannot be written there
    with pytest.raises(Exception):  # noqa: B017,PT011 (any failure at the report stage)
        run(export, tmp_path, "min_cell = 12\n", report=str(tmp_path / "blocked" / "report.html"))
    statuses = meta(tmp_path / "wh.duckdb", "SELECT status FROM meta.runs ORDER BY started_at")
    assert statuses == [("succeeded",), ("failed",)]
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert first.run_id not in published_by(con)  # the failed run's tables are out
    again = run(export, tmp_path)
    assert again.status == "succeeded" and [s.stage for s in again.stages] == FULL_RUN
    assert again.run_id != first.run_id


def test_reuse_asks_the_engine_run_whether_it_is_reusable_not_its_name(export, tmp_path):
    """`EngineRun.reusable` decides (pipelines/reuse.py), not a check of the engine's name: a
    DuckDB engine under another name reuses, one whose runs are not reusable rebuilds, and
    Spark runs (whose published views read their own run folder) are not reusable."""
    from dataclasses import replace

    from pipelines.engines import DuckDBEngine
    from pipelines.engines.spark import SparkEngine
    from pipelines.settings import StudySettings
    from pipelines.study import run_study

    warehouse = tmp_path / "wh.duckdb"
    settings = StudySettings(sensitivity_analyses=())

    def study(engine):
        return run_study(export, warehouse, settings, engine=engine, say=lambda message: None)

    renamed = replace(DuckDBEngine(), name="duckdb-renamed")
    first = study(renamed)
    assert study(renamed).status == "reused"
    rebuilt = study(replace(DuckDBEngine(), reusable=False))
    assert rebuilt.status == "succeeded"
    assert [s.stage for s in rebuilt.stages][:3] == ["ingest", "input contracts", "models"]
    assert first.status == "succeeded"
    assert SparkEngine().for_run(warehouse, "a-run").reusable is False
