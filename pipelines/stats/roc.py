"""ROC points of an integer score and AUROC with a DeLong confidence interval.

DeLong, DeLong & Clarke-Pearson, Biometrics 1988;44:837-45, computed with midranks as in
Sun & Xu, IEEE Signal Process Lett 2014;21:1389-93. The interval is Wald on the AUROC
scale, clipped to [0, 1] (as pROC does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from pipelines.stats.accuracy import two_by_two, z_value


@dataclass(frozen=True)
class AurocEstimate:
    auroc: float
    se: float
    lower: float
    upper: float


NAN_AUROC = AurocEstimate(np.nan, np.nan, np.nan, np.nan)


def delong_components(
    y_true: np.ndarray, score: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC and the DeLong structural components V10 (per case) and V01 (per non-case)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(score, dtype=float)
    cases, controls = s[y], s[~y]
    m, n = cases.size, controls.size
    all_ranks = rankdata(np.concatenate((cases, controls)))
    case_ranks, control_ranks = rankdata(cases), rankdata(controls)
    v10 = (all_ranks[:m] - case_ranks) / n
    v01 = 1.0 - (all_ranks[m:] - control_ranks) / m
    return float(v10.mean()), v10, v01


def delong_auroc(
    y_true: np.ndarray, score: np.ndarray, confidence_level: float = 0.95
) -> AurocEstimate:
    """AUROC with DeLong SE and Wald CI.

    NaN without cases or non-cases; the SE and CI are NaN with fewer than 2 of either.
    """
    y = np.asarray(y_true, dtype=bool)
    if y.sum() == 0 or (~y).sum() == 0:
        return NAN_AUROC
    auc, v10, v01 = delong_components(y, score)
    if v10.size < 2 or v01.size < 2:
        return AurocEstimate(auc, np.nan, np.nan, np.nan)
    se = float(np.sqrt(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size))
    z = z_value(confidence_level)
    return AurocEstimate(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se))


def roc_points(y_true: pd.Series, score: pd.Series, thresholds: range) -> pd.DataFrame:
    """2x2 counts, sensitivity and false-positive rate of the rule score >= threshold."""
    rows = []
    for threshold in thresholds:
        table = two_by_two((score >= threshold).where(score.notna()), y_true)
        cases, controls = table.tp + table.fn, table.fp + table.tn
        rows.append(
            {
                "threshold": threshold,
                "tp": table.tp,
                "fp": table.fp,
                "fn": table.fn,
                "tn": table.tn,
                "sensitivity": table.tp / cases if cases else np.nan,
                "false_positive_rate": table.fp / controls if controls else np.nan,
            }
        )
    return pd.DataFrame(rows)
