"""Presentation and prognosis by diagnostic interval (PROTOCOL 6.8): mart.prognosis on
hand-written rows, and pipelines.stats.prognosis against values computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from model_spec import assert_rows, build_study

from pipelines.stats import prognosis

PATIENTS = """
    patient_id | birth_date | sex | death_date
    p1         | 1960-05-01 | F   | 2016-09-01
    p2         | 1950-01-01 | F   |
"""
ENCOUNTERS = """
    encounter_id | patient_id | start_at            | reason_code
    e0           | p1         | 2014-01-10 09:00:00 |
    e1           | p1         | 2016-03-01 09:00:00 |
    f0           | p2         | 2014-01-10 09:00:00 |
    f1           | p2         | 2016-03-01 09:00:00 |
    f9           | p2         | 2017-06-01 09:00:00 |
"""
CONDITIONS = """
    patient_id | start_date | stop_date  | code_system            | code
    p1         | 2016-03-01 | 2016-03-10 | http://snomed.info/sct | 279039007
    p1         | 2016-05-01 |            | http://snomed.info/sct | 94222008
    p1         | 2016-04-05 |            | ICD-10-CM              | M84.58XA
    p2         | 2016-03-01 | 2016-03-10 | http://snomed.info/sct | 279039007
    p2         | 2016-06-01 |            | http://snomed.info/sct | 94222008
    p2         | 2016-04-15 |            | http://snomed.info/sct | 71286001
"""


def test_prognosis_mart_interval_sre_window_and_survival_from_diagnosis():
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=CONDITIONS)
    # p1: fracture 26 days before diagnosis (in the 30-day window), died 123 days after it.
    # p2: cord compression 47 days before diagnosis (outside), alive: censored at the last
    # encounter (2017-06-01, after the horizon: survival is not cut at the horizon).
    assert_rows(
        con,
        "select patient_id, diagnostic_interval_days, has_sre_at_presentation, is_dead, "
        "days_diagnosis_to_death_or_censoring from mart.prognosis",
        """
        patient_id | diagnostic_interval_days | has_sre_at_presentation | is_dead | days_diagnosis_to_death_or_censoring
        p1         | 61                       | true                    | true    | 123
        p2         | 92                       | false                   | false   | 365
        """,
    )


def tiny() -> pd.DataFrame:
    return pd.DataFrame({
        "diagnostic_interval_days": [10, 20, 30, 100, 110, 120, 200, 210, 220],
        "has_sre_at_presentation": [False, False, False, True, False, False, True, True, False],
        "days_diagnosis_to_death_or_censoring": [50, 100, 150, 200, 250, 300, 350, 400, 450],
        "is_dead": [True, False, True, True, False, True, True, False, True],
        "age_at_index": [50, 60, 70, 55, 65, 75, 52, 62, 72],
    })  # fmt: skip


def test_sre_by_third_counts_by_hand():
    table = prognosis.sre_by_third(tiny()).set_index("interval_third")
    assert table["n"].tolist() == [9, 3, 3, 3] and table["n_sre"].tolist() == [3, 0, 1, 2]
    assert table.loc["third", ["min_interval_days", "max_interval_days"]].tolist() == [200, 220]
    assert table.loc["third", "proportion"] == pytest.approx(2 / 3)
    assert table.loc["first", "lower"] == 0 and 0 < table.loc["first", "upper"] < 0.6


def test_kaplan_meier_median_and_one_year_by_hand():
    # product-limit: deaths at 50 (9 at risk), 150 (7), 200 (6), 300 (4), 350 (3), 450 (1)
    s = np.cumprod([8 / 9, 6 / 7, 5 / 6, 3 / 4, 2 / 3, 0])
    summary = pd.DataFrame(prognosis.survival_summary(tiny())).set_index("measure")
    assert summary.loc["survival_1_year", "estimate"] == pytest.approx(s[4])
    assert s[2] > 0.5 > s[3]  # so the median is the death at 300
    assert summary.loc["median_survival_days", "estimate"] == 300
    curve = prognosis.survival_curve(tiny())
    assert curve.query("day == 300")["estimate"].iloc[0] == pytest.approx(s[3])


def test_no_deaths_and_no_sre_give_notes_not_numbers():
    frame = tiny().assign(is_dead=False, has_sre_at_presentation=False)
    summary = prognosis.prognosis_summary(frame).set_index("measure")
    assert summary["estimate"].isna().all()
    assert summary.loc["median_survival_days", "note"] == "no deaths"
    assert summary.loc["sre_odds_ratio_per_30_days", "note"] != ""


def test_cox_and_logistic_recover_a_known_effect():
    # 600 episodes: hazard exp(0.2) per 30 days, odds of SRE exp(0.3) per 30 days
    rng = np.random.default_rng(5)
    n = 600
    interval = rng.integers(1, 360, n).astype(float)
    age = rng.integers(40, 90, n).astype(float)
    hazard = 0.002 * np.exp(0.2 * interval / 30)
    death = rng.exponential(1 / hazard)
    censor = rng.uniform(200, 1500, n)
    logit = -2 + 0.3 * interval / 30
    frame = pd.DataFrame({
        "diagnostic_interval_days": interval, "age_at_index": age,
        "days_diagnosis_to_death_or_censoring": np.minimum(death, censor).round(),
        "is_dead": death <= censor,
        "has_sre_at_presentation": rng.random(n) < 1 / (1 + np.exp(-logit)),
    })  # fmt: skip
    summary = prognosis.prognosis_summary(frame).set_index("measure")
    hr = summary.loc["hazard_ratio_per_30_days_age_adjusted"]
    assert hr["lower"] < np.exp(0.2) < hr["upper"] and hr["lower"] > 1
    odds = summary.loc["sre_odds_ratio_per_30_days"]
    assert odds["lower"] < np.exp(0.3) < odds["upper"]
    assert "not causal" in prognosis.CAUTION and "lead time" in prognosis.CAUTION


def test_clinical_tables_write_the_prognosis_tables():
    from pipelines import clinical
    from pipelines.settings import StudySettings

    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=CONDITIONS)
    written = clinical.run_clinical_tables(con, StudySettings(), "run-3")
    assert written["presentation_by_interval"] == 4 and written["prognosis_summary"] == 4
    assert written["survival_after_diagnosis"] >= 2
    sre = con.execute(
        "select n, n_sre from mart.presentation_by_interval where interval_third = 'all'"
    ).fetchone()
    assert sre == (2, 1)


def test_a_separated_sre_trend_is_not_estimable_rather_than_a_huge_number():
    # every SRE at the longest intervals: the slope is not identified (statsmodels warns)
    frame = tiny().assign(has_sre_at_presentation=[False] * 6 + [True] * 3)
    odds = prognosis.sre_odds_ratio(frame)
    assert np.isnan(odds["estimate"]) and "separation" in odds["note"]


def test_a_cox_model_that_cannot_converge_gives_a_note():
    # every death at the shortest intervals, everyone else censored later: the partial
    # likelihood has no maximum (monotone likelihood), lifelines raises ConvergenceError
    frame = tiny().assign(
        is_dead=[True] * 3 + [False] * 6,
        days_diagnosis_to_death_or_censoring=[10, 20, 30, 400, 410, 420, 430, 440, 450],
        age_at_index=[60] * 9,
    )
    hr = prognosis.cox_hazard_ratio(frame)
    assert np.isnan(hr["estimate"]) and "did not converge" in hr["note"], hr
