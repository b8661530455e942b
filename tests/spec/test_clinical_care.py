"""Care after diagnosis (PROTOCOL 6.7): mart.care_after_diagnosis on hand-written rows, the
summary against hand-computed values, and the value sets on the real Synthea breast-cancer
export (they must find the treatments Synthea records there)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from model_spec import assert_rows, build_study

from pipelines.stats import care

PATIENTS = """
    patient_id | birth_date | sex | death_date
    p1         | 1960-05-01 | F   |
"""
ENCOUNTERS = """
    encounter_id | patient_id | start_at            | reason_code
    e0           | p1         | 2014-01-10 09:00:00 |
    e1           | p1         | 2016-03-01 09:00:00 |
    e9           | p1         | 2017-06-01 09:00:00 |
"""
CONDITIONS = """
    patient_id | start_date | stop_date  | code_system            | code
    p1         | 2016-03-01 | 2016-03-10 | http://snomed.info/sct | 279039007
    p1         | 2016-05-01 |            | http://snomed.info/sct | 94222008
"""
MEDICATIONS = """
    patient_id | start_at            | code
    p1         | 2016-04-20 10:00:00 | 1049625
    p1         | 2016-05-01 10:00:00 | 198240
    p1         | 2016-05-20 10:00:00 | 198240
    p1         | 2016-07-30 10:00:00 | 1114085
    p1         | 2016-07-31 10:00:00 | 310431
"""
PROCEDURES = """
    patient_id | start_at            | code
    p1         | 2016-05-11 10:00:00 | 33195004
    p1         | 2016-04-25 10:00:00 | 41747008
    p1         | 2016-05-04 10:00:00 | 394451000119106
"""


def test_care_is_counted_from_the_diagnosis_day_to_the_end_of_the_window():
    con = build_study(
        patients=PATIENTS, encounters=ENCOUNTERS, conditions=CONDITIONS,
        medications=MEDICATIONS, procedures=PROCEDURES,
    )  # fmt: skip
    # diagnosis 2016-05-01: the opioid 11 days before is not care after it; tamoxifen on the
    # day itself is (first of two); zoledronic acid on day 90 is in, gabapentin on day 91 out;
    # the bone scan before diagnosis is not imaging after it, the MRI on day 3 is
    assert_rows(
        con,
        "select care_category, has_care, days_diagnosis_to_first_care "
        "from mart.care_after_diagnosis",
        """
        care_category        | has_care | days_diagnosis_to_first_care
        non_opioid_analgesic | false    |
        opioid               | false    |
        neuropathic_agent    | false    |
        corticosteroid       | false    |
        radiotherapy         | true     | 10
        bone_targeted_agent  | true     | 90
        chemotherapy         | false    |
        endocrine_therapy    | true     | 0
        targeted_therapy     | false    |
        spine_imaging_xray   | false    |
        spine_imaging_ct     | false    |
        spine_imaging_mri    | true     | 3
        spine_imaging_bone_scan | false |
        bone_biopsy          | false    |
        surgical_stabilisation | false  |
        """,
    )


def test_care_summary_by_hand():
    frame = pd.DataFrame({
        "care_category": ["opioid"] * 4 + ["radiotherapy"] * 4,
        "has_care": [True, True, False, False, True, False, False, False],
        "days_diagnosis_to_first_care": [2, 10, None, None, 5, None, None, None],
    })  # fmt: skip
    out = care.care_summary(frame).set_index("care_category")
    assert out.loc[
        "opioid", ["n_diagnosed", "n_received", "proportion", "median_days"]
    ].tolist() == [4, 2, 0.5, 6]
    assert out.loc["radiotherapy", "proportion"] == 0.25
    assert out.loc["radiotherapy", "lower"] < 0.25 < out.loc["radiotherapy", "upper"]


BREAST_CANCER_EXPORT = Path(__file__).resolve().parents[3] / "shared" / "synthea-breast-cancer"


@pytest.mark.skipif(not BREAST_CANCER_EXPORT.exists(), reason="../shared not present")
def test_the_value_sets_find_the_treatments_of_the_real_breast_cancer_export():
    from pipelines.valuesets import read_value_sets

    codes = {}
    for r in read_value_sets():
        codes.setdefault(r.concept, set()).add(r.code)
    found = {}
    for table in ("medications", "procedures"):
        records = pd.read_csv(BREAST_CANCER_EXPORT / f"{table}.csv", usecols=["CODE"], dtype=str)
        for concept in ("chemotherapy", "endocrine_therapy", "targeted_therapy", "radiotherapy",
                        "bone_targeted_agent", "opioid", "non_opioid_analgesic"):  # fmt: skip
            found[concept] = found.get(concept, 0) + int(records["CODE"].isin(codes[concept]).sum())
    # docs/value-sets.md lists these counts
    assert found == {"chemotherapy": 232, "endocrine_therapy": 17, "targeted_therapy": 18,
                     "radiotherapy": 492, "bone_targeted_agent": 7, "opioid": 92,
                     "non_opioid_analgesic": 105}  # fmt: skip


def test_bone_biopsy_and_surgical_stabilisation_are_care_categories():
    """PROTOCOL 6.7: bone biopsy and surgical stabilisation (care_procedures.csv), by their
    SNOMED procedure codes, from the diagnosis day on."""
    procedures = """
    patient_id | start_at            | code
    p1         | 2016-05-03 10:00:00 | 13861005
    p1         | 2016-05-06 10:00:00 | 429616001
    p1         | 2016-05-20 10:00:00 | 55705006
    """
    con = build_study(
        patients=PATIENTS, encounters=ENCOUNTERS, conditions=CONDITIONS,
        medications=MEDICATIONS, procedures=procedures,
    )  # fmt: skip
    assert_rows(
        con,
        "select care_category, has_care, days_diagnosis_to_first_care "
        "from mart.care_after_diagnosis"
        " where care_category in ('bone_biopsy', 'surgical_stabilisation')",
        """
        care_category          | has_care | days_diagnosis_to_first_care
        bone_biopsy            | true     | 2
        surgical_stabilisation | true     | 5
        """,
    )
