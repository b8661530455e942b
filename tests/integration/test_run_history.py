"""Run history (issue 15 item 2): `release.run_history` keeps one row per successful run, and
two consecutive releases over a growing export reveal no small count by subtraction.

Real runs (`study.run_study`, what the Prefect flow and `redflags run` call) on a real DuckDB
file over a generated export that grows from 1,500 to 1,540 patients (tests/history_fixtures.py).
The attacks read released tables only; the marts judge them afterwards.
"""

from __future__ import annotations

import itertools
import shutil

import duckdb
import pandas as pd
import pytest
from history_fixtures import FIRST, SECOND, SETTINGS, cases_added, two_runs

from pipelines import analysis, history, study
from pipelines.errors import IngestError
from pipelines.stats.disclosure import is_small
from pipelines.stats.release_tables import release_specs

MIN_CELL = SETTINGS.min_cell


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return two_runs(tmp_path_factory)


def read(warehouse, schema: str = "release") -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", [schema]
        ).fetchall()]  # fmt: skip
        return {n: con.execute(f'SELECT * FROM {schema}."{n}"').df() for n in names}


def history_rows(warehouse) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("SELECT * FROM release.run_history ORDER BY finished_at").fetchall()


def small(value) -> bool:
    return value is not None and not pd.isna(value) and is_small(float(value), MIN_CELL)


# ---- the history table ---------------------------------------------------------------------


def test_two_runs_over_a_growing_export_give_two_history_rows(runs):
    history_now = read(runs.warehouse)["run_history"]
    assert list(history_now["run_id"]) == list(runs.run_ids)
    assert list(history_now["n_patients"]) == [FIRST, SECOND]
    assert history_now["finished_at"].is_monotonic_increasing
    assert history_now["input_sha256"].str.len().eq(64).all()
    assert history_now["input_sha256"].nunique() == 2  # the export changed between the runs
    assert history_now["extract_date"].notna().all()
    assert set(history_now["source_format"]) == {"synthea"}
    # the earlier row never changes: it is the row the first run published
    assert history_rows(runs.warehouse)[0] == history_rows(runs.first)[0]
    assert len(history_rows(runs.first)) == 1


def test_history_figures_are_those_of_each_runs_release(runs):
    """A value hidden in a run is hidden in its history row; a shown one is the same number."""
    for warehouse, row in ((runs.first, 0), (runs.warehouse, 1)):
        released = read(warehouse)
        entry = read(runs.warehouse)["run_history"].iloc[row]
        for name, loc in history.FIGURES.items():
            frame = released[loc.table]
            (i,) = loc.rows(frame)
            status = frame[f"{loc.column}_status"].iloc[i]
            assert entry[f"{name}_status"] == status, name
            if status in ("shown", "rounded"):
                assert entry[name] == pytest.approx(float(frame[loc.column].iloc[i])), name
            else:
                assert pd.isna(entry[name]), name


