"""Table 1 (PROTOCOL 6.6): mart.baseline_characteristics on hand-written rows, and the SMDs
and summaries of pipelines.stats.baseline against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from model_spec import assert_rows, build_study

from pipelines import clinical
from pipelines.stats import baseline

PATIENTS = """
    patient_id | birth_date | sex | death_date
    p1         | 1960-05-01 | F   |
    p2         | 1990-01-01 | M   |
"""
ENCOUNTERS = """
    encounter_id | patient_id | start_at            | reason_code
    e0           | p1         | 2014-01-10 09:00:00 |
    a1           | p1         | 2015-04-01 09:00:00 |
    a2           | p1         | 2015-12-01 09:00:00 |
    e1           | p1         | 2016-03-01 09:00:00 |
    e9           | p1         | 2017-06-01 09:00:00 |
    f0           | p2         | 2014-01-10 09:00:00 |
    f1           | p2         | 2016-03-01 09:00:00 |
    f9           | p2         | 2017-06-01 09:00:00 |
"""
CONDITIONS = """
    patient_id | start_date | stop_date  | code_system            | code
    p1         | 2016-03-01 | 2016-03-10 | http://snomed.info/sct | 279039007
    p1         | 2012-01-01 |            | http://snomed.info/sct | 64859006
    p1         | 2013-01-01 |            | http://snomed.info/sct | 363406005
    p1         | 2013-02-01 |            | http://snomed.info/sct | 254837009
    p2         | 2016-03-01 | 2016-03-10 | http://snomed.info/sct | 279039007
    p2         | 2016-03-02 |            | ICD-10-CM              | S32.010A
    p2         | 2015-01-01 |            | ICD-10-CM              | C79.51
