"""Presentation and prognosis by diagnostic interval (PROTOCOL 6.8). Descriptive, not causal.

Among diagnosed episodes (mart.prognosis): the diagnostic interval (days from index to
diagnosis) in thirds; skeletal-related events (SRE) at presentation per third (Wilson CIs)
and as a logistic trend per 30 days (statsmodels); overall survival from diagnosis by
Kaplan-Meier (lifelines; log(-log) CIs), its median and 1-year survival; the Cox hazard ratio
per 30 days of interval adjusted for age (lifelines, Efron ties, Wald CI).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.utils import median_survival_times
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

from pipelines.stats.accuracy import wilson, z_value

PER_DAYS = 30  # the hazard and odds ratios are per 30 days of diagnostic interval
ONE_YEAR = 365
THIRDS = ("first", "second", "third")

# Printed beside every prognosis-by-interval result (report and docs/statistics.md).
CAUTION = (
    "Descriptive, not causal. Survival is counted from diagnosis, so an earlier diagnosis "
    "adds lead time (a longer apparent survival even if death comes on the same day), and "
    "the 'waiting-time paradox' works the other way: patients with aggressive disease "
    "present with severe symptoms and are diagnosed quickly, so short intervals can go with "
    "worse outcomes. Neither the skeletal-related events nor the hazard ratio by interval "
    "measures what a faster diagnosis would have changed."
)


def interval_thirds(days: pd.Series) -> pd.Series:
    """Tertile of the diagnostic interval (ties broken by order: equal-sized thirds)."""
    if len(days) < 3:
        return pd.Series(pd.NA, index=days.index, dtype="object")
    ranks = days.rank(method="first")
    return pd.qcut(ranks, 3, labels=list(THIRDS)).astype(str)


def sre_by_third(frame: pd.DataFrame, confidence_level: float = 0.95) -> pd.DataFrame:
    """Per third (and overall): interval range, episodes, with an SRE, proportion and CI."""
    thirds = interval_thirds(frame["diagnostic_interval_days"])
    rows = []
    for name in ("all", *THIRDS):
        part = frame if name == "all" else frame[(thirds == name).to_numpy(bool)]
        sre = part["has_sre_at_presentation"].astype(bool)
        est = wilson(int(sre.sum()), len(part), confidence_level)
        days = part["diagnostic_interval_days"]
        rows.append({"interval_third": name, "min_interval_days": days.min() if len(days) else np.nan,
                     "max_interval_days": days.max() if len(days) else np.nan, "n": len(part),
                     "n_sre": int(sre.sum()), "proportion": est.estimate, "lower": est.lower,
                     "upper": est.upper})  # fmt: skip
    return pd.DataFrame(rows)


def sre_odds_ratio(frame: pd.DataFrame, confidence_level: float = 0.95) -> dict[str, float]:
    """Logistic trend of SRE on the interval: odds ratio per 30 days with a Wald CI."""
    y = frame["has_sre_at_presentation"].astype(float).to_numpy()
    x = frame["diagnostic_interval_days"].astype(float).to_numpy() / PER_DAYS
    if len(y) < 3 or y.min() == y.max():
        return _missing("too few episodes, or SRE in all or none")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = sm.Logit(y, sm.add_constant(x)).fit(disp=0)
    separated = any(issubclass(w.category, PerfectSeparationWarning) for w in caught)
    if separated or not fit.mle_retvals.get("converged", False):
        # small samples: the interval separates SRE from none, the slope is not identified
        return _missing("not estimable: perfect separation or no convergence")
    beta, se = float(fit.params[1]), float(fit.bse[1])
    return _ratio(beta, se, confidence_level) | {"n": len(y), "n_events": int(y.sum())}


def kaplan_meier(frame: pd.DataFrame, confidence_level: float = 0.95) -> KaplanMeierFitter:
    return KaplanMeierFitter(alpha=1 - confidence_level).fit(
        frame["days_diagnosis_to_death_or_censoring"].astype(float),
        frame["is_dead"].astype(bool),
    )


def survival_curve(frame: pd.DataFrame, confidence_level: float = 0.95) -> pd.DataFrame:
    """The KM curve at each distinct time: day, estimate, lower, upper, at_risk, deaths."""
    if len(frame) == 0:
        return pd.DataFrame(columns=["day", "estimate", "lower", "upper", "at_risk", "n_deaths"])
    km = kaplan_meier(frame, confidence_level)
    ci = km.confidence_interval_survival_function_
    table = km.event_table
    return pd.DataFrame({
        "day": km.survival_function_.index.to_numpy(dtype=float),
        "estimate": km.survival_function_.iloc[:, 0].to_numpy(),
        "lower": ci.iloc[:, 0].to_numpy(), "upper": ci.iloc[:, 1].to_numpy(),
        "at_risk": table["at_risk"].reindex(km.survival_function_.index).to_numpy(),
        "n_deaths": table["observed"].reindex(km.survival_function_.index).to_numpy(),
    })  # fmt: skip


def survival_summary(frame: pd.DataFrame, confidence_level: float = 0.95) -> list[dict]:
    """Median survival and 1-year survival with CIs (lifelines)."""
    n, deaths = len(frame), int(frame["is_dead"].astype(bool).sum()) if len(frame) else 0
    if n == 0 or deaths == 0:
        note = "no diagnosed episodes" if n == 0 else "no deaths"
        return [
            {"measure": m, "estimate": np.nan, "lower": np.nan, "upper": np.nan, "n": n,
             "n_events": deaths, "note": note}
            for m in ("median_survival_days", "survival_1_year")
        ]  # fmt: skip
    km = kaplan_meier(frame, confidence_level)
    median_ci = median_survival_times(km.confidence_interval_)
    at_year = km.survival_function_at_times(ONE_YEAR).iloc[0]
    ci = km.confidence_interval_survival_function_
    before = ci[ci.index <= ONE_YEAR].iloc[-1]
    median = float(km.median_survival_time_)
    return [
        {"measure": "median_survival_days", "estimate": median,
         "lower": float(median_ci.iloc[0, 0]), "upper": float(median_ci.iloc[0, 1]), "n": n,
         "n_events": deaths, "note": "" if np.isfinite(median) else "median not reached"},
        {"measure": "survival_1_year", "estimate": float(at_year), "lower": float(before.iloc[0]),
         "upper": float(before.iloc[1]), "n": n, "n_events": deaths, "note": ""},
    ]  # fmt: skip


def cox_hazard_ratio(frame: pd.DataFrame, confidence_level: float = 0.95) -> dict[str, float]:
    """Hazard ratio of death per 30 days of diagnostic interval, adjusted for age at index."""
    data = pd.DataFrame({
        "time": frame["days_diagnosis_to_death_or_censoring"].astype(float),
        "dead": frame["is_dead"].astype(bool).astype(int),
        "interval_per_30_days": frame["diagnostic_interval_days"].astype(float) / PER_DAYS,
        "age": frame["age_at_index"].astype(float),
    })  # fmt: skip
    if data["dead"].sum() < 2 or len(data) < 5:
        return _missing("too few deaths")
    # a zero time (death on the diagnosis day) is a valid Cox time; lifelines wants > 0
    data["time"] = data["time"].clip(lower=0.5)
    try:
        fit = CoxPHFitter(alpha=1 - confidence_level).fit(data, "time", "dead")
    except ConvergenceError:
        return _missing("not estimable: the Cox model did not converge")
    beta = float(fit.params_["interval_per_30_days"])
    se = float(fit.standard_errors_["interval_per_30_days"])
    return _ratio(beta, se, confidence_level) | {
        "n": len(data),
        "n_events": int(data["dead"].sum()),
    }


def _ratio(beta: float, se: float, confidence_level: float) -> dict[str, float]:
    z = z_value(confidence_level)
    return {"estimate": float(np.exp(beta)), "lower": float(np.exp(beta - z * se)),
            "upper": float(np.exp(beta + z * se)), "note": ""}  # fmt: skip


def _missing(note: str) -> dict[str, float]:
    return {"estimate": np.nan, "lower": np.nan, "upper": np.nan, "note": note}


def prognosis_summary(frame: pd.DataFrame, confidence_level: float = 0.95) -> pd.DataFrame:
    """One row per measure: median and 1-year survival, HR per 30 days, SRE OR per 30 days."""
    rows = survival_summary(frame, confidence_level)
    n, deaths = len(frame), int(frame["is_dead"].astype(bool).sum()) if len(frame) else 0
    hr = {"n": n, "n_events": deaths} | cox_hazard_ratio(frame, confidence_level)
    rows.append({"measure": "hazard_ratio_per_30_days_age_adjusted", **hr})
    sre = {"n": n, "n_events": int(frame["has_sre_at_presentation"].astype(bool).sum())}
    rows.append(
        {"measure": "sre_odds_ratio_per_30_days", **sre, **sre_odds_ratio(frame, confidence_level)}
    )
    out = pd.DataFrame(rows)
    return out[["measure", "estimate", "lower", "upper", "n", "n_events", "note"]]
