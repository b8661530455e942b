"""The study flow as a user runs it: one Prefect flow, atomic outputs, provenance, schedules.

Everything here is real: generated exports, a DuckDB file, Prefect under its test harness,
Great Expectations contracts, a `redflags run` process killed with SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from snapshots import snapshot

from pipelines.errors import ContractError, IngestError
from pipelines.generator import generate
from pipelines.settings import StudySettings

ROW_LEVEL = {"cohort", "red_flags", "red_flag_evidence", "episode_pathway"}
FAST_CONFIG = "sensitivity_analyses = []\n"  # the sensitivity rebuilds are tested once, below


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flow") / "export"
    generate(out, patients=300, seed=11)
    return out


@pytest.fixture
def fast_config(tmp_path) -> str:
    path = tmp_path / "study.toml"
    path.write_text(FAST_CONFIG)
    return str(path)


def runs(warehouse: Path) -> list[dict]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        frame = con.execute("SELECT * FROM meta.runs ORDER BY started_at").df()
        return frame.to_dict("records")
    finally:
        con.close()


def copy_export(export: Path, to: Path) -> Path:
    shutil.copytree(export, to)
    return to


def test_study_flow_runs_the_whole_study_and_records_its_provenance(
    prefect_harness, export, tmp_path
):
    from pipelines.flows import study_flow

    warehouse = tmp_path / "wh.duckdb"
    result = study_flow(
        source=str(export),
        warehouse=str(warehouse),
        report=str(tmp_path / "report.html"),
        parquet_dir=str(tmp_path / "parquet"),
    )
    assert result.status == "succeeded"
    assert [s.stage for s in result.stages] == [
        "ingest", "input contracts", "models", "statistics", "sensitivity",
        "output contracts", "release", "publish", "report", "parquet",
    ]  # fmt: skip

    (run,) = runs(warehouse)
    assert run["run_id"] == result.run_id and run["status"] == "succeeded"
    assert run["flow_run_id"], "the Prefect flow-run id is recorded"
    assert run["ended_at"] >= run["started_at"]
    assert json.loads(run["parameters"]) == StudySettings().as_dict()
    hashes = json.loads(run["value_set_hashes"])
    assert "bone_metastasis" in hashes and all(len(h) == 64 for h in hashes.values())
    manifest = {m["file"]: m for m in json.loads(run["input_manifest"])}
    patients = export / "patients.csv"
    assert manifest["patients.csv"]["sha256"] == hashlib.sha256(patients.read_bytes()).hexdigest()
    assert run["code_version"].startswith("redflags ")

    published = snapshot(warehouse)  # every published table but the run history
    counts = json.loads(run["output_row_counts"])
    assert counts.pop("release.run_history") == 1  # this run's row (pipelines/history.py)
    assert counts == {name: len(rows) for name, rows in published.items()}
    assert "mart.sensitivity_analyses" in published and "release.flag_accuracy" in published
    assert not {name.split(".")[1] for name in published if name.startswith("release.")} & ROW_LEVEL
    con = duckdb.connect(str(warehouse), read_only=True)
    for name in published:
        assert con.execute(f"SELECT DISTINCT run_id FROM {name}").fetchall() in (
            [(result.run_id,)],
            [],  # an empty table has no run_id to show
        ), name
    con.close()

    assert result.run_id in (tmp_path / "report.html").read_text()  # the run's provenance
    released = {n.split(".")[1] for n in published if n.startswith("release.")}
    parquet = {p.stem for p in (tmp_path / "parquet").glob("*.parquet")}
    assert parquet == released | {"run_history"}


def test_a_broken_export_fails_clearly_and_keeps_the_previous_outputs(
    prefect_harness, export, tmp_path, fast_config
):
    from pipelines.flows import study_flow

    warehouse = tmp_path / "wh.duckdb"
    study_flow(source=str(export), warehouse=str(warehouse), config=fast_config)
    before = snapshot(warehouse)

    broken = copy_export(export, tmp_path / "broken")
    (broken / "conditions.csv").unlink()
    with pytest.raises(IngestError, match="conditions"):
        study_flow(source=str(broken), warehouse=str(warehouse), config=fast_config)

    assert snapshot(warehouse) == before
    last = runs(warehouse)[-1]
    assert last["status"] == "failed" and last["error"].startswith("ingest: ")


def test_a_failing_contract_stops_the_run_and_keeps_the_previous_outputs(
    prefect_harness, export, tmp_path, fast_config
):
    from pipelines.flows import study_flow

    warehouse = tmp_path / "wh.duckdb"
    study_flow(source=str(export), warehouse=str(warehouse), config=fast_config)
    before = snapshot(warehouse)

    implausible = copy_export(export, tmp_path / "implausible")
    conditions = implausible / "conditions.csv"
    lines = conditions.read_text().splitlines(keepends=True)
    column = lines[0].split(",").index("CODE")
    fields = lines[1].split(",")
    fields[column] = "not-a-code"  # parses, so ingest keeps it; the contract (error) does not
    lines[1] = ",".join(fields)
    conditions.write_text("".join(lines))

    with pytest.raises(ContractError, match=r"raw\.conditions\.code.*1 unexpected rows"):
        study_flow(source=str(implausible), warehouse=str(warehouse), config=fast_config)
    assert snapshot(warehouse) == before
    assert runs(warehouse)[-1]["error"].startswith("input contracts: ")


def test_a_killed_run_leaves_the_previous_outputs_readable_and_intact(
    prefect_harness, export, tmp_path, fast_config
):
    from prefect.settings import PREFECT_API_URL

    from pipelines.flows import study_flow

    warehouse = tmp_path / "wh.duckdb"
    study_flow(source=str(export), warehouse=str(warehouse), config=fast_config)
    before = snapshot(warehouse)

    grown = copy_export(export, tmp_path / "grown")
    generate(tmp_path / "more", patients=200, seed=12)
    for name in ("patients.csv", "encounters.csv", "conditions.csv"):
        rows = (tmp_path / "more" / name).read_text().splitlines(keepends=True)[1:]
        with open(grown / name, "a") as handle:
            handle.writelines(rows)

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    command = [sys.executable, "-m", "pipelines.cli", "run", "--source", str(grown),
               "--warehouse", str(warehouse), "--config", fast_config]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    deadline = time.monotonic() + 240
    for line in process.stdout:
        seen.append(line)
        if "[statistics] started" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGKILL)  # no clean-up code runs: as a crash or an OOM kill
    process.wait(timeout=30)
    assert any("[statistics] started" in line for line in seen), "".join(seen[-20:])

    assert snapshot(warehouse) == before
    assert runs(warehouse)[-1]["status"] == "running"  # it never recorded its end

    result = study_flow(source=str(grown), warehouse=str(warehouse), config=fast_config)
    statuses = [r["status"] for r in runs(warehouse)]
    assert statuses == ["succeeded", "abandoned", "succeeded"]
    assert result.status == "succeeded" and snapshot(warehouse) != before


def test_two_runs_over_a_growing_export_equal_one_run_over_the_final_export(
    prefect_harness, export, tmp_path, fast_config
):
    from pipelines.flows import study_flow

    # Night 1: no observations file yet, and only the first 70% of the encounters.
    growing = tmp_path / "growing"
    growing.mkdir()
    for path in export.glob("*.csv"):
        if path.name != "observations.csv":
            shutil.copy(path, growing / path.name)
    encounters = (export / "encounters.csv").read_text().splitlines(keepends=True)
    (growing / "encounters.csv").write_text("".join(encounters[: int(len(encounters) * 0.7)]))
    nightly = tmp_path / "nightly.duckdb"
    first = study_flow(source=str(growing), warehouse=str(nightly), config=fast_config)
    con = duckdb.connect(str(nightly), read_only=True)
    (absent,) = con.execute("SELECT not_ascertainable_flags FROM mart.red_flags LIMIT 1").fetchone()
    con.close()
    assert "elevated_alp" in absent  # ALP needs observations: not ascertainable that night

    # Night 2: the export has grown to its final state (a new file, more rows in another).
    shutil.copy(export / "observations.csv", growing / "observations.csv")
    shutil.copy(export / "encounters.csv", growing / "encounters.csv")
    second = study_flow(source=str(growing), warehouse=str(nightly), config=fast_config)
    assert second.run_id != first.run_id

    once = tmp_path / "once.duckdb"
    study_flow(source=str(growing), warehouse=str(once), config=fast_config)
    assert snapshot(nightly, ("raw", "mart")) == snapshot(once, ("raw", "mart"))
    # The release may hide more after two runs than after one: a count that differs from the
    # first night's by 1..min_cell-1 is hidden (overlapping releases, pipelines/history.py).
    assert snapshot(nightly, ("release",)).keys() == snapshot(once, ("release",)).keys()

    # Night 3: nothing changed; no file is read again (the manifest keeps its load times).
    manifest_before = snapshot(nightly, ("meta",))["meta.ingest_manifest"]
    third = study_flow(source=str(growing), warehouse=str(nightly), config=fast_config)
    assert third.status == "reused"  # nothing rebuilt either (tests/integration/test_reuse.py)
    assert snapshot(nightly, ("meta",))["meta.ingest_manifest"] == manifest_before


def test_the_deployment_carries_the_schedule_and_parameters(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client

    from pipelines.flows import study_deployment

    deployment = study_deployment(
        str(tmp_path / "export"), str(tmp_path / "wh.duckdb"), cron="30 3 * * 1-5",
        timezone="Europe/London", name="weekday-run",
    )  # fmt: skip
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "30 3 * * 1-5"
    assert schedule.schedule.timezone == "Europe/London"
    assert deployment.parameters["source"] == str(tmp_path / "export")
    assert deployment.parameters["wait_seconds"] > 0  # a scheduled run waits for a manual one
    assert deployment.parameters["engine"] == "duckdb"

    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
    assert stored.name == "weekday-run"
    assert [s.schedule.cron for s in stored.schedules] == ["30 3 * * 1-5"]
    assert stored.parameters["warehouse"] == str(tmp_path / "wh.duckdb")


def test_prefect_yaml_describes_the_same_flow_and_schedule():
    import importlib

    from pipelines import flows
    from pipelines.cli import study as cli_study

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    path, name = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert getattr(module, name) is flows.study_flow
    assert set(deployment["parameters"]) == set(flows.study_parameters("s", "w"))
    parser = __import__("argparse").ArgumentParser()
    cli_study.configure_serve_cli(parser)
    default_cron = parser.parse_args(["--source", "s", "--warehouse", "w"]).cron
    assert [s["cron"] for s in deployment["schedules"]] == [default_cron]


def test_an_unknown_engine_is_refused_before_anything_is_scheduled_or_run(tmp_path, capsys):
    from pipelines import flows
    from pipelines.cli import main
    from pipelines.errors import UserFacingError

    with pytest.raises(
        UserFacingError, match="unknown engine 'flink': choose one of duckdb, spark"
    ):
        flows.study_parameters("s", "w", engine="flink")
    spark = flows.study_parameters("s", "w", engine="spark", spark_master="spark://head:7077")
    assert (spark["engine"], spark["spark_master"]) == ("spark", "spark://head:7077")
    with pytest.raises(SystemExit):
        main(["run", "--source", "s", "--warehouse", str(tmp_path / "w.duckdb"), "--engine", "x"])
    assert "invalid choice: 'x'" in capsys.readouterr().err
    assert not (tmp_path / "w.duckdb").exists()


def test_the_command_line_gives_prefects_first_start_time_and_sends_no_telemetry():
    names = ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED")
    show = f"import os, pipelines.cli; print(*(os.environ[n] for n in {names!r}))"
    env = {k: v for k, v in os.environ.items() if k not in names}
    plain = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True)
    assert plain.stdout.split() == ["90", "false"], plain.stderr[-2000:]
    env[names[0]] = "300"  # a value the user set wins
    mine = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True)
    assert mine.stdout.split() == ["300", "false"], mine.stderr[-2000:]


def test_serve_without_a_prefect_server_says_how_to_start_one(tmp_path, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.cli import main

    with temporary_settings(updates={PREFECT_API_URL: None}):
        code = main(["serve", "--source", str(tmp_path), "--warehouse", str(tmp_path / "w.duckdb")])
    assert code == 2
    assert "prefect server start" in capsys.readouterr().err
