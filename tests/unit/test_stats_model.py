"""Logistic model, calibration and decision curve against data simulated from known models."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss

from pipelines.stats.model import (
    calibration_intercept_slope,
    calibration_table,
    decision_curve,
    fit_flag_model,
    treat_all_net_benefit,
)

BETA = np.array([-3.0, 1.2, 0.8, 0.0, 1.6])  # intercept, then four binary flags


def simulated_flags(seed: int, n: int) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 4)) < [0.3, 0.4, 0.5, 0.2]).astype(float)
    p = 1 / (1 + np.exp(-(BETA[0] + x @ BETA[1:])))
    y = rng.random(n) < p
    flags = pd.DataFrame(x.astype(bool), columns=[f"flag_{i}" for i in range(4)])
    return flags, pd.Series(y), p


def test_true_probabilities_are_calibrated():
    _, y, p = simulated_flags(0, 20000)
    intercept, slope = calibration_intercept_slope(y.to_numpy(), p)
    assert abs(intercept) < 0.08  # SE about 0.02 at this size
    assert abs(slope - 1) < 0.12  # SE about 0.03


def test_overfitted_style_predictions_have_slope_below_one():
    _, y, p = simulated_flags(1, 20000)
    logit = np.log(p / (1 - p))
    too_extreme = 1 / (1 + np.exp(-(2 * logit - np.mean(logit))))
    _, slope = calibration_intercept_slope(y.to_numpy(), too_extreme)
    assert slope == pytest.approx(0.5, abs=0.08)


def test_cross_validated_model_recovers_calibration_and_discrimination():
    flags, y, p = simulated_flags(2, 8000)
    fit = fit_flag_model(flags, y, folds=5, seed=1, confidence_level=0.95)
    assert fit.note == ""
    assert abs(fit.calibration_intercept) < 0.15
    assert abs(fit.calibration_slope - 1) < 0.2
    assert fit.auroc.lower > 0.6
    assert fit.brier_score == pytest.approx(brier_score_loss(y, fit.predictions))
    again = fit_flag_model(flags, y, folds=5, seed=1, confidence_level=0.95)
    np.testing.assert_array_equal(fit.predictions, again.predictions)


def test_flags_not_ascertainable_are_dropped():
    flags, y, _ = simulated_flags(3, 2000)
    flags["flag_missing"] = pd.array([pd.NA] * len(flags), dtype="boolean")
    fit = fit_flag_model(flags, y, folds=5, seed=1, confidence_level=0.95)
    assert "flag_missing" not in fit.features and len(fit.features) == 4


@pytest.mark.parametrize(
    ("outcome", "note"),
    [
        (np.zeros(300, bool), "no events"),
        (np.ones(300, bool), "no non-events"),
        (
            np.r_[np.ones(3, bool), np.zeros(297, bool)],
            "fewer events or non-events than cv folds (5)",
        ),
        (np.zeros(0, bool), "no episodes"),
    ],
)
def test_degenerate_data_give_nan_with_a_note(outcome, note):
    flags, _, _ = simulated_flags(4, outcome.size)
    fit = fit_flag_model(flags, pd.Series(outcome), folds=5, seed=1, confidence_level=0.95)
    assert fit.note == note and fit.predictions is None
    assert math.isnan(fit.auroc.auroc) and math.isnan(fit.calibration_slope)


def test_no_ascertainable_flag_is_degenerate():
    flags = pd.DataFrame({"flag_a": pd.array([pd.NA] * 100, dtype="boolean")})
    y = pd.Series(np.arange(100) % 4 == 0)
    fit = fit_flag_model(flags, y, folds=5, seed=1, confidence_level=0.95)
    assert fit.note == "no ascertainable flags"


def test_treat_all_net_benefit_identity():
    rng = np.random.default_rng(5)
    y = rng.random(1000) < 0.07
    thresholds = tuple(round(0.01 * i, 2) for i in range(1, 21))
    curve = decision_curve(y, rng.random(1000), thresholds)
    prevalence = y.mean()
    expected = [prevalence - (1 - prevalence) * t / (1 - t) for t in thresholds]
    assert curve["net_benefit_treat_all"].tolist() == expected
    assert (curve["net_benefit_treat_none"] == 0).all()
    everyone = decision_curve(y, np.ones(1000), thresholds)
    np.testing.assert_allclose(everyone["net_benefit_model"], expected)


def test_model_net_benefit_by_hand():
    # 10 episodes, 2 events; treated at pt = 0.2: p >= 0.2 for 4 episodes, 2 of them events
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    p = np.array([0.5, 0.3, 0.25, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05])
    row = decision_curve(y, p, (0.2,)).iloc[0]
    assert (row["tp"], row["fp"]) == (2, 2)
    assert row["net_benefit_model"] == pytest.approx(2 / 10 - 2 / 10 * 0.25)
    assert treat_all_net_benefit(0.2, 0.2) == pytest.approx(0.2 - 0.8 * 0.25)


def test_decision_curve_without_model_keeps_reference_strategies():
    y = np.zeros(50, bool)
    curve = decision_curve(y, None, (0.05, 0.1))
    assert curve["net_benefit_model"].isna().all()
    assert curve["net_benefit_treat_all"].tolist() == pytest.approx([-0.05 / 0.95, -0.1 / 0.9])


def test_calibration_table_bins_add_up_and_tie_together():
    rng = np.random.default_rng(6)
    p = rng.choice([0.01, 0.05, 0.2], 900)
    y = rng.random(900) < p
    table = calibration_table(y, p, bins=10)
    assert table["n"].sum() == 900 and table["n_events"].sum() == y.sum()
    assert len(table) == 3  # tied predictions share a bin
    for _, row in table.iterrows():
        assert row["observed_rate"] == pytest.approx(row["n_events"] / row["n"])
    np.testing.assert_allclose(sorted(table["mean_predicted"]), [0.01, 0.05, 0.2])


def test_calibration_table_makes_deciles_of_distinct_predictions():
    rng = np.random.default_rng(8)
    p = rng.random(1000)
    table = calibration_table(rng.random(1000) < p, p)
    assert table["bin"].tolist() == list(range(1, 11))
    assert (table["n"] == 100).all()
    assert table["mean_predicted"].is_monotonic_increasing
