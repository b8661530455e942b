"""DeLong AUROC against sklearn, a hand-computed variance, a bootstrap, and planted signal."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.stats.roc import delong_auroc, roc_points


def test_tiny_example_by_hand():
    # cases X = 0.9, 0.6; non-cases Y = 0.7, 0.2, 0.1
    # psi(x, y) = 1 if x > y: V10 = (1, 2/3), V01 = (1/2, 1, 1), AUROC = 5/6
    # S10 = var(1, 2/3) = 1/18, S01 = var(1/2, 1, 1) = 1/12 (n - 1 denominators)
    # Var = S10 / 2 + S01 / 3 = 1/36 + 1/36 = 1/18
    est = delong_auroc(np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.6, 0.7, 0.2, 0.1]))
    assert est.auroc == pytest.approx(5 / 6)
    assert est.se**2 == pytest.approx(1 / 18)
    z = 1.959963984540054
    assert est.lower == pytest.approx(5 / 6 - z * math.sqrt(1 / 18))
    assert est.upper == 1.0  # clipped


def test_tied_scores_by_hand():
    # cases 1, 1; non-cases 1, 0: psi = 1/2 for ties. V10 = (3/4, 3/4), V01 = (1/2, 1)
    # AUROC = 3/4; S10 = 0, S01 = 1/8; Var = 0/2 + (1/8)/2 = 1/16
    est = delong_auroc(np.array([1, 1, 0, 0]), np.array([1, 1, 1, 0]))
    assert est.auroc == pytest.approx(0.75)
    assert est.se == pytest.approx(0.25)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.2
    score = rng.integers(0, 7, 300) + y  # an integer score with many ties
    assert delong_auroc(y, score).auroc == pytest.approx(roc_auc_score(y, score))


def test_delong_se_agrees_with_bootstrap_within_monte_carlo_error():
    rng = np.random.default_rng(42)
    n, replicates = 400, 2000
    y = rng.random(n) < 0.25
    score = rng.normal(size=n) + 0.8 * y
    delong = delong_auroc(y, score)
    cases, controls = np.flatnonzero(y), np.flatnonzero(~y)
    # AUROC by its definition: the mean of psi over (case, non-case) pairs, psi = 1, 1/2, 0
    diff = score[cases][:, None] - score[controls][None, :]
    psi = (diff > 0) + 0.5 * (diff == 0)
    boot = []
    for _ in range(replicates):  # stratified bootstrap (as pROC): resample within each class
        w_case = np.bincount(rng.integers(0, cases.size, cases.size), minlength=cases.size)
        w_ctrl = np.bincount(rng.integers(0, controls.size, controls.size), minlength=controls.size)
        boot.append(w_case @ psi @ w_ctrl / (cases.size * controls.size))
    boot_se = np.std(boot, ddof=1)
    # relative Monte-Carlo SE of a bootstrap SD is about 1/sqrt(2(B-1)); allow 4 of them
    # plus the O(1/n) difference between DeLong's (n-1) and the bootstrap's n denominators
    tolerance = 4 / math.sqrt(2 * (replicates - 1)) + 2 / min(cases.size, controls.size)
    assert abs(boot_se / delong.se - 1) < tolerance
    # the percentile interval agrees within the same relative margin of its width
    low, high = np.percentile(boot, [2.5, 97.5])
    width = delong.upper - delong.lower
    assert abs(low - delong.lower) < tolerance * width
    assert abs(high - delong.upper) < tolerance * width


def _episodes(seed: int, shift: float, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.1
    score = rng.binomial(6, np.where(y, 0.2 + shift, 0.2))
    return y, score


def test_signal_gives_auroc_well_above_half():
    y, score = _episodes(0, shift=0.3)
    est = delong_auroc(y, score)
    assert est.auroc > 0.75 and est.lower > 0.6


def test_no_signal_interval_covers_half_at_nominal_rate():
    covered = sum(
        (est := delong_auroc(*_episodes(seed, shift=0.0))).lower <= 0.5 <= est.upper
        for seed in range(200)
    )
    assert 0.90 <= covered / 200 <= 0.99


def test_degenerate_samples_give_nan():
    assert math.isnan(delong_auroc(np.zeros(10, bool), np.arange(10)).auroc)
    assert math.isnan(delong_auroc(np.ones(10, bool), np.arange(10)).auroc)
    one_case = delong_auroc(np.r_[True, np.zeros(9, bool)], np.arange(10)[::-1])
    assert one_case.auroc == 1.0 and math.isnan(one_case.lower)


def test_roc_points_counts_and_end_points():
    y = pd.Series([True, True, False, False, False, True])
    score = pd.Series([3, 1, 0, 1, 2, np.nan])
    points = roc_points(y, score, range(0, 5)).set_index("threshold")
    assert points.loc[0, ["tp", "fp", "fn", "tn"]].tolist() == [2, 3, 0, 0]
    assert points.loc[2, ["tp", "fp", "fn", "tn"]].tolist() == [1, 1, 1, 2]
    assert points.loc[4, ["sensitivity", "false_positive_rate"]].tolist() == [0.0, 0.0]
    assert points.loc[0, ["sensitivity", "false_positive_rate"]].tolist() == [1.0, 1.0]
