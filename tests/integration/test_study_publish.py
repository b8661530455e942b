"""Atomic publishing, the run lock and the run record (pipelines/study.py)."""

import json
import threading
import time

import pytest

from pipelines.settings import StudySettings
from pipelines.study import (
    RunLockedError,
    RunResult,
    StageTiming,
    publish,
    record_run_end,
    record_run_start,
    tables_in,
    warehouse_lock,
)
from pipelines.warehouse import connect


def _build(con, schema, tables):
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for name, values in tables.items():
        con.execute(f"CREATE OR REPLACE TABLE {schema}.{name} AS SELECT unnest(?) AS n", [values])


def test_publish_replaces_outputs_and_stamps_run_id(warehouse):
    con = connect(warehouse)
    _build(con, "mart__build", {"a": [1, 2], "b": [3]})
    _build(con, "release__build", {"a": [1]})
    counts = publish(con, "run-1")
    assert counts == {"mart.a": 2, "mart.b": 1, "release.a": 1}
    assert con.execute("SELECT DISTINCT run_id FROM mart.a").fetchall() == [("run-1",)]

    con.execute("DROP TABLE mart__build.b")  # the next run no longer makes table b
    _build(con, "mart__build", {"a": [7, 8, 9]})
    publish(con, "run-2")
    assert tables_in(con, "mart") == ["a"]
    assert con.execute("SELECT count(*), min(run_id) FROM mart.a").fetchone() == (3, "run-2")


def test_publish_is_all_or_nothing_when_a_copy_fails(warehouse, monkeypatch):
    con = connect(warehouse)
    _build(con, "mart__build", {"a": [1, 2]})
    _build(con, "release__build", {"a": [1]})
    publish(con, "good")
    _build(con, "mart__build", {"a": [9, 9, 9]})
    import pipelines.study as study

    real = study.tables_in

    def failing_tables_in(c, schema):
        if schema == "release__build":
            raise RuntimeError("disk full")
        return real(c, schema)

    monkeypatch.setattr(study, "tables_in", failing_tables_in)
    with pytest.raises(RuntimeError, match="disk full"):
        study.publish(con, "bad")
    monkeypatch.undo()
    assert con.execute("SELECT count(*), min(run_id) FROM mart.a").fetchone() == (2, "good")


def test_second_run_on_same_warehouse_stops_with_clear_message(warehouse):
    with (
        warehouse_lock(warehouse),
        pytest.raises(RunLockedError, match="another run is using"),
        warehouse_lock(warehouse),
    ):
        pass


def test_second_run_waits_when_asked(warehouse):
    released = []

    def hold():
        with warehouse_lock(warehouse):
            time.sleep(1.0)
            released.append(time.monotonic())

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.2)
    with warehouse_lock(warehouse, wait_seconds=10):
        got = time.monotonic()
    t.join()
    assert released and got >= released[0]


def test_run_record_has_parameters_status_and_marks_killed_runs_abandoned(warehouse, tmp_path):
    con = connect(warehouse)
    settings = StudySettings(washout_days=180)
    record_run_start(con, "r1", settings, tmp_path, "flow-1")
    # r1 is never finished (killed); the next run marks it abandoned
    record_run_start(con, "r2", settings, tmp_path, "flow-2")
    result = RunResult("r2", warehouse, status="succeeded", stages=[StageTiming("ingest", 1.5)])
    result.row_counts = {"mart.cohort": 3}
    record_run_end(con, result)
    rows = dict(con.execute("SELECT run_id, status FROM meta.runs").fetchall())
    assert rows == {"r1": "abandoned", "r2": "succeeded"}
    params, counts, version = con.execute(
        "SELECT parameters, output_row_counts, code_version FROM meta.runs WHERE run_id = 'r2'"
    ).fetchone()
    assert json.loads(params)["washout_days"] == 180
    assert json.loads(counts) == {"mart.cohort": 3}
    assert version.startswith("redflags ")