def test_a_failed_run_leaves_the_history_unchanged(runs, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    shutil.copy(runs.warehouse, warehouse)
    broken = tmp_path / "export"
    shutil.copytree(runs.export, broken)
    (broken / "conditions.csv").unlink()
    before = read(warehouse, "meta")["release_history"]
    with pytest.raises(IngestError):
        study.run_study(broken, warehouse, SETTINGS, say=lambda _: None)
    assert read(warehouse, "meta")["release_history"].equals(before)
    assert len(history_rows(warehouse)) == 2


def test_a_failure_inside_publish_appends_nothing(runs, tmp_path):
    """The history row is written in publish's transaction: a publish that fails after it
    (here: in the Spark hook's place) rolls it back with the rest."""
    warehouse = tmp_path / "w.duckdb"
    shutil.copy(runs.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("DROP SCHEMA IF EXISTS release__build CASCADE")
        con.execute("CREATE SCHEMA release__build")
        con.execute("CREATE TABLE release__build.attrition AS SELECT * FROM release.attrition")

        def append_then_fail(c):
            history.append(c, "doomed", source_format="synthea", settings=SETTINGS)
            raise RuntimeError("disk full")

        with pytest.raises(RuntimeError):
            study.publish(con, "doomed", schemas=("release",), also=append_then_fail)
        assert con.execute("SELECT count(*) FROM meta.release_history").fetchone()[0] == 2
        assert con.execute("SELECT count(*) FROM release.run_history").fetchone()[0] == 2


# ---- overlapping releases: an adversary holding both ------------------------------------------


SPECS = release_specs(SETTINGS.cumulative_incidence_days)


def cells(tables: dict) -> dict[str, float]:
    """Every count cell of every table that is not a pooled curve, by table, row labels and
    column (how an adversary lines up two releases), NULLs left out."""
    out = {}
    for name, frame in tables.items():
        if name in SPECS:
            for key, (i, col) in history.tracked_cells(name, frame, SPECS[name]).items():
                if not pd.isna(frame[col].iloc[i]):
                    out[key] = float(frame[col].iloc[i])
    return out


def differences(first: dict, second: dict) -> list[tuple[str, float]]:
    """What an adversary holding both releases subtracts: every count both show, second run
    minus first, and the count columns of the history (row against row, and the newest
    release's tables against every earlier row)."""
    a, b = cells(first), cells(second)
    out = [(key, b[key] - a[key]) for key in a.keys() & b.keys()]
    hist = second.get("run_history")
    if hist is not None:
        for name in history.COUNT_FIGURES:
            values = [v for v in hist[name] if not pd.isna(v)]
            out += [(f"run_history.{name}", y - x) for x, y in itertools.combinations(values, 2)]
            loc = history.FIGURES[name]
            frame = second[loc.table]
            (i,) = loc.rows(frame)
            now = frame[loc.column].iloc[i]
            out += [(f"{loc.key} - run_history", float(now) - float(v))
                    for v in hist[name].iloc[:-1] if not (pd.isna(now) or pd.isna(v))]  # fmt: skip
    return out


def true_small_differences(first_mart: dict, second_mart: dict) -> list[str]:
    """Count cells whose true difference between the runs is 1..min_cell-1."""
    a, b = cells(first_mart), cells(second_mart)
    return [key for key in a.keys() & b.keys() if small(b[key] - a[key])]


def test_attack_subtracting_two_releases_recovers_no_small_count(runs):
    first, second = read(runs.first), read(runs.warehouse)
    # the attack can fail: the export grew by a few episodes, so some headline counts
    # truly differ by 1..min_cell-1 between the runs
    assert true_small_differences(read(runs.first, "mart"), read(runs.warehouse, "mart"))
    leaks = [(key, d) for key, d in differences(first, second) if small(d)]
    assert leaks == []
    # and the protection is visible: the second run hid a count it would otherwise show
    statuses = second["run_history"].filter(like="_status").iloc[-1]
    assert (statuses == "suppressed_complement").any()


def test_attack_catches_releases_built_without_the_overlap_rule(runs):
    """The same attack on the second run's release rebuilt as before this change (no
    relation to the earlier run) finds a small difference: the rule is what stops it."""
    mart = read(runs.warehouse, "mart")
    frames = {n: mart[n].drop(columns=["run_id"]) for n in analysis.RELEASED_TABLES if n in mart}
    without_rule, _ = analysis.release_tables(frames, SETTINGS)
    leaks = [(k, d) for k, d in differences(read(runs.first), without_rule) if small(d)]
    assert leaks, "the attack found nothing to recover even without the rule"
    with_rule, _ = analysis.release_tables(frames, SETTINGS, previous=_previous_of_first(runs))
    assert not [(k, d) for k, d in differences(read(runs.first), with_rule) if small(d)]


# ---- pooled curves of two releases: the same step key subtracted -----------------------------


def _near_count(value: float) -> float:
    """A count rebuilt from a rate times a denominator, when it is one (else NaN)."""
    return float(round(value)) if abs(value - round(value)) < 0.05 else float("nan")


def curve_counts(tables: dict) -> dict[tuple, dict[str, float]]:
    """What an outsider reads off each pooled curve of one release: (table, curve, step) ->
    count per series. Counts as released (ROC and decision-curve cells), accumulated over
    released bins (calibration: while every bin is shown), or rebuilt from a released
    estimate times its released denominator (cumulative incidence x the stratum's episodes,
    with the stratum's diagnoses at the end; 1 - survival x the diagnosed) when that gives a
    whole number."""
    out: dict[tuple, dict[str, float]] = {}

    def put(key: tuple, column: str, value) -> None:
        if value is not None and not pd.isna(value):
            out.setdefault(key, {})[column] = float(value)

    for row in tables.get("roc_points", pd.DataFrame()).itertuples():
        for c in ("tp", "fp", "fn", "tn"):
            put(("roc_points", row.subgroup, float(row.threshold)), c, getattr(row, c))
    for row in tables.get("decision_curve", pd.DataFrame()).itertuples():
        for c in ("tp", "fp"):
            put(("decision_curve", row.subgroup, float(row.step_threshold)), c, getattr(row, c))
    for sub, rows in tables.get("calibration", pd.DataFrame(columns=["subgroup"])).groupby(
        "subgroup"
    ):
        rows = rows.sort_values("bin")
        events, n = rows["n_events"].astype(float).cumsum(), rows["n"].astype(float).cumsum()
        for b, e, k in zip(rows["bin_to"], events, n, strict=True):
            put(("calibration", sub, int(b)), "n_events", e)
            put(("calibration", sub, int(b)), "n_non_events", k - e)
    ttd = tables.get("time_to_diagnosis")
    for row in tables.get("cumulative_incidence", pd.DataFrame()).itertuples():
        stratum = ttd[(ttd["stratum_variable"] == row.stratum_variable)
                      & (ttd["stratum"] == row.stratum)].iloc[0]  # fmt: skip
        curve = ("cumulative_incidence", row.stratum_variable, row.stratum)
        if not pd.isna(stratum["n_episodes"]):
            put((*curve, int(row.day)), "n_outcome",
                _near_count(float(row.estimate) * float(stratum["n_episodes"])))  # fmt: skip
        put((*curve, "end"), "n_outcome", stratum["n_diagnosed"])
    summary = tables.get("prognosis_summary")
    if summary is not None and len(summary) and not pd.isna(summary["n"].iloc[0]):
        n = float(summary["n"].iloc[0])
        for row in tables.get("survival_after_diagnosis", pd.DataFrame()).itertuples():
            put(("survival_after_diagnosis", int(row.day)), "n_deaths",
                _near_count((1 - float(row.estimate)) * n))  # fmt: skip
    return out


def curve_differences(first: dict, second: dict) -> list[tuple]:
    """The two-release attack on pooled curves: at every step key both releases show, the
    second count minus the first; and, per curve and series, any two such differences
    subtracted (the change of the band between two keys: episodes added with a score in
    [k, k'), diagnosed between two days)."""
    a, b = curve_counts(first), curve_counts(second)
    diffs = {(key, c): b[key][c] - a[key][c] for key in a.keys() & b.keys()
             for c in a[key].keys() & b[key].keys()}  # fmt: skip
    out = [(key, c, d) for (key, c), d in diffs.items()]
    for ((k1, c1), d1), ((k2, c2), d2) in itertools.combinations(sorted(diffs.items(), key=str), 2):
        if k1[:-1] == k2[:-1] and c1 == c2:
            out.append(((*k1, "minus", k2[-1]), c1, d1 - d2))
    return out


def small_curve_differences(first: dict, second: dict) -> list[tuple]:
    return [hit for hit in curve_differences(first, second) if small(hit[-1])]


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    return cases_added(tmp_path_factory)


def test_attack_on_pooled_curves_after_a_few_cases_were_added(grown):
    """The export grows by 42 cases (2 with a red-flag count >= 4) and 40 non-cases: the
    curves stay released, and no step both releases show differs by 1..min_cell-1. (The
    1,500 -> 1,540 growth of `runs` hides the second run's curves with their populations, so
    it gives the attack nothing to subtract; before the curves were compared across runs,
    this one found 'exactly 2 more cases with a red-flag count >= 3, and >= 4'.)"""
    first, second = read(grown.first), read(grown.warehouse)
    assert len(second["roc_points"]) and len(second["cumulative_incidence"])
    assert curve_differences(first, second)  # the releases share steps to subtract
    assert small_curve_differences(first, second) == []


def _previous_of_first(runs) -> dict[str, list[float]]:
    with duckdb.connect(str(runs.first), read_only=True) as con:
        return history.previous_counts(con)


def test_no_released_history_value_is_a_small_count(runs):
    hist = read(runs.warehouse)["run_history"]
    for name in history.COUNT_FIGURES:
        assert not any(small(v) for v in hist[name]), name
