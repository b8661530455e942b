"""Time to diagnosis with death as a competing risk (PROTOCOL.md 6.1).

`aalen_johansen` is a deterministic Aalen-Johansen estimator of the cumulative incidence of
one cause. All events at the same day enter the same step, which makes the point estimate
independent of any ordering of tied outcome and death records (the product-limit terms
telescope); censoring at a day happens after that day's events. It equals lifelines'
AalenJohansenFitter on data without ties (tested), but never jitters. Variance: the
Greenwood-type delta-method estimator used by lifelines and SAS PROC LIFETEST (Marubini &
Valsecchi 1995; Collett 2015 p. 411), with a log(-log) transformed interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter

from pipelines.stats.accuracy import z_value

CENSORED, OUTCOME, DEATH = 0, 1, 2


def event_table(time: np.ndarray, event: np.ndarray) -> pd.DataFrame:
    """Per distinct time: at_risk (time >= t), outcomes, competing events, censored.

    Episodes without a follow-up time are left out.
    """
    time = np.asarray(time, dtype=float)
    known = np.isfinite(time)
    time, event = time[known], np.asarray(event, dtype=int)[known]
    times, inverse = np.unique(time, return_inverse=True)
    counts = np.zeros((times.size, 3), dtype=int)
    np.add.at(counts, (inverse, np.clip(event, 0, 2)), 1)
    leaving = counts.sum(axis=1)
    at_risk = time.size - (np.cumsum(leaving) - leaving)
    return pd.DataFrame(
        {
            "time": times,
            "at_risk": at_risk,
            "n_outcome": counts[:, OUTCOME],
            "n_competing": counts[:, DEATH],
            "n_censored": counts[:, CENSORED],
        }
    )


def aalen_johansen(
    time: np.ndarray, event: np.ndarray, *, confidence_level: float = 0.95
) -> pd.DataFrame:
    """Cumulative incidence of event 1 (event 2 competing, 0 censored) at each distinct time.

    Columns: time, at_risk, n_outcome, n_competing, n_censored, estimate, lower, upper.
    Where the estimate is 0 the interval is [0, NaN] (log(-log) is undefined there).
    """
    tab = event_table(time, event)
    n = tab["at_risk"].to_numpy(dtype=float)
    d1 = tab["n_outcome"].to_numpy(dtype=float)
    d = d1 + tab["n_competing"].to_numpy(dtype=float)
    surv = np.cumprod(1 - d / np.where(n > 0, n, 1))
    surv_before = np.concatenate(([1.0], surv[:-1]))
    # F <= 1 - S <= 1 exactly; the cumulative sum can overshoot 1 in the last bit (found by
    # Hypothesis: 1.0000000000000002), so rounding error is clipped, nothing else.
    cif = np.clip(np.cumsum(surv_before * d1 / np.where(n > 0, n, 1)), 0.0, 1.0)
    variance = _cif_variance(cif, surv_before, n, d, d1)
    lower, upper = _loglog_interval(cif, variance, z_value(confidence_level))
    return tab.assign(estimate=cif, lower=lower, upper=upper)


def _cif_variance(
    cif: np.ndarray, surv_before: np.ndarray, n: np.ndarray, d: np.ndarray, d1: np.ndarray
) -> np.ndarray:
    """Greenwood-type variance of F(t_k), vectorised with cumulative sums (lifelines' formula).

    Var F(t_k) = sum_i (F_k - F_i)^2 d_i/(n_i(n_i-d_i)) + sum_i S_{i-1}^2 d1_i(n_i-d1_i)/n_i^3
                 - 2 sum_i (F_k - F_i) S_{i-1} d1_i/n_i^2, over t_i <= t_k.
    A step where everyone at risk has an event ends the curve, so F_k = F_i after it and
    its first term is 0 (the formula's 0/0 is set to 0).
    """
    safe_n = np.where(n > 0, n, 1)
    a = np.where(n > d, d / (safe_n * np.where(n > d, n - d, 1)), 0.0)
    b = surv_before**2 * d1 * (n - d1) / safe_n**3
    c = surv_before * d1 / safe_n**2
    first = cif**2 * np.cumsum(a) - 2 * cif * np.cumsum(a * cif) + np.cumsum(a * cif**2)
    third = cif * np.cumsum(c) - np.cumsum(c * cif)
    return np.maximum(first + np.cumsum(b) - 2 * third, 0.0)


def _loglog_interval(
    cif: np.ndarray, variance: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = (cif > 0) & (cif < 1)
        log_log = np.log(-np.log(np.where(inside, cif, 0.5)))
        se = np.sqrt(variance) / (
            np.where(inside, cif, 0.5) * np.abs(np.log(np.where(inside, cif, 0.5)))
        )
        lower = np.where(inside, np.exp(-np.exp(log_log + z * se)), np.nan)
        upper = np.where(inside, np.exp(-np.exp(log_log - z * se)), np.nan)
    lower = np.where(cif == 0, 0.0, lower)
    return lower, upper


def step_at(curve: pd.DataFrame, days: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Right-continuous step function of a curve (by `time`) at the given days (0 before the first time)."""
    days = np.asarray(days, dtype=float)
    position = np.searchsorted(curve["time"].to_numpy(), days, side="right") - 1
    out = pd.DataFrame({"day": days})
    for col in columns:
        values = curve[col].to_numpy(dtype=float)
        before = 0.0 if col in ("estimate", "lower") else np.nan
        out[col] = np.where(position >= 0, values[np.maximum(position, 0)], before)
    return out


def at_risk(time: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Number still under follow-up at the start of each day (time >= day)."""
    time = np.asarray(time, dtype=float)
    ordered = np.sort(time[np.isfinite(time)])
    return ordered.size - np.searchsorted(ordered, np.asarray(days, dtype=float), side="left")


def cumulative_incidence_at(
    time: np.ndarray, event: np.ndarray, days: np.ndarray, *, confidence_level: float = 0.95
) -> pd.DataFrame:
    """Aalen-Johansen estimate, interval and number at risk at each requested day."""
    curve = aalen_johansen(time, event, confidence_level=confidence_level)
    if curve.empty:
        out = pd.DataFrame({"day": np.asarray(days, dtype=float)})
        return out.assign(estimate=np.nan, lower=np.nan, upper=np.nan, at_risk=0)
    out = step_at(curve, days, ["estimate", "lower", "upper"])
    return out.assign(at_risk=at_risk(time, days))


def one_minus_kaplan_meier(time: np.ndarray, event: np.ndarray, days: np.ndarray) -> np.ndarray:
    """1 - KM for event 1 with every other event censored (lifelines), at the given days."""
    km = KaplanMeierFitter().fit(np.asarray(time, dtype=float), np.asarray(event) == OUTCOME)
    return km.cumulative_density_at_times(np.asarray(days, dtype=float)).to_numpy()


def quartiles(values: pd.Series) -> tuple[float, float, float]:
    """Q1, median, Q3 (linear interpolation, Hyndman-Fan type 7); NaN when empty."""
    clean = values.dropna().to_numpy(dtype=float)
    if clean.size == 0:
        return np.nan, np.nan, np.nan
    q1, median, q3 = np.percentile(clean, [25, 50, 75])
    return float(q1), float(median), float(q3)
