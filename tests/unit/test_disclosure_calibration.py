"""Smoothed calibration (issue 10): released at every decile, never a bin count.

The data mimic the demo's landmark population: deciles of predicted risk 1-5 hold no event,
deciles 6-10 hold 1, 0, 1, 2 and 48 events, so binned calibration shows 6 of 10 bins (deciles
6-10 pooled). The smoothed observed risk is released at every decile whose kernel window
weighs >= min_cell events and >= min_cell non-events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import analysis
from pipelines.settings import StudySettings
from pipelines.stats import smooth_calibration
from pipelines.stats.disclosure import is_small
from pipelines.stats.model import calibration_table
from pipelines.stats.smooth_calibration import smoothed_calibration, tricube

SETTINGS = StudySettings()
MIN_CELL = SETTINGS.min_cell
DEMO_EVENTS = [0, 0, 0, 0, 0, 1, 0, 1, 2, 48]


def demo_like(events=DEMO_EVENTS, per_decile: int = 125, seed: int = 1):
    """(y, p): 10 deciles of rising predicted risk with the given events in each."""
    rng = np.random.default_rng(seed)
    edges = np.geomspace(0.001, 0.6, len(events) + 1)
    p, y = [], []
    for k, e in enumerate(events):
        p.append(np.sort(rng.uniform(edges[k], edges[k + 1], per_decile)))
        hits = np.zeros(per_decile, dtype=bool)
        hits[rng.choice(per_decile, e, replace=False)] = True
        y.append(hits)
    return np.concatenate(y), np.concatenate(p)


def release(y: np.ndarray, p: np.ndarray, subgroup: str = "all") -> dict[str, pd.DataFrame]:
    """The released calibration tables of one subgroup, through the real disclosure layer."""
    frames = {
        "calibration": calibration_table(y, p).assign(subgroup=subgroup),
        "calibration_smoothed": smoothed_calibration(y, p, MIN_CELL).assign(subgroup=subgroup),
    }
    released, _ = analysis.release_tables(frames, SETTINGS)
    return released


def test_every_smoothed_point_weighs_min_cell_events_and_non_events():
    y, p = demo_like()
    points = smoothed_calibration(y, p, MIN_CELL)
    assert len(points) == 10
    assert (points["window_events"] >= MIN_CELL - 1e-9).all()
    assert (points["window_non_events"] >= MIN_CELL - 1e-9).all()
    # the narrowest such window: just enough weighted events or non-events, not more
    enough = np.minimum(points["window_events"], points["window_non_events"])
    assert np.allclose(enough, MIN_CELL, atol=1e-6)
    # decile 9 (2 events in 125) is not shown as its own rate but as its window's
    assert points["observed_smoothed"].iloc[8] != pytest.approx(2 / 125)
    assert tricube(np.array([0.0, 0.5, 1.0, 2.0])).tolist() == [1.0, (1 - 0.125) ** 3, 0.0, 0.0]


def test_smoothed_calibration_shows_at_least_8_of_10_points_on_demo_like_data():
    y, p = demo_like()
    released = release(y, p)
    bins, points = released["calibration"], released["calibration_smoothed"]
    assert len(bins) == 6  # binned: deciles 6-10 pooled, as before
    shown = points["observed_smoothed_status"] == "shown"
    assert shown.sum() >= 8
    assert points.loc[shown, "observed_smoothed"].notna().all()
    assert not {"window_events", "window_non_events"} & set(points.columns)  # never released


def test_a_subgroup_with_too_few_events_releases_no_smoothed_point():
    y, p = demo_like(events=[0, 0, 0, 0, 0, 1, 0, 1, 2, 5])
    points = release(y, p)["calibration_smoothed"]
    assert points["observed_smoothed"].isna().all()
    assert set(points["observed_smoothed_status"]) == {"suppressed_small"}


# ---- the attack: neighbouring points and pooled bins against a decile's event count -------


def decile_claims(bins: pd.DataFrame, points: pd.DataFrame) -> dict[int, list[float]]:
    """What an adversary holding both released tables claims for each decile's events.

    Decile sizes: a pooled bin's n shared equally among its deciles (quantile bins are
    equal-sized). Claims: the point's rate x the decile's size; the pooled events minus the
    other deciles' claims; neighbouring points' differences x size added to the neighbour's
    claim. Only integer claims are kept: an exact recovery is an integer, and a rounded guess
    that happens to hit is not one (the adversary cannot tell it from the misses)."""
    sizes, pooled = {}, {}
    for r in bins.dropna(subset=["n", "n_events"]).itertuples(index=False):
        deciles = list(range(int(r.bin), int(r.bin_to) + 1))
        for d in deciles:
            sizes[d] = float(r.n) / len(deciles)
            pooled[d] = (deciles, float(r.n_events))
    rate = dict(
        zip(points["bin"].astype(int), points["observed_smoothed"].astype(float), strict=True)
    )
    claims: dict[int, list[float]] = {}
    for d, size in sizes.items():
        if d in rate and np.isfinite(rate[d]):
            claims.setdefault(d, []).append(rate[d] * size)
    for d, (deciles, events) in pooled.items():
        others = [claims.get(o, [np.nan])[0] for o in deciles if o != d]
        claims.setdefault(d, []).append(events - float(np.sum(others)))
    for d in sizes:
        for n in (d - 1, d + 1):
            if n in rate and d in rate and np.isfinite(rate[n]) and claims.get(n):
                claims[d].append(claims[n][0] + (rate[d] - rate[n]) * sizes[d])
    return {
        d: [c for c in cs if np.isfinite(c) and abs(c - round(c)) < 1e-6]
        for d, cs in claims.items()
    }


def recovered(bins: pd.DataFrame, points: pd.DataFrame, true_events: list[int]) -> list:
    """Deciles whose small, unreleased event count a claim hits exactly."""
    own_bin = set(bins.loc[bins["bin"] == bins["bin_to"], "bin"].astype(int))
    return [
        (d, c)
        for d, cs in decile_claims(bins, points).items()
        for c in cs
        if d not in own_bin
        and is_small(true_events[d - 1], MIN_CELL)
        and round(c) == true_events[d - 1]
    ]


def test_the_attack_recovers_decile_counts_from_unsmoothed_points():
    """The judge works: releasing each decile's own rate (a window of one bin) leaks."""
    y, p = demo_like()
    released = release(y, p)
    table = calibration_table(y, p)
    points = released["calibration_smoothed"].assign(observed_smoothed=table["observed_rate"])
    assert recovered(released["calibration"], points, DEMO_EVENTS)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.integers(0, 14), min_size=9, max_size=9),
    st.integers(11, 80),
    st.integers(0, 10_000),
)
def test_no_decile_count_comes_back_from_smoothed_points(low, top, seed):
    events = [*low, top]
    y, p = demo_like(events=events, seed=seed)
    released = release(y, p)
    assert recovered(released["calibration"], released["calibration_smoothed"], events) == []


