"""Diagnostic accuracy of a binary rule against a binary reference standard (STARD 2015).

Proportions get Wilson score intervals (statsmodels); likelihood ratios get log-method
intervals (Simel, Samsa & Matchar 1991) and the diagnostic odds ratio a Woolf log interval,
both with 0.5 added to every cell when any cell is zero. A quantity whose denominator is 0
is NaN, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

MEASURES = (
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "lr_positive",
    "lr_negative",
    "diagnostic_odds_ratio",
)


@dataclass(frozen=True)
class TwoByTwo:
    """Index test (rows) by reference standard (columns)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


@dataclass(frozen=True)
class Estimate:
    estimate: float
    lower: float
    upper: float


NAN_ESTIMATE = Estimate(np.nan, np.nan, np.nan)


def two_by_two(test: pd.Series, reference: pd.Series) -> TwoByTwo:
    """Cross-tabulate a boolean test against a boolean reference; rows with a missing value are dropped."""
    known = test.notna() & reference.notna()
    t = test[known].astype(bool).to_numpy()
    r = reference[known].astype(bool).to_numpy()
    return TwoByTwo(
        tp=int(np.sum(t & r)),
        fp=int(np.sum(t & ~r)),
        fn=int(np.sum(~t & r)),
        tn=int(np.sum(~t & ~r)),
    )


def z_value(confidence_level: float) -> float:
    """Two-sided standard normal quantile for a confidence level."""
    return float(norm.ppf(1 - (1 - confidence_level) / 2))


def wilson(count: int, nobs: int, confidence_level: float) -> Estimate:
    """Proportion with a Wilson score interval; NaN when nobs is 0."""
    if nobs == 0:
        return NAN_ESTIMATE
    lower, upper = proportion_confint(count, nobs, alpha=1 - confidence_level, method="wilson")
    estimate = count / nobs
    # statsmodels' closed form leaves rounding error at the ends (0/3 gives a lower bound of
    # 5.6e-17, not 0): the interval always contains the estimate, as the Wilson interval does.
    return Estimate(estimate, min(float(lower), estimate), max(float(upper), estimate))


def _corrected(table: TwoByTwo) -> tuple[float, float, float, float]:
    """Cells with 0.5 added to each when any cell is zero (Haldane-Anscombe)."""
    cells = (table.tp, table.fp, table.fn, table.tn)
    if min(cells) == 0:
        return tuple(c + 0.5 for c in cells)  # type: ignore[return-value]
    return tuple(float(c) for c in cells)  # type: ignore[return-value]


def _log_interval(ratio: float, se_log: float, z: float) -> Estimate:
    return Estimate(ratio, ratio * float(np.exp(-z * se_log)), ratio * float(np.exp(z * se_log)))


def _without_empty_line(table: TwoByTwo) -> bool:
    """Every row and column of the 2x2 has a count: otherwise a ratio below is 0/0.

    No cases or non-cases: sensitivity or specificity is 0/0; no test positives (negatives):
    LR+ (LR-) compares two empty proportions. The 0.5 correction would invent a value there.
    """
    return (
        min(table.tp + table.fn, table.fp + table.tn, table.tp + table.fp, table.fn + table.tn) > 0
    )


def likelihood_ratios(table: TwoByTwo, confidence_level: float) -> tuple[Estimate, Estimate]:
    """LR+ and LR- with log-method CIs (Simel 1991); NaN without both cases and non-cases.

    LR+ is NaN without test positives and LR- without test negatives (0/0 before the 0.5
    correction: a degenerate 2x2 such as fn = tn = 0 has no LR-)."""
    if table.tp + table.fn == 0 or table.fp + table.tn == 0:
        return NAN_ESTIMATE, NAN_ESTIMATE
    a, b, c, d = _corrected(table)
    z = z_value(confidence_level)
    lr_pos = (a / (a + c)) / (b / (b + d))
    lr_neg = (c / (a + c)) / (d / (b + d))
    se_pos = np.sqrt(1 / a - 1 / (a + c) + 1 / b - 1 / (b + d))
    se_neg = np.sqrt(1 / c - 1 / (a + c) + 1 / d - 1 / (b + d))
    positive = _log_interval(lr_pos, se_pos, z) if table.tp + table.fp else NAN_ESTIMATE
    negative = _log_interval(lr_neg, se_neg, z) if table.fn + table.tn else NAN_ESTIMATE
    return positive, negative


def diagnostic_odds_ratio(table: TwoByTwo, confidence_level: float) -> Estimate:
    """DOR = (tp*tn)/(fp*fn) with a Woolf log CI; NaN when a row or column of the 2x2 is
    empty (no cases, non-cases, test positives or test negatives: the odds are 0/0)."""
    if not _without_empty_line(table):
        return NAN_ESTIMATE
    a, b, c, d = _corrected(table)
    se = np.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    return _log_interval(a * d / (b * c), se, z_value(confidence_level))


def accuracy_measures(table: TwoByTwo, confidence_level: float) -> dict[str, Estimate]:
    """Every STARD accuracy measure of one 2x2 table, keyed by MEASURES."""
    lr_pos, lr_neg = likelihood_ratios(table, confidence_level)
    return {
        "sensitivity": wilson(table.tp, table.tp + table.fn, confidence_level),
        "specificity": wilson(table.tn, table.tn + table.fp, confidence_level),
        "ppv": wilson(table.tp, table.tp + table.fp, confidence_level),
        "npv": wilson(table.tn, table.tn + table.fn, confidence_level),
        "lr_positive": lr_pos,
        "lr_negative": lr_neg,
        "diagnostic_odds_ratio": diagnostic_odds_ratio(table, confidence_level),
    }


def accuracy_row(table: TwoByTwo, confidence_level: float) -> dict[str, float]:
    """One flat row: tp, fp, fn, tn, then <measure>, <measure>_lower, <measure>_upper."""
    row: dict[str, float] = {"tp": table.tp, "fp": table.fp, "fn": table.fn, "tn": table.tn}
    for name, est in accuracy_measures(table, confidence_level).items():
        row[name], row[f"{name}_lower"], row[f"{name}_upper"] = est.estimate, est.lower, est.upper
    return row
