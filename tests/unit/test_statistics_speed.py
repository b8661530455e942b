"""The statistics and sensitivity stages do no needless work (issue 16), with the same values.

- their many small model fits run with one BLAS thread (pipelines/stats/threads.py): with
  more, OpenBLAS's idle workers spin after every call, 18x the CPU time for the same numbers;
- the primary analysis's sensitivity rows are read from the tables the statistics stage
  wrote, not computed again (pipelines/study.py step_sensitivity);
- a sensitivity analysis computes only the model_performance rows it keeps, not the
  calibration tables and smoothed curves model_tables would draw and it would drop.

Spies wrap the real functions (they record, then call them), so everything still runs.
"""

from __future__ import annotations

import pandas as pd
import pytest
from test_analysis import SETTINGS, simulate_marts, warehouse
from threadpoolctl import threadpool_info, threadpool_limits

from pipelines import analysis
from pipelines.stats import model, smooth_calibration, validation

FEW = SETTINGS.replace(validation_bootstraps=3)  # the fits are what matters, not their number


def blas_threads() -> int:
    """The largest thread count of the process's BLAS and OpenMP pools right now."""
    return max((pool["num_threads"] for pool in threadpool_info()), default=1)


@pytest.fixture(scope="module")
def con():
    connection = warehouse(
        simulate_marts(3, n=3000, outcome_risk=0.05)
    )  # enough events to validate
    yield connection
    connection.close()


def spy(monkeypatch, module, name: str, calls: list) -> None:
    """Record the BLAS thread count at each call of module.name, then call the real one."""
    real = getattr(module, name)

    def recording(*args, **kwargs):
        calls.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)


def test_statistics_and_sensitivity_fit_with_one_blas_thread(con, monkeypatch):
    with threadpool_limits(limits=2):  # as on a 2-core machine, whatever this one has
        if blas_threads() < 2:
            pytest.skip("this process's BLAS has a single thread: nothing to limit")
        fits, newton = [], []
        spy(monkeypatch, model, "cross_validated_probabilities", fits)
        spy(monkeypatch, validation, "newton_logistic", newton)
        analysis.run_statistics(con, FEW, "run-1")
        analysis.sensitivity_rows(con, FEW, "primary", "mart")
        assert fits and newton  # the spies saw the fits
        assert set(fits) == {1} and set(newton) == {1}
        assert blas_threads() == 2  # the limit ends with the stage


def test_sensitivity_rows_draw_no_calibration_and_keep_the_same_performance(con, monkeypatch):
    drawn: list = []
    spy(monkeypatch, model, "calibration_table", drawn)
    spy(monkeypatch, smooth_calibration, "smoothed_calibration", drawn)
    spy(monkeypatch, model, "decision_curve", drawn)
    rows = analysis.sensitivity_rows(con, SETTINGS, "primary", "mart")
    assert drawn == []
    assert (rows["rule"] == "model").sum() == len(analysis.SUBGROUPS)
    # the rows it keeps are those of the statistics stage's model_performance
    episodes = analysis.load_episodes(con, "mart")
    pd.testing.assert_frame_equal(
        analysis.model_performance_table(episodes, SETTINGS),
        analysis.model_tables(episodes, SETTINGS)[0],
    )


def test_primary_sensitivity_rows_are_read_from_the_statistics_tables(con, monkeypatch):
    analysis.run_statistics(con, FEW, "run-1")
    fits: list = []
    spy(monkeypatch, model, "cross_validated_probabilities", fits)
    written = analysis.sensitivity_rows_written(con, "primary", "mart")
    assert fits == []  # read, not fitted again
    computed = analysis.sensitivity_rows(con, FEW, "primary", "mart")
    assert len(fits) == len(analysis.SUBGROUPS)
    pd.testing.assert_frame_equal(written, computed, check_exact=True)
    con.execute("create schema if not exists empty")
    assert analysis.sensitivity_rows_written(con, "primary", "empty") is None