@pytest.mark.parametrize("subgroup", ["female"])
def test_smoothed_points_of_a_hidden_model_subgroup_are_hidden(subgroup):
    """A subgroup whose model counts are hidden releases no smoothed point (cross-table)."""
    y, p = demo_like()
    frames = {
        "calibration_smoothed": smoothed_calibration(y, p, MIN_CELL).assign(subgroup=subgroup),
        "model_performance": pd.DataFrame(
            {
                "subgroup": [subgroup],
                "n": [len(y)],
                "n_events": [5],
                "auroc": [0.8],
                "auroc_lower": [0.7],
                "auroc_upper": [0.9],
                "calibration_intercept": [0.0],
                "calibration_slope": [1.0],
                "brier_score": [0.05],
            }
        ),  # fmt: skip
    }
    released, _ = analysis.release_tables(frames, SETTINGS)
    points = released["calibration_smoothed"]
    assert points["observed_smoothed"].isna().all()


def reference_window(y: np.ndarray, distance: np.ndarray, min_cell: int) -> float:
    """smooth_calibration.window by its definition: every bisection step weighs all episodes
    and sums the events' and the non-events' weights (the code before issue 16)."""
    top = float(distance.max()) * 1e3 if distance.size and distance.max() > 0 else 1.0

    def enough(h: float) -> bool:
        w = tricube(distance / h)
        return float(w[y].sum()) >= min_cell and float(w[~y].sum()) >= min_cell

    if not enough(top):
        return float("inf")
    low, high = 0.0, top
    for _ in range(smooth_calibration.BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_window_is_the_one_weighing_every_episode_to_the_bit(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(300)[rng.integers(0, 300, 20_000)] ** 3  # tied predictions, as from patterns
    y = rng.random(p.size) < p
    x = np.log(p / (1 - p))
    for centre in np.quantile(x, [0.05, 0.5, 0.95]):
        distance = np.abs(x - centre)
        assert smooth_calibration.window(y, distance, MIN_CELL) == reference_window(
            y, distance, MIN_CELL
        )
