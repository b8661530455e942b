"""Accuracy measures against hand-checked published tables and planted truth."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import Table2x2

from pipelines.stats.accuracy import (
    TwoByTwo,
    accuracy_measures,
    accuracy_row,
    likelihood_ratios,
    two_by_two,
    wilson,
)

# Deyo & Diehl 1988 via Cochrane CD008686 (research/clinical-anchors.md section 1A):
# tp/fp/fn/tn, then sensitivity, specificity (Wilson), LR+, LR- (log method, Simel 1991),
# each "estimate lower upper" exactly as printed there.
DEYO = {
    "age_50_plus": ("10/562/3/1377", "0.77 0.50 0.92", "0.71 0.69 0.73", "2.7 2.0 3.6", "0.32 0.12 0.88"),
    "history_of_cancer": ("4/39/9/1897", "0.31 0.13 0.58", "0.98 0.97 0.99", "15.3 6.4 36.6", "0.71 0.49 1.02"),
    "weight_loss": ("2/116/11/1822", "0.15 0.04 0.42", "0.94 0.93 0.95", "2.6 0.7 9.3", "0.90 0.71 1.14"),
    "failure_to_improve": ("4/196/9/1766", "0.31 0.13 0.58", "0.90 0.89 0.91", "3.1 1.3 7.0", "0.77 0.54 1.11"),
    "pain_over_one_month": ("6/359/6/1531", "0.50 0.25 0.75", "0.81 0.79 0.83", "2.6 1.5 4.7", "0.62 0.35 1.09"),
    # zero cell: 0.5 added to every cell for the likelihood ratios
    "no_relief_bed_rest": ("4/507/0/432", "1.00 0.51 1.00", "0.46 0.43 0.49", "1.7 1.2 2.2", "0.22 0.02 3.0"),
}  # fmt: skip


def assert_printed(value: float, printed: str) -> None:
    """`value` rounds to the printed figure (within half a unit of its last printed decimal)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    assert abs(value - float(printed)) <= 0.5 * 10**-decimals + 1e-9, (value, printed)


@pytest.mark.parametrize("name", sorted(DEYO))
def test_deyo_table_1a(name):
    cells, *printed = DEYO[name]
    measures = accuracy_measures(TwoByTwo(*map(int, cells.split("/"))), confidence_level=0.95)
    names = ("sensitivity", "specificity", "lr_positive", "lr_negative")
    for measure, figures in zip(names, printed, strict=True):
        est = measures[measure]
        for value, figure in zip(
            (est.estimate, est.lower, est.upper), figures.split(), strict=True
        ):
            assert_printed(value, figure)


def test_wilson_small_count_fixture():
    # anchors section 6: Wilson 4/13 = 0.308 (0.127-0.576)
    est = wilson(4, 13, 0.95)
    assert_printed(est.estimate, "0.308")
    assert_printed(est.lower, "0.127")
    assert_printed(est.upper, "0.576")


def test_zero_cell_correction_applies_to_every_cell():
    # 0.5 added to each cell: LR+ = (4.5/5) / (507.5/940)
    lr_pos, lr_neg = likelihood_ratios(TwoByTwo(4, 507, 0, 432), 0.95)
    assert lr_pos.estimate == pytest.approx((4.5 / 5) / (507.5 / 940))
    assert lr_neg.estimate == pytest.approx((0.5 / 5) / (432.5 / 940))


def test_diagnostic_odds_ratio_matches_statsmodels_woolf_interval():
    table = TwoByTwo(4, 39, 9, 1897)
    dor = accuracy_measures(table, 0.95)["diagnostic_odds_ratio"]
    reference = Table2x2(np.array([[4, 39], [9, 1897]]))
    assert dor.estimate == pytest.approx(reference.oddsratio)
    lower, upper = reference.oddsratio_confint(alpha=0.05, method="normal")
    assert (dor.lower, dor.upper) == pytest.approx((lower, upper))


def test_diagnostic_odds_ratio_is_the_ratio_of_likelihood_ratios():
    measures = accuracy_measures(TwoByTwo(10, 562, 3, 1377), 0.95)
    ratio = measures["lr_positive"].estimate / measures["lr_negative"].estimate
    assert measures["diagnostic_odds_ratio"].estimate == pytest.approx(ratio)


def test_nan_not_error_when_a_denominator_is_zero():
    row = accuracy_row(TwoByTwo(tp=0, fp=5, fn=0, tn=95), 0.95)  # no cases (Synthea)
    assert math.isnan(row["sensitivity"]) and math.isnan(row["sensitivity_lower"])
    assert row["ppv"] == 0.0  # 0 of 5 test positives are cases
    for m in ("lr_positive", "lr_negative", "diagnostic_odds_ratio"):
        assert math.isnan(row[m])
    assert row["specificity"] == pytest.approx(0.95)
    empty = accuracy_row(TwoByTwo(0, 0, 0, 0), 0.95)
    assert all(math.isnan(empty[k]) for k in empty if k not in ("tp", "fp", "fn", "tn"))


def test_confidence_level_is_honoured():
    wide = wilson(30, 100, 0.99)
    narrow = wilson(30, 100, 0.90)
    assert wide.lower < narrow.lower < 0.3 < narrow.upper < wide.upper


def test_two_by_two_drops_unascertained_and_counts_cells():
    test = pd.Series([True, True, False, False, None, True], dtype="boolean")
    ref = pd.Series([True, False, True, False, True, None], dtype="boolean")
    assert two_by_two(test, ref) == TwoByTwo(tp=1, fp=1, fn=1, tn=1)


def test_wilson_coverage_on_planted_episode_data():
    """Planted sensitivity 0.70 / specificity 0.90, 200 cohorts of 600 episodes, prevalence 8%."""
    covered_sens = covered_spec = 0
    seeds = range(200)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        outcome = rng.random(600) < 0.08
        flag = np.where(outcome, rng.random(600) < 0.70, rng.random(600) < 0.10)
        measures = accuracy_measures(two_by_two(pd.Series(flag), pd.Series(outcome)), 0.95)
        covered_sens += measures["sensitivity"].lower <= 0.70 <= measures["sensitivity"].upper
        covered_spec += measures["specificity"].lower <= 0.90 <= measures["specificity"].upper
    assert 0.90 <= covered_sens / len(seeds) <= 0.99
    assert 0.90 <= covered_spec / len(seeds) <= 0.99


@pytest.mark.parametrize(("count", "nobs"), [(0, 3), (3, 3), (0, 1), (7, 7)])
def test_wilson_interval_contains_an_estimate_of_zero_or_one_exactly(count, nobs):
    estimate = wilson(count, nobs, 0.95)
    assert estimate.lower <= estimate.estimate <= estimate.upper
    assert (estimate.lower == 0.0) if count == 0 else (estimate.upper == 1.0)
