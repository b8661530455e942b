"""`redflags run --engine spark` on a real standalone Spark cluster: a master and two workers.

Marker `spark` (`make test-spark`, which CI runs). The cluster is started from pyspark's own
launcher (`bin/spark-class` of the installed pyspark: its wheel has no `sbin/start-*.sh`), on
127.0.0.1 and free ports, with 1 core and 1 GiB per worker, logs under the test's tmp folder;
the fixture's finalizer stops every JVM it started, also when a test fails. The study runs
as a user would (`redflags run --spark-master spark://127.0.0.1:<port>`, its own process) and
must publish the same mart and release tables as the DuckDB engine (the comparison of
tests/integration/test_spark_study.py). Without Java or pyspark the tests skip, saying why.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from pathlib import Path

import duckdb
import pytest
from snapshots import snapshot
from test_spark_study import column_types, differences

from pipelines.generator import generate
from pipelines.settings import StudySettings
from pipelines.study import run_study

pytestmark = pytest.mark.spark

WORKERS = 2
WORKER_MEMORY = "1g"
START_TIMEOUT = 180  # seconds for the master and both workers on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Read by the master, the workers and the study's driver (SPARK_CONF_DIR). On a shared,
# loaded machine a JVM can miss heartbeats for over a minute: the defaults (60 s worker
# timeout, 120 s network timeout) then drop both workers in the middle of the run.
SPARK_DEFAULTS = {
    "spark.worker.timeout": "600",
    "spark.network.timeout": "900s",
    "spark.executor.heartbeatInterval": "60s",
    "spark.executor.memory": "768m",  # the worker offers 1g; leave the JVM some room
}


def cluster_env(log_dir: Path) -> dict[str, str]:
    """The daemons' environment: loopback only, this venv's Python, bounded memory."""
    conf = log_dir / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "spark-defaults.conf").write_text(
        "".join(f"{key} {value}\n" for key, value in SPARK_DEFAULTS.items())
    )
    return {
        **os.environ,
        "SPARK_CONF_DIR": str(conf),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(log_dir / "local"),
        "SPARK_WORKER_DIR": str(log_dir / "work"),
        "SPARK_DAEMON_MEMORY": "512m",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


def _die_with_this_process() -> None:
    """In the daemon's child, before exec: SIGTERM it when the test process dies, however
    (a pytest killed by a timeout runs no finalizer). Linux only; kept across `exec`, which
    is how spark-class becomes the JVM."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        return json.load(response)


class Cluster:
    """A standalone master and its workers, as child processes of this test process."""

    def __init__(self, root: Path):
        import pyspark

        self.spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
        self.root = root
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.env = cluster_env(root)

    def _start(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [str(self.spark_class), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # its own process group: stop() ends the JVM's children
                preexec_fn=_die_with_this_process,
            )
        )

    def start(self) -> None:
        self._start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui_port),
        )  # fmt: skip
        for i in range(1, WORKERS + 1):
            self._start(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                "--host", "127.0.0.1", "--cores", "1", "--memory", WORKER_MEMORY,
                "--webui-port", str(free_port()), "--work-dir", str(self.root / f"work-{i}"),
                self.url,
            )  # fmt: skip
        self._wait_for_workers()

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            dead = [p.args[1] for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} ended at start; see {self.root}/*.log")
            try:
                if master_state(self.ui_port).get("aliveworkers", 0) >= WORKERS:
                    return
            except OSError:
                pass  # the master's UI is not up yet
            time.sleep(1)
        raise RuntimeError(f"the cluster did not start in {START_TIMEOUT}s; see {self.root}/*.log")

    def stop(self) -> None:
        """SIGTERM every daemon's process group (workers first), SIGKILL what is left."""
        for process in reversed(self.processes):
            if process.poll() is None:
                with _gone():
                    os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with _gone():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


class _gone:
    """Ignore a process (group) that has already ended."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is ProcessLookupError


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    if shutil.which("java") is None:
        pytest.skip("a Spark cluster needs Java 17 on PATH (apt-get install openjdk-17-jre)")
    pytest.importorskip("pyspark", reason="a Spark cluster needs pyspark: make install-spark")
    cluster = Cluster(tmp_path_factory.mktemp("spark_cluster"))
    request.addfinalizer(cluster.stop)  # registered before start: a failed start stops too
    cluster.start()
    return cluster


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """One generated export through DuckDB (in process) and through the cluster (the CLI)."""
    root = tmp_path_factory.mktemp("cluster_study")
    generate(root / "export", patients=200, seed=23)
    run_study(root / "export", root / "duckdb.duckdb", StudySettings(), say=lambda m: None)
    warehouse = root / "spark.duckdb"
    env = {**cluster.env, "PREFECT_LOGGING_TO_API_ENABLED": "false"}
    process = subprocess.run(
        [str(Path(sys.executable).with_name("redflags")), "run", "--engine", "spark",
         "--spark-master", cluster.url, "--spark-dir", str(root / "spark"),
         "--source", str(root / "export"), "--warehouse", str(warehouse)],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    return root, warehouse


def test_a_run_on_a_standalone_cluster_publishes_what_the_duckdb_engine_publishes(runs):
    root, warehouse = runs
    duck, spark = snapshot(root / "duckdb.duckdb"), snapshot(warehouse)
    assert len(duck) >= 20  # every mart and release table, sensitivity analyses included
    assert "release.sensitivity_analyses" in spark
    assert differences(duck, spark) == []
    assert column_types(root / "duckdb.duckdb") == column_types(warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT engine, status FROM meta.runs").fetchall() == [
            ("spark", "succeeded")
        ]


def test_the_run_used_the_cluster_and_both_workers(cluster, runs):
    state = master_state(cluster.ui_port)
    apps = state.get("completedapps", []) + state.get("activeapps", [])
    assert [a["name"] for a in apps] == ["redflags"]  # the study ran on this master
    workers = [w for w in state["workers"] if w["state"] == "ALIVE"]
    assert len(workers) == WORKERS
    assert all(w["cores"] == 1 and w["memory"] == 1024 for w in workers)
    # each worker ran executors for the study: their folders hold the app's stderr
    work = sorted(cluster.root.glob("work-*/app-*/*/stderr"))
    assert {p.parts[-4] for p in work} == {f"work-{i}" for i in range(1, WORKERS + 1)}
