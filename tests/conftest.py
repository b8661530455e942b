"""Shared fixtures: paths to the real Synthea exports, a Prefect test harness, a fresh warehouse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if not SHARED.exists():  # CI clones next to shared/; a developer checkout may sit elsewhere
    SHARED = Path(os.environ.get("REDFLAGS_SHARED", "/work/shared"))
REAL_EXPORTS = sorted(p for p in (SHARED / "synthea").iterdir() if p.is_dir())
SPEC = Path(__file__).resolve().parent / "spec"

# Property tests (Hypothesis) explore new random examples on every developer run, which is
# how they find bugs; CI (`CI` set, as .ci/run does) runs a fixed, derandomized set so that a
# submission's result does not depend on luck. Examples once found are pinned with @example.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


@pytest.fixture(scope="session")
def real_exports() -> list[Path]:
    """The three real Synthea exports in ../shared/synthea (2.x-3.3+ eras)."""
    assert len(REAL_EXPORTS) == 3, f"expected 3 real exports under {SHARED / 'synthea'}"
    return REAL_EXPORTS


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for flow tests (started once per test process)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def spark():
    """One local Spark session for a module of Spark-marked tests (2 cores, 4 shuffle
    partitions); `run_study` on the Spark engine reuses the active session."""
    import shutil

    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs Java")
    from pipelines.engines.spark import execution as se

    session = se.spark_session("local[2]", {"spark.sql.shuffle.partitions": "4"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def warehouse(tmp_path) -> Path:
    """Path of a new, empty DuckDB warehouse file."""
    return tmp_path / "warehouse.duckdb"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A spec test that builds a study runs on DuckDB (`[duckdb]`) and, when it is one of
    tests/spec_engines.SPARK_SUBSET, on Spark too (`[spark]`, marked `spark`: `make
    test-spark`); docs/testing.md."""
    from model_spec import builds_a_study
    from spec_engines import on_spark

    path = Path(metafunc.definition.path)
    if SPEC not in path.parents:
        return
    if builds_a_study(metafunc.function, metafunc.module, metafunc.fixturenames):
        params = [pytest.param("duckdb")]
        if on_spark(path.name, metafunc.function.__name__):
            params.append(pytest.param("spark", marks=pytest.mark.spark))
        metafunc.parametrize("engine", params, indirect=True, scope="function")


@pytest.fixture(autouse=True)
def engine(request):
    """The engine `build_study` builds on in this test (a spec test's parameter, else DuckDB)."""
    from model_spec import use_engine

    name = getattr(request, "param", "duckdb")
    with use_engine(name):
        yield name
