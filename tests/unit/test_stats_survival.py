"""Aalen-Johansen cumulative incidence against lifelines, 1 - KM, and planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lifelines import AalenJohansenFitter, KaplanMeierFitter

from pipelines.stats.survival import (
    aalen_johansen,
    at_risk,
    cumulative_incidence_at,
    one_minus_kaplan_meier,
    quartiles,
)


def untied_sample(seed: int, n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    time = rng.permutation(n).astype(float) + 1 + rng.uniform(0, 0.5, n)
    event = rng.choice([0, 1, 2], size=n, p=[0.5, 0.3, 0.2])
    return time, event


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_lifelines_without_ties(seed):
    time, event = untied_sample(seed)
    fitter = AalenJohansenFitter(calculate_variance=True).fit(time, event, event_of_interest=1)
    ours = aalen_johansen(time, event).set_index("time")
    theirs = fitter.cumulative_density_.iloc[:, 0].loc[ours.index]
    np.testing.assert_allclose(ours["estimate"], theirs, atol=1e-12)
    # lifelines' two interval columns, whichever way round they are labelled
    # (lifelines gives NaN at a last step where everyone left at risk has an event)
    bounds = fitter.confidence_interval_.loc[ours.index].to_numpy()
    positive = (ours["estimate"].to_numpy() > 0) & np.isfinite(bounds).all(axis=1)
    assert positive.sum() > 20
    np.testing.assert_allclose(ours["lower"][positive], bounds.min(axis=1)[positive], atol=1e-10)
    np.testing.assert_allclose(ours["upper"][positive], bounds.max(axis=1)[positive], atol=1e-10)


def test_tie_convention_equals_lifelines_with_explicit_order():
    """Integer days with ties: ours equals lifelines on the same data with the ties broken
    explicitly (outcome at t, death at t + 0.1, censoring at t + 0.2), and also with the
    opposite order of outcome and death, since the point estimate does not depend on it."""
    rng = np.random.default_rng(7)
    time = rng.integers(1, 40, 300).astype(float)
    event = rng.choice([0, 1, 2], size=300, p=[0.4, 0.35, 0.25])
    ours = cumulative_incidence_at(time, event, np.arange(0, 41))["estimate"].to_numpy()
    for death_offset, outcome_offset in ((0.1, 0.0), (0.0, 0.1)):
        shifted = time + np.select([event == 1, event == 2], [outcome_offset, death_offset], 0.2)
        fitter = AalenJohansenFitter(calculate_variance=False).fit(shifted, event, 1)
        theirs = fitter.predict(np.arange(0, 41) + 0.5).to_numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_deterministic_with_ties_on_shuffled_input():
    rng = np.random.default_rng(3)
    time = rng.integers(0, 30, 200).astype(float)
    event = rng.choice([0, 1, 2], size=200)
    order = rng.permutation(200)
    first = aalen_johansen(time, event)
    again = aalen_johansen(time[order], event[order])
    pd.testing.assert_frame_equal(first, again)


def test_equals_one_minus_km_without_deaths():
    rng = np.random.default_rng(11)
    time = rng.integers(1, 100, 250).astype(float)
    event = rng.choice([0, 1], size=250)
    days = np.arange(0, 101)
    ours = cumulative_incidence_at(time, event, days)["estimate"].to_numpy()
    np.testing.assert_allclose(ours, one_minus_kaplan_meier(time, event, days), atol=1e-12)


samples = st.lists(
    st.tuples(st.integers(0, 60), st.sampled_from([0, 1, 2])), min_size=1, max_size=80
)


@settings(max_examples=60, deadline=None)
@given(samples)
@example([(0, 0), (0, 0), (0, 1), (1, 1), (2, 1), (3, 1)])  # summed to 1.0000000000000002
def test_never_exceeds_one_minus_km_with_death_censored(rows):
    time = np.array([r[0] for r in rows], dtype=float)
    event = np.array([r[1] for r in rows])
    days = np.arange(0, 62)
    aj = cumulative_incidence_at(time, event, days)
    km = one_minus_kaplan_meier(time, event, days)
    assert np.all(aj["estimate"].to_numpy() <= km + 1e-12)
    assert np.all(np.diff(aj["estimate"].to_numpy()) >= -1e-12)
    assert np.all((aj["estimate"] >= 0) & (aj["estimate"] <= 1))


def test_interval_coverage_of_planted_cumulative_incidence():
    """Exponential cause-specific hazards: F1(t) = l1/(l1+l2) (1 - exp(-(l1+l2) t))."""
    l1, l2, day = 0.002, 0.001, 180
    truth = l1 / (l1 + l2) * (1 - np.exp(-(l1 + l2) * day))
    covered = 0
    seeds = range(200)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        t_event = rng.exponential(1 / (l1 + l2), 400)
        cause = np.where(rng.random(400) < l1 / (l1 + l2), 1, 2)
        t_censor = rng.uniform(100, 500, 400)
        time = np.ceil(np.minimum(t_event, t_censor))  # whole days, as in the warehouse
        event = np.where(t_event <= t_censor, cause, 0)
        est = cumulative_incidence_at(time, event, np.array([day]))
        covered += est["lower"].iloc[0] <= truth <= est["upper"].iloc[0]
    assert 0.90 <= covered / len(seeds) <= 0.99


def test_zero_estimate_has_interval_zero_to_unknown():
    est = cumulative_incidence_at(np.array([5.0, 8.0]), np.array([0, 2]), np.array([1, 10]))
    assert est["estimate"].tolist() == [0.0, 0.0]
    assert est["lower"].tolist() == [0.0, 0.0]
    assert est["upper"].isna().all()


def test_empty_sample_gives_nan_and_zero_at_risk():
    est = cumulative_incidence_at(np.array([]), np.array([]), np.array([30, 90]))
    assert est["estimate"].isna().all() and est["at_risk"].tolist() == [0, 0]


def test_at_risk_counts_those_still_followed_at_the_start_of_the_day():
    time = np.array([0, 30, 30, 31, 90, np.nan])
    assert at_risk(time, np.array([0, 30, 31, 91])).tolist() == [5, 4, 2, 0]


def test_median_days_near_planted_lognormal_median():
    rng = np.random.default_rng(5)
    n, median, sigma = 2000, 90.0, 0.6
    days = np.ceil(rng.lognormal(np.log(median), sigma, n))
    q1, med, q3 = quartiles(pd.Series(days))
    # SE of a sample median: 1 / (2 f(m) sqrt(n)), f(m) = 1 / (m sigma sqrt(2 pi))
    se = median * sigma * np.sqrt(2 * np.pi) / (2 * np.sqrt(n))
    assert abs(med - (median + 0.5)) < 4 * se  # + 0.5: ceiling to whole days
    assert q1 < med < q3
    assert quartiles(pd.Series([], dtype=float)) == pytest.approx((np.nan,) * 3, nan_ok=True)


def test_one_minus_km_helper_matches_lifelines():
    time, event = untied_sample(4)
    km = KaplanMeierFitter().fit(time, event == 1)
    days = np.array([10.0, 50.0, 120.0])
    expected = 1 - km.survival_function_at_times(days).to_numpy()
    np.testing.assert_allclose(one_minus_kaplan_meier(time, event, days), expected)
