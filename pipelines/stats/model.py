"""A logistic model on the red flags: cross-validated discrimination, calibration, net benefit.

TRIPOD+AI-style internal validation: out-of-fold predictions from stratified k-fold
cross-validation (scikit-learn, default L2 penalty C=1), then DeLong AUROC, calibration
intercept (calibration-in-the-large, logit(p) as offset) and slope (logistic regression of
the outcome on logit(p)) with statsmodels (Van Calster et al., BMC Med 2019;17:230), Brier
score, and a decision curve (Vickers & Elkin, Med Decis Making 2006;26:565-74).
Degenerate data return NaN with a note, never an exception.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from pipelines.stats.roc import NAN_AUROC, AurocEstimate, delong_auroc

PROBABILITY_FLOOR = 1e-12  # keeps logit(p) finite for the calibration fits


@dataclass(frozen=True)
class ModelResult:
    n: int
    n_events: int
    features: tuple[str, ...]
    predictions: np.ndarray | None  # out-of-fold probabilities, None when not fitted
    auroc: AurocEstimate
    calibration_intercept: float
    calibration_slope: float
    brier_score: float
    note: str


def ascertainable_features(frame: pd.DataFrame) -> list[str]:
    """Columns with no missing value (a flag not ascertainable for anyone in the data is dropped)."""
    return [c for c in frame.columns if frame[c].notna().all()]


def degenerate_reason(y: np.ndarray, n_features: int, folds: int) -> str:
    """Why a cross-validated model cannot be fitted ('' when it can)."""
    events, non_events = int(y.sum()), int(y.size - y.sum())
    if y.size == 0:
        return "no episodes"
    if events == 0:
        return "no events"
    if non_events == 0:
        return "no non-events"
    if n_features == 0:
        return "no ascertainable flags"
    if min(events, non_events) < folds:
        return f"fewer events or non-events than cv folds ({folds})"
    return ""


def cross_validated_probabilities(
    x: np.ndarray, y: np.ndarray, folds: int, seed: int
) -> np.ndarray:
    """Out-of-fold predicted probabilities from a stratified k-fold logistic regression."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    model = LogisticRegression(max_iter=1000)
    return cross_val_predict(model, x, y, cv=splitter, method="predict_proba")[:, 1]


def logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(p, dtype=float), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(clipped / (1 - clipped))


def calibration_intercept_slope(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration-in-the-large (intercept with logit(p) offset) and slope; NaN if not estimable."""
    y = np.asarray(y, dtype=float)
    lp = logit(p)
    if y.size == 0 or y.min() == y.max():
        return np.nan, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ones = np.ones((y.size, 1))
            family = sm.families.Binomial()
            intercept = float(sm.GLM(y, ones, family=family, offset=lp).fit().params[0])
            slope = np.nan
            if np.ptp(lp) > 0:
                slope = float(sm.GLM(y, sm.add_constant(lp), family=family).fit().params[1])
        except (np.linalg.LinAlgError, ValueError):
            return np.nan, np.nan
    return intercept, slope


def fit_flag_model(
    flags: pd.DataFrame, outcome: pd.Series, *, folds: int, seed: int, confidence_level: float
) -> ModelResult:
    """Cross-validated logistic model of the outcome on every ascertainable flag."""
    features = tuple(ascertainable_features(flags))
    y = outcome.astype(bool).to_numpy()
    reason = degenerate_reason(y, len(features), folds)
    if reason:
        return ModelResult(
            y.size, int(y.sum()), features, None, NAN_AUROC, np.nan, np.nan, np.nan, reason
        )
    x = flags[list(features)].astype(float).to_numpy()
    p = cross_validated_probabilities(x, y.astype(int), folds, seed)
    intercept, slope = calibration_intercept_slope(y, p)
    return ModelResult(
        n=y.size,
        n_events=int(y.sum()),
        features=features,
        predictions=p,
        auroc=delong_auroc(y, p, confidence_level),
        calibration_intercept=intercept,
        calibration_slope=slope,
        brier_score=float(brier_score_loss(y, p)),
        note="",
    )


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Observed event rate by quantile bin (deciles by default) of predicted risk."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(p, dtype=float)})
    if frame.empty:
        return pd.DataFrame(columns=["bin", "n", "n_events", "mean_predicted", "observed_rate"])
    # the share of episodes with a strictly lower prediction decides the bin, so tied
    # predictions share a bin and distinct values are never merged needlessly
    below = rankdata(frame["p"], method="min") - 1
    quantile_bin = np.floor(below * bins / len(frame)).astype(int)
    frame["bin"] = rankdata(quantile_bin, method="dense").astype(int)
    grouped = frame.groupby("bin")
    return pd.DataFrame(
        {
            "n": grouped.size(),
            "n_events": grouped["y"].sum().astype(int),
            "mean_predicted": grouped["p"].mean(),
            "observed_rate": grouped["y"].mean(),
        }
    ).reset_index()


def treat_all_net_benefit(prevalence: float, threshold: float) -> float:
    """Net benefit of treating everyone: prevalence - (1 - prevalence) * pt / (1 - pt)."""
    return prevalence - (1 - prevalence) * threshold / (1 - threshold)


def decision_curve(
    y: np.ndarray, p: np.ndarray | None, thresholds: tuple[float, ...]
) -> pd.DataFrame:
    """Net benefit NB = TP/n - FP/n * pt/(1-pt) of the model (treat if p >= pt), treat-all, treat-none."""
    y = np.asarray(y, dtype=bool)
    n = y.size
    rows = []
    for pt in thresholds:
        row = {"threshold": pt, "n": n, "n_events": int(y.sum()), "tp": np.nan, "fp": np.nan}
        row["net_benefit_model"] = np.nan
        if p is not None and n:
            treated = np.asarray(p) >= pt
            row["tp"], row["fp"] = int(np.sum(treated & y)), int(np.sum(treated & ~y))
            row["net_benefit_model"] = row["tp"] / n - row["fp"] / n * pt / (1 - pt)
        row["net_benefit_treat_all"] = treat_all_net_benefit(y.mean(), pt) if n else np.nan
        row["net_benefit_treat_none"] = 0.0
        rows.append(row)
    return pd.DataFrame(rows)