"""


def test_baseline_characteristics_are_taken_at_index():
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=CONDITIONS)
    # p1: two encounters in the year before index (2014 is outside it, the index visit is not
    # counted), osteoporosis and colon cancer before index; breast cancer is not "other".
    # p2: a vertebral fracture the day after index is not baseline; a bone metastasis before
    # index excludes the episode (prevalent outcome), so p2 is not in the cohort at all.
    assert_rows(
        con,
        "select patient_id, age_at_index, age_band, sex, n_encounters_lookback, "
        "has_prior_other_cancer, has_osteoporosis, has_prior_vertebral_fracture, "
        "flag_breast_cancer_history, is_diagnosed from mart.baseline_characteristics",
        """
        patient_id | age_at_index | age_band | sex | n_encounters_lookback | has_prior_other_cancer | has_osteoporosis | has_prior_vertebral_fracture | flag_breast_cancer_history | is_diagnosed
        p1         | 55           | 50-64    | F   | 2                     | true                   | true             | false                      | true                       | false
        """,
    )


def test_a_fracture_after_index_is_not_baseline_and_one_before_is():
    after = CONDITIONS.replace(
        "p2         | 2015-01-01 |            | ICD-10-CM              | C79.51\n", ""
    )
    before = after.replace(
        "2016-03-02 |            | ICD-10-CM              | S32.010A",
        "2015-03-02 |            | ICD-10-CM              | S32.010A",
    )
    for conditions, expected in ((after, "false"), (before, "true")):
        con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
        assert_rows(
            con,
            "select patient_id, age_band, has_prior_vertebral_fracture, has_prior_other_cancer "
            "from mart.baseline_characteristics where patient_id = 'p2'",
            f"""
            patient_id | age_band | has_prior_vertebral_fracture | has_prior_other_cancer
            p2         | 18-39    | {expected}                   | false
            """,
        )


def test_smds_equal_the_hand_computed_values():
    # continuous: a = 1, 2, 3 (mean 2, var 1); b = 2, 4, 6 (mean 4, var 4): (2-4)/sqrt(2.5)
    a, b = pd.Series([1.0, 2, 3]), pd.Series([2.0, 4, 6])
    assert baseline.smd_continuous(a, b) == pytest.approx(-2 / math.sqrt(2.5))
    # binary: p1 = 0.5, p2 = 0.25: 0.25 / sqrt((0.25 + 0.1875) / 2)
    x, y = pd.Series([True, False, True, False]), pd.Series([True, False, False, False])
    expected = 0.25 / math.sqrt((0.25 + 0.1875) / 2)
    assert baseline.smd_categorical(x, y, [True, False]) == pytest.approx(expected)
    # three levels: hand-computed Mahalanobis over levels 2..3
    u = pd.Series(list("aabc"))  # p = (.5, .25, .25)
    v = pd.Series(list("abbb"))  # p = (.25, .75, 0)
    d = np.array([0.25 - 0.75, 0.25 - 0.0])
    s1 = np.array([[0.25 * 0.75, -0.0625], [-0.0625, 0.25 * 0.75]])
    s2 = np.array([[0.75 * 0.25, 0.0], [0.0, 0.0]])
    by_hand = math.sqrt(d @ np.linalg.inv((s1 + s2) / 2) @ d)
    assert baseline.smd_categorical(u, v, ["a", "b", "c"]) == pytest.approx(by_hand)
    assert baseline.smd_categorical(u, u, ["a", "b", "c"]) == 0


def tiny_baseline() -> pd.DataFrame:
    frame = pd.DataFrame({
        "age_at_index": [40, 50, 60, 70, 80, 30],
        "age_band": ["40-49", "50-64", "50-64", "65-79", "80+", "18-39"],
        "sex": ["F", "F", "M", "F", "M", "M"],
        "n_encounters_lookback": [0, 2, 4, 1, 1, 1],
        "has_prior_other_cancer": [False, True, False, False, False, False],
        "has_osteoporosis": [True, True, False, False, False, False],
        "has_prior_vertebral_fracture": [False] * 6,
        "has_breast_cancer_history": [True, True, False, False, False, False],
        "is_in_landmark_population": [True, True, True, True, False, True],
        "reference_standard": pd.array([True, False, False, False, None, None], dtype="boolean"),
        "is_diagnosed": [True, False, False, False, True, False],
    })  # fmt: skip
    for flag in clinical.FLAGS:
        frame[f"flag_{flag}"] = pd.array([True, False, None, False, True, False], dtype="boolean")
    frame["flag_breast_cancer_history"] = frame["has_breast_cancer_history"]
    return frame


def test_table_one_counts_percents_medians_by_hand():
    t = clinical.table_one(tiny_baseline())
    row = lambda **k: t.query(" and ".join(f"{c} == {v!r}" for c, v in k.items()))  # noqa: E731
    age = row(population="cohort", comparison="overall", variable="age_at_index")
    assert age[["n_group", "median", "q1", "q3"]].iloc[0].tolist() == [6, 55, 42.5, 67.5]
    # reference standard in the cohort: diagnosed (ages 40, 80) vs not (50, 60, 70, 30)
    pos = row(population="cohort", comparison="reference_standard", group="positive",
              variable="age_at_index")  # fmt: skip
    assert pos["median"].iloc[0] == 60 and pos["n_group"].iloc[0] == 2
    smd = (60 - 52.5) / math.sqrt((800 + np.var([50, 60, 70, 30], ddof=1)) / 2)
    assert pos["smd"].iloc[0] == pytest.approx(smd)
    # a flag with a missing value: percent among the known, the missing counted
    flag = row(population="cohort", comparison="overall", variable="flag_night_pain", level="True")
    assert flag[["count", "n_missing"]].iloc[0].tolist() == [2, 1]
    assert flag["percent"].iloc[0] == pytest.approx(40.0)
    # landmark population: in it and with a known reference standard (4 episodes, 3 women)
    lm = row(population="landmark", comparison="overall", variable="sex", level="F")
    assert lm[["n_group", "count"]].iloc[0].tolist() == [4, 3]
    history = row(population="landmark", comparison="breast_cancer_history", variable="has_osteoporosis",
                  level="True")  # fmt: skip
    assert history.set_index("group")["count"].to_dict() == {"yes": 2, "no": 0}
    assert math.isinf(history["smd"].iloc[0])  # all vs none: no pooled spread


def test_run_statistics_writes_table_one_next_to_the_other_tables():
    from pipelines import analysis
    from pipelines.settings import StudySettings

    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=CONDITIONS)
    written = analysis.run_statistics(con, StudySettings(), "run-7")
    assert written["table_one"] > 0 and "time_to_diagnosis" in written
    rows = con.execute(
        "select count(*), min(run_id) from mart.table_one where population = 'cohort' "
        "and comparison = 'overall' and variable = 'has_osteoporosis' and level = 'True'"
    ).fetchone()
    assert rows == (1, "run-7")
