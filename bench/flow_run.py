"""The study as a user runs it, measured: `redflags run` in a fresh process (docs/benchmark.md,
"The study as a user runs it").

Used by the `flow`, `rerun_unchanged` and `rerun_grown` stages of `bench/bench.py`, inside
that stage's own child process (the *wrapper*). The wrapper starts the command and measures
the whole process tree it makes: the command, Prefect's temporary server (a uvicorn child
process) and the server's watchdog (`pipelines/prefect_server.py`).

- **seconds**: wall time from starting the command to its exit (interpreter start, imports,
  the server's start and the flow: what a user waits for).
- **CPU seconds**: user+system time of every process of the tree. The wrapper makes itself a
  *child subreaper* (Linux `PR_SET_CHILD_SUBREAPER`), so a descendant orphaned by the command
  (the watchdog outlives it by design) is re-parented to the wrapper instead of init; the
  wrapper reaps every descendant, and the kernel adds each reaped process's CPU (and that of
  the processes it reaped itself) to the wrapper's `RUSAGE_CHILDREN`.
- **peak RSS**: the largest sum of resident memory over the command's process tree, sampled
  every 50 ms (the wrapper itself excluded).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
# How long the wrapper waits for the command's orphans (the server watchdog checks every
# 0.5 s and then gives a leftover server 5 s) before it stops them itself.
ORPHAN_GRACE_SECONDS = 15.0
SAMPLE_SECONDS = 0.05


def redflags_command() -> list[str]:
    """The installed `redflags` script beside this interpreter (what a user types), else the module."""
    script = Path(sys.executable).with_name("redflags")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def command_env(repo_root: Path) -> dict[str, str]:
    """The caller's environment; outside `make`, Prefect's database is the repository's
    `.prefect/` (migrated by `make install`) as under `make bench`, not `~/.prefect`."""
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", str(repo_root / ".prefect"))
    return env


def remove_warehouse(warehouse: Path) -> None:
    """A fresh warehouse: the file and everything a run leaves beside it."""
    warehouse = Path(warehouse)
    for suffix in ("", ".wal", ".lock"):
        Path(str(warehouse) + suffix).unlink(missing_ok=True)
    for folder in (Path(str(warehouse) + ".tmp"), warehouse.with_name(f"{warehouse.stem}.release")):
        shutil.rmtree(folder, ignore_errors=True)


def _become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def _reap_orphans(grace: float) -> int:
    """Wait for the descendants re-parented to this process; stop those still there after
    `grace` seconds. Returns how many were reaped."""
    import psutil

    reaped, deadline = 0, time.monotonic() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
            continue
        if time.monotonic() > deadline:
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    child.kill()
            deadline = float("inf")
        time.sleep(0.05)


def run_command(args: list[str], log_path: Path, repo_root: Path) -> dict:
    """Run `redflags <args>` and measure its process tree (module docstring)."""
    from bench.bench import _tree_rss_bytes  # the same sampling as every bench stage

    subreaper = _become_subreaper()
    cpu0 = _children_cpu()
    peak = [0]
    done = threading.Event()
    with open(log_path, "w") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*redflags_command(), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=repo_root,
            env=command_env(repo_root),
        )

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                peak[0] = max(peak[0], _tree_rss_bytes(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = proc.wait()
        finally:
            done.set()
        seconds = time.perf_counter() - started
        sampler.join()
    orphans = _reap_orphans(ORPHAN_GRACE_SECONDS) if subreaper else 0
    return {
        "exit_code": code,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(_children_cpu() - cpu0, 3),
        "peak_rss_mb": round(peak[0] / 2**20, 1),
        "orphans_reaped": orphans,
        "tree_cpu_complete": subreaper,
    }


def last_log_line(log_path: Path) -> str:
    lines = [line for line in Path(log_path).read_text(errors="replace").splitlines() if line]
    return lines[-1][:300] if lines else "(no output)"


def runs_summary(warehouse: Path) -> dict:
    """What the warehouse recorded about its runs: how many, the last one's id, status and
    stage seconds, the run it reused, and the run whose rows are published (the `run_id`
    of `mart.cohort`). Counts and ids only: no patient data."""
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        runs = con.execute("SELECT count(*) FROM meta.runs").fetchone()[0]
        last = con.execute(
            "SELECT run_id, status, stage_seconds FROM meta.runs"
            " ORDER BY started_at DESC, run_id DESC LIMIT 1"
        ).fetchone()
        reused = con.execute(
            "SELECT reused_from FROM meta.run_fingerprints WHERE run_id = ?", [last[0]]
        ).fetchone()
        published = con.execute("SELECT DISTINCT run_id FROM mart.cohort").fetchall()
    finally:
        con.close()
    return {
        "runs_recorded": runs,
        "last_run_id": last[0],
        "last_status": last[1],
        "last_stage_seconds": json.loads(last[2]) if isinstance(last[2], str) else last[2],
        "reused_from": reused[0] if reused else None,
        "published_run_ids": sorted(r[0] for r in published),
    }
