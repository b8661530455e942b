"""The benchmark's stages at a tiny size (docs/benchmark.md): the study as a user runs it
(`flow`, `rerun_unchanged`, `rerun_grown`: `redflags run`, Prefect included) and a stage
repeated with --repeat (the release consumes what it reads).

Each measurement runs real processes (`python -m bench.bench`, `redflags run`) on a
generated export of a few hundred patients; the numbers are checked for presence and
plausibility, not speed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from bench import bench

PATIENTS = 300


def run_bench(out: Path, stages: str, *extra: str) -> dict[str, dict]:
    """`python -m bench.bench` at PATIENTS patients; its measurements by stage."""
    assert (
        bench.main(["--patients", str(PATIENTS), "--out", str(out), "--stages", stages, *extra])
        == 0
    )
    report = json.loads((out / "results.json").read_text())
    (size,) = report["sizes"]
    return {m["stage"]: m for m in size["measurements"]} | {"_derived": size["derived"]}


def test_flow_and_its_re_runs_are_measured_as_a_user_runs_them(tmp_path):
    by = run_bench(tmp_path, "generate,plain_load,flow,rerun_unchanged,rerun_grown")
    flow, unchanged, grown = by["flow"], by["rerun_unchanged"], by["rerun_grown"]
    for m in (flow, unchanged):
        assert m["status"] == "ok", m.get("error")
        # the whole command: interpreter, imports, Prefect's server and the flow
        assert m["seconds"] > 1.0 and m["cpu_seconds"] > 1.0
        assert 80 < m["peak_rss_mb"] < 8_000
    # Prefect's server is a process of the tree: its CPU and memory are counted in the
    # command's (the wrapper reaped the whole tree, orphans included)
    assert flow["info"]["last_status"] == "succeeded"
    assert flow["info"]["runs_recorded"] == 1
    first_run = flow["info"]["last_run_id"]
    assert flow["info"]["published_run_ids"] == [first_run]
    # the unchanged re-run recorded a new run and rebuilt nothing
    assert unchanged["info"]["runs_recorded"] == 2
    assert unchanged["info"]["last_status"] == "reused"
    assert unchanged["info"]["reused_from"] == first_run
    assert unchanged["info"]["published_run_ids"] == [first_run]
    assert unchanged["seconds"] < flow["seconds"]
    d = by["_derived"]
    assert d["rerun_unchanged_over_flow"] == round(unchanged["seconds"] / flow["seconds"], 2)
    assert d["flow_over_plain_load_cpu"] == round(
        flow["cpu_seconds"] / by["plain_load"]["cpu_seconds"], 2
    )
    assert d["flow_peak_rss_mb"] == flow["peak_rss_mb"]
    if importlib.util.find_spec("pipelines.generator.grow") is None:
        assert (grown["status"], grown["error"]) == (
            "not available",
            "pipelines.generator.grow does not exist",
        )
        return
    assert by["grow"]["status"] == "ok", by["grow"].get("error")
    assert grown["status"] == "ok", grown.get("error")
    assert grown["info"]["runs_recorded"] == 3
    assert grown["info"]["last_status"] == "succeeded"  # the new rows were built
    assert grown["info"]["published_run_ids"] == [grown["info"]["last_run_id"]]
    assert d["rerun_grown_over_flow"] is not None
    # the run's scratch is gone; the export it grew is untouched
    assert not (tmp_path / f"p{PATIENTS}" / "flow.duckdb").exists()
    assert not (tmp_path / f"p{PATIENTS}" / "export-grown").exists()


def test_a_repeated_release_runs_each_time_on_the_same_build(tmp_path):
    """--repeat 2: the release's publish drops the build schemas it reads and appends its
    run id to meta.release_history, so a second run on the warehouse it left failed."""
    by = run_bench(
        tmp_path, "generate,ingest,models,statistics,sensitivity,release", "--repeat", "2"
    )
    release = by["release"]
    assert release["status"] == "ok", release.get("error")
    assert len(release["runs"]) == 2 and all(s > 0 for s in release["runs"])
    assert "output_contracts" in release["info"] and release["info"]["publish"]
    assert not list((tmp_path / f"p{PATIENTS}").glob("*.before-repeat"))
