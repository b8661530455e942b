"""Smoothed calibration: observed risk by a kernel window wide enough to be released.

Binned calibration cannot show deciles apart when few events sit in them (the demo's deciles
6-10 hold 1, 0, 1, 2 and 48 events), and Austin & Steyerberg (Stat Med 2014) prefer smoothed
calibration curves to deciles anyway. At each decile's mean predicted risk m_k we release

    observed_smoothed_k = sum_i w_i y_i / sum_i w_i,   w_i = T(|logit p_i - logit m_k| / h_k)

with the tricube kernel T(u) = (1 - u^3)^3 for u < 1 (as in lowess), 0 beyond. The window
h_k is the narrowest for which the *weighted* events sum_{y=1} w_i and the weighted
non-events sum_{y=0} w_i are both at least `min_cell`. Since 0 <= w_i <= 1, the window then
holds at least min_cell events and min_cell non-events, and no episode weighs more than one:
every released point is an average over at least min_cell of each, with weights that depend
on each episode's (unreleased) predicted risk, so no point or difference of points is a
bin count. When even the whole subgroup (equal weights) has fewer than min_cell events or
non-events, the point is not releasable (`window_events` / `window_non_events` then hold the
small totals and the disclosure layer suppresses the point).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.stats.model import PROBABILITY_FLOOR, calibration_table

COLUMNS = ["bin", "mean_predicted", "observed_smoothed", "window_events", "window_non_events"]
BISECTION_STEPS = 60


def tricube(u: np.ndarray) -> np.ndarray:
    u = np.abs(u)
    return np.where(u < 1, (1 - np.minimum(u, 1) ** 3) ** 3, 0.0)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(p / (1 - p))


def _weighted(y: np.ndarray, distance: np.ndarray, h: float) -> tuple[float, float, np.ndarray]:
    w = tricube(distance / h) if np.isfinite(h) else np.ones_like(distance)
    return float(w[y].sum()), float(w[~y].sum()), w


def _weight_sum(distance: np.ndarray, h: float) -> float:
    """sum of the weights of these episodes: `_weighted`'s sums, when given the events' (or
    the non-events') distances alone (the same values in the same order, the same bits)."""
    return float(tricube(distance / h).sum())


def window(y: np.ndarray, distance: np.ndarray, min_cell: int) -> float:
    """The narrowest bandwidth whose weighted events and non-events are both >= min_cell
    (inf: equal weights, the whole subgroup; also when that is not enough)."""
    top = float(distance.max()) * 1e3 if distance.size and distance.max() > 0 else 1.0
    # the bisection weighs every episode 60 times: split them by outcome once, not each time
    of_events, of_non_events = distance[y], distance[~y]

    def enough(h: float) -> bool:
        return _weight_sum(of_events, h) >= min_cell and _weight_sum(of_non_events, h) >= min_cell

    if not enough(top):
        return float("inf")
    low, high = 0.0, top
    for _ in range(BISECTION_STEPS):  # both weighted sums grow with h
        middle = (low + high) / 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def smoothed_calibration(
    y: np.ndarray, p: np.ndarray, min_cell: int, bins: int = 10
) -> pd.DataFrame:
    """One row per decile of predicted risk: its mean predicted risk and the smoothed observed
    risk there, with the weighted events and non-events in the window (never released)."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=float)
    deciles = calibration_table(y, p, bins)
    if deciles.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
    x = _logit(p)
    rows = []
    for b, m in zip(deciles["bin"], deciles["mean_predicted"], strict=True):
        distance = np.abs(x - _logit(np.array([m]))[0])
        h = window(y, distance, min_cell)
        events, non_events, w = _weighted(y, distance, h)
        rows.append({"bin": int(b), "mean_predicted": float(m),
                     "observed_smoothed": float((w * y).sum() / w.sum()),
                     "window_events": events, "window_non_events": non_events})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
