"""Time to first result: `redflags demo` stage by stage, wall and CPU seconds.

    nice -n 10 .venv/bin/python -m bench.demo_time --out /tmp/demo-x [--patients N]

Runs what `redflags demo` runs (pipelines/cli/study.py: run_demo_cli), in one process, and
prints one line per part: the import of the command and of the flow, generating the
export, Prefect's temporary server (started in a thread, as the command does; its own CPU
is read from /proc at the end), each stage of the flow, and the rest (flow set-up,
Prefect's start and end of the flow run). CPU seconds are user+system of this process and,
for the server, of its process. The machine is shared: compare CPU seconds, and wall
seconds only within one run. Use `--out` with a folder that does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

START_WALL = time.perf_counter()


def cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def proc_cpu(pid: int) -> float | None:
    """user+system seconds of a running process (its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rows: list[tuple[str, float, float]] = []
    mark = [time.perf_counter(), cpu()]

    def lap(name: str) -> None:
        now, c = time.perf_counter(), cpu()
        rows.append((name, now - mark[0], c - mark[1]))
        mark[:] = [now, c]

    import pipelines.cli  # noqa: F401  (the environment defaults the command sets)
    from pipelines import prefect_server
    from pipelines.cli import study as cli_study

    patients = args.patients or cli_study.DEFAULT_DEMO_PATIENTS
    prefect_server.skip_unused_imports()
    lap("import the command")
    load = os.getloadavg()

    # as run_demo_cli: the server (a process of its own) starts while the export is generated
    server_ready = prefect_server.start_server_early()
    prefect_server.start_watchdog()
    server_t0 = time.perf_counter()
    from pipelines.generator.convert import generate_in_format

    lap("import the generator (server starting)")
    export = args.out / "export"
    generate_in_format(export, "synthea", patients=patients, seed=args.seed)
    lap("generate the export (server starting)")
    server_ready()
    server_wall = time.perf_counter() - server_t0
    lap("wait for the server after generating")
    from pipelines.flows import study_flow

    lap("import the flow")

    import pipelines.study as study

    stage_cpu: dict[str, float] = {}
    original = study.Stages.__call__

    def timed(self, name, step, *a, **k):
        c = cpu()
        try:
            return original(self, name, step, *a, **k)
        finally:
            stage_cpu[name] = cpu() - c

    study.Stages.__call__ = timed
    flow_wall, flow_cpu = time.perf_counter(), cpu()
    result = study_flow(
        source=str(export),
        warehouse=str(args.out / "warehouse.duckdb"),
        report=str(args.out / "report.html"),
        parquet_dir=str(args.out / "release"),
    )
    flow_wall, flow_cpu = time.perf_counter() - flow_wall, cpu() - flow_cpu
    for s in result.stages:
        rows.append((f"  stage {s.stage}", s.seconds, stage_cpu.get(s.stage, float("nan"))))
    staged = sum(s.seconds for s in result.stages), sum(stage_cpu.values())
    rows.append(("  flow set-up and end (Prefect)", flow_wall - staged[0], flow_cpu - staged[1]))
    mark[:] = [time.perf_counter(), cpu()]
    print(cli_study.where_to_look(args.out, export).splitlines()[-1])
    lap("dashboard hint")
    server = prefect_server.TEMPORARY_SERVER  # the temporary server this process started
    process = server.process if server else None
    server_cpu = proc_cpu(process.pid) if process else None
    total_wall = time.perf_counter() - START_WALL
    total_cpu = cpu()
    print(f"\npatients {patients}, load average at start {load}, status {result.status}")
    print(f"{'part':<44} {'wall s':>8} {'CPU s':>8}")
    for name, wall, c in rows:
        print(f"{name:<44} {wall:8.2f} {c:8.2f}")
    print(f"{'(server start, in a thread: wall)':<44} {server_wall:8.2f}")
    if server_cpu is not None:
        print(f"{'(server process CPU, whole run)':<44} {'':>8} {server_cpu:8.2f}")
    print(f"{'total in this process':<44} {total_wall:8.2f} {total_cpu:8.2f}")
    print(f"load average at end {os.getloadavg()}")
    (args.out / "demo_time.json").write_text(
        json.dumps({"rows": rows, "load": [load, os.getloadavg()], "server_cpu": server_cpu})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
