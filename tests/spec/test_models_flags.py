"""Spec tests: red flags, their evidence, leakage and ascertainability (PROTOCOL 5), and the pathway (6.2).

The standard patient p1 (female, born 1960-05-01) has a low-back-pain index on
2016-03-01: the assessment window runs from 2015-03-02 (index - 365) to 2016-04-12
(index + 42). Her last encounter is on 2017-06-01.
"""

from __future__ import annotations

import datetime as dt
import random

from model_spec import assert_rows, build_study, query_text

from pipelines.settings import StudySettings

PATIENTS = """
    patient_id | birth_date | sex
    p1         | 1960-05-01 | F
"""
ENCOUNTERS = """
    encounter_id | patient_id | start_at            | reason_code
    e0           | p1         | 2014-01-10 09:00:00 |
    e1           | p1         | 2016-03-01 09:00:00 |
    e9           | p1         | 2017-06-01 09:00:00 |
"""
BACK_PAIN = """
    patient_id | start_date | stop_date  | code_system | code
    p1         | 2016-03-01 | 2016-03-10 | SNOMED-CT   | 279039007
"""
FLAG_COLUMNS = (
    "flag_persistent_pain, flag_night_pain, flag_weight_loss, flag_neuro_symptoms, flag_spinal_tenderness, "
    "flag_breast_cancer_history, flag_age_50_plus, flag_failed_conservative_therapy, flag_elevated_alp"
)


def flag(con, name: str) -> str:
    ((value,),) = query_text(con, f"select flag_{name} from mart.red_flags")
    return value


def study(
    conditions: str = "", encounters: str = "", settings: StudySettings | None = None, **tables: str
):
    return build_study(
        settings,
        patients=PATIENTS,
        encounters=ENCOUNTERS + "\n" + encounters,
        conditions=BACK_PAIN + "\n" + conditions,
        **tables,
    )


# ---------------------------------------------------------------- persistent pain


def test_repeat_visits_in_the_first_four_weeks_do_not_make_pain_persistent():
    con = study(
        encounters="""
        e2 | p1 | 2016-03-08 09:00:00 | 279039007
        e3 | p1 | 2016-03-28 09:00:00 | 279039007
    """
    )
    assert flag(con, "persistent_pain") == "false"


def test_a_repeat_record_from_day_28_makes_pain_persistent():
    con = study(encounters="e2 | p1 | 2016-03-29 09:00:00 | 279039007")
    assert flag(con, "persistent_pain") == "true"
    assert_rows(
        con,
        "select flag, source_table, record_date, code from mart.red_flag_evidence where flag = 'persistent_pain'",
        """
        flag            | source_table | record_date | code
        persistent_pain | encounters   | 2016-03-29  | 279039007
        """,
    )


def test_a_repeat_record_after_the_window_does_not_count():
    con = study(conditions="p1 | 2016-04-13 | 2016-04-14 | SNOMED-CT | 161891005")
    assert flag(con, "persistent_pain") == "false"


def test_an_index_condition_with_an_empty_stop_or_a_stop_from_day_42_makes_pain_persistent():
    for stop, expected in (("", "true"), ("2016-04-12", "true"), ("2016-04-11", "false")):
        conditions = f"""
            patient_id | start_date | stop_date | code
            p1         | 2016-03-01 | {stop}    | 278860009
        """
        con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
        assert flag(con, "persistent_pain") == expected, stop


def test_a_condition_begun_in_the_first_four_weeks_counts_only_as_an_early_repeat():
    con = study(conditions="p1 | 2016-03-15 | | SNOMED-CT | 278860009")
    assert flag(con, "persistent_pain") == "false"


def test_persistence_is_not_ascertainable_at_landmark_0():
    con = study(
        conditions="p1 | 2016-03-01 | | SNOMED-CT | 278860009",
        settings=StudySettings(landmark_days=0),
    )
    assert query_text(
        con, "select flag_persistent_pain, not_ascertainable_flags from mart.red_flags"
    ) == [["", "persistent_pain"]]


def test_a_persistence_of_28_days_accepts_a_stop_on_day_28():
    conditions = """
        patient_id | start_date | stop_date  | code
        p1         | 2016-03-01 | 2016-03-29 | 278860009
    """
    con = build_study(
        StudySettings(persistence_days=28),
        patients=PATIENTS,
        encounters=ENCOUNTERS,
        conditions=conditions,
    )
    assert flag(con, "persistent_pain") == "true"


# ---------------------------------------------------------------- weight loss


def weights(baseline: str, latest: str) -> str:
    return f"""
        patient_id | observed_at         | code    | value      | units
        p1         | 2015-09-01 10:00:00 | 29463-7 | 78         | kg
        p1         | 2015-12-01 10:00:00 | 29463-7 | {baseline} | kg
        p1         | 2016-03-20 10:00:00 | 29463-7 | {latest}   | kg
        p1         | 2016-05-01 10:00:00 | 29463-7 | 60         | kg
    """


def test_measured_weight_loss_of_exactly_5_percent_sets_the_flag_and_just_under_does_not():
    assert flag(study(observations=weights("80", "76")), "weight_loss") == "true"
    assert flag(study(observations=weights("80", "76.1")), "weight_loss") == "false"
    assert flag(study(observations=weights("70", "66.5")), "weight_loss") == "true"


def test_weight_loss_is_measured_from_the_highest_value_in_the_year_before_index():
    # baseline 80 is more than 365 days before index: the highest in the year is 78, and 76 is < 5% below it
    observations = """
        patient_id | observed_at         | code    | value
        p1         | 2015-02-28 10:00:00 | 29463-7 | 80
        p1         | 2015-09-01 10:00:00 | 29463-7 | 78
        p1         | 2016-03-20 10:00:00 | 29463-7 | 76
    """
    assert flag(study(observations=observations), "weight_loss") == "false"


def test_a_coded_unintentional_weight_loss_sets_the_flag():
    assert flag(study(conditions="p1 | 2016-02-01 | | ICD-10-CM | R63.4"), "weight_loss") == "true"


# ---------------------------------------------------------------- other flags


def test_family_history_429740004_does_not_set_breast_cancer_history_but_a_personal_history_does():
    assert (
        flag(study(conditions="p1 | 2010-01-01 | | SNOMED-CT | 429740004"), "breast_cancer_history")
        == "false"
    )
    assert (
        flag(study(conditions="p1 | 2010-01-01 | | ICD-10-CM | Z80.3"), "breast_cancer_history")
        == "false"
    )
    for code in ("254837009", "Z85.3", "C50.919"):
        system = "SNOMED-CT" if code.isdigit() else "http://hl7.org/fhir/sid/icd-10-cm"
        con = study(conditions=f"p1 | 2005-01-01 | | {system} | {code}")
        assert flag(con, "breast_cancer_history") == "true", code
        assert query_text(con, "select has_breast_cancer_history from mart.cohort") == [["true"]]


def test_breast_cancer_first_recorded_on_the_index_date_is_not_a_history():
    assert (
        flag(study(conditions="p1 | 2016-03-01 | | SNOMED-CT | 254837009"), "breast_cancer_history")
        == "false"
    )


def test_coded_findings_count_from_window_start_to_index_plus_landmark_and_not_beyond():
    cases = {
        "2015-03-01": "false",  # index - 366
        "2015-03-02": "true",  # index - 365
        "2016-04-12": "true",  # index + 42
        "2016-04-13": "false",  # index + 43
    }
    for day, expected in cases.items():
        con = study(conditions=f"p1 | {day} | | SNOMED-CT | 36163009")
        assert flag(con, "night_pain") == expected, day


def test_neuro_symptoms_and_spinal_tenderness_are_set_by_their_codes():
    con = study(
        conditions="""
        p1 | 2016-03-05 | | SNOMED-CT | 91019004
        p1 | 2016-03-05 | | SNOMED-CT | 298695003
    """
    )
    assert query_text(
        con,
        "select flag_neuro_symptoms, flag_spinal_tenderness, red_flag_count from mart.red_flags",
    ) == [["true", "true", "2"]]


def test_age_50_plus_uses_completed_years_at_index():
    con = study()
    assert flag(con, "age_50_plus") == "true"
    assert query_text(
        con,
        "select source_table, record_date from mart.red_flag_evidence where flag = 'age_50_plus'",
    ) == [["patients", "1960-05-01"]]
    patients = PATIENTS.replace("1960-05-01", "1966-03-02")  # 49 on 2016-03-01, 50 the next day
    con = build_study(patients=patients, encounters=ENCOUNTERS, conditions=BACK_PAIN)
    assert flag(con, "age_50_plus") == "false"


def medications(*rows: tuple[str, str]) -> str:
    return "patient_id | start_at | code\n" + "\n".join(
        f"p1 | {day} 10:00:00 | {code}" for day, code in rows
    )


def test_failed_conservative_therapy_is_a_non_opioid_from_index_then_an_opioid_on_a_later_date():
    acetaminophen, ibuprofen, percocet = "313782", "206905", "1049625"
    cases = [
        ([("2016-03-01", acetaminophen), ("2016-03-11", percocet)], "true"),
        ([("2016-03-05", ibuprofen), ("2016-03-05", percocet)], "false"),  # same day
        ([("2016-03-11", percocet), ("2016-03-20", ibuprofen)], "false"),  # opioid first
        ([("2016-02-20", ibuprofen), ("2016-03-11", percocet)], "false"),  # non-opioid before index
        ([("2016-03-05", ibuprofen), ("2016-04-13", percocet)], "false"),  # opioid after the window
    ]
    for rows, expected in cases:
        assert (
            flag(study(medications=medications(*rows)), "failed_conservative_therapy") == expected
        ), rows


def test_elevated_alp_is_a_value_above_the_upper_limit_in_the_window():
    def alp(value: str, day: str = "2016-03-10") -> str:
        return f"patient_id | observed_at | code | value\n p1 | {day} 08:00:00 | 6768-6 | {value}"

    assert flag(study(observations=alp("150")), "elevated_alp") == "true"
    assert flag(study(observations=alp("147")), "elevated_alp") == "false"
    assert flag(study(observations=alp("150", "2016-04-13")), "elevated_alp") == "false"


def test_two_spellings_of_each_code_system_and_a_missing_system_all_match():
    con = study(
        conditions="""
            p1 | 2016-03-02 |  | http://snomed.info/sct            | 36163009
            p1 | 2016-03-03 |  | ICD-10-CM                         | R20.2
            p1 | 2016-03-04 |  | http://hl7.org/fhir/sid/icd-10-cm | R202
            p1 | 2016-03-05 |  |                                   | 298695003
        """,
        medications="""
            patient_id | start_at            | code_system                                 | code
            p1         | 2016-03-02 10:00:00 | RxNorm                                      | 313782
            p1         | 2016-03-09 10:00:00 | http://www.nlm.nih.gov/research/umls/rxnorm | 856987
        """,
    )
    assert_rows(
        con,
        "select flag, record_date, code from mart.red_flag_evidence where flag <> 'age_50_plus'",
        """
        flag                        | record_date | code
        night_pain                  | 2016-03-02  | 36163009
        neuro_symptoms              | 2016-03-03  | R202
        neuro_symptoms              | 2016-03-04  | R202
        spinal_tenderness           | 2016-03-05  | 298695003
        failed_conservative_therapy | 2016-03-02  | 313782
        failed_conservative_therapy | 2016-03-09  | 856987
        """,
    )


def test_an_unknown_code_system_does_not_match_even_with_a_value_set_code():
    con = study(conditions="p1 | 2016-03-02 | | http://example.org/local | 36163009")
    assert flag(con, "night_pain") == "false"


# ---------------------------------------------------------------- leakage


def test_a_flag_recorded_on_or_after_the_diagnosis_date_never_fires():
    diagnosis = "p1 | 2016-03-20 | | SNOMED-CT | 94222008"  # day 19, inside the window
    on_diagnosis_day = study(
        conditions=diagnosis
        + """
            p1 | 2016-03-20 | | SNOMED-CT | 36163009
            p1 | 2016-03-25 | | SNOMED-CT | 44077006
            p1 | 2016-03-20 | | SNOMED-CT | 448765001
        """,
        encounters="e2 | p1 | 2016-03-30 09:00:00 | 279039007",
        observations="""
            patient_id | observed_at         | code    | value
            p1         | 2015-12-01 10:00:00 | 29463-7 | 80
            p1         | 2016-03-20 10:00:00 | 29463-7 | 70
            p1         | 2016-03-20 10:00:00 | 6768-6  | 400
        """,
        medications=medications(("2016-03-02", "313782"), ("2016-03-20", "1049625")),
    )
    assert query_text(
        on_diagnosis_day, f"select {FLAG_COLUMNS}, red_flag_count from mart.red_flags"
    ) == [["false", "false", "false", "false", "false", "false", "true", "false", "false", "0"]]
    day_before = study(conditions=diagnosis + "\np1 | 2016-03-19 | | SNOMED-CT | 36163009")
    assert flag(day_before, "night_pain") == "true"


def test_an_index_condition_still_open_on_day_42_does_not_count_when_diagnosis_came_first():
    con = study(
        conditions="""
        p1 | 2016-03-01 |  | SNOMED-CT | 278860009
        p1 | 2016-04-01 |  | SNOMED-CT | 94222008
    """
    )
    assert flag(con, "persistent_pain") == "false"


def test_no_evidence_is_ever_dated_on_or_after_a_bone_metastasis_record(tmp_path):
    """Property: random records around random diagnoses never leak into the flags."""
    rng = random.Random(20261123)
    patients, encounters, conditions, observations, meds = [], [], [], [], []
    index = dt.date(2016, 3, 1)
    codes = ["36163009", "44077006", "298695003", "448765001", "279039007", "254837009"]
    for i in range(60):
        pid = f"q{i}"
        patients.append(f"{pid} | 1955-01-01 | F")
        encounters += [
            f"{pid}a | {pid} | 2014-01-01 09:00:00",
            f"{pid}b | {pid} | 2017-06-01 09:00:00",
        ]
        conditions.append(
            f"{pid} | {index} | {index + dt.timedelta(days=rng.choice([5, 60]))} | 279039007"
        )
        diagnosis = index + dt.timedelta(days=rng.randint(1, 60))
        conditions.append(f"{pid} | {diagnosis} | | 94222008")
        for _ in range(8):
            day = index + dt.timedelta(days=rng.randint(-30, 60))
            conditions.append(f"{pid} | {day} | | {rng.choice(codes)}")
            observations.append(
                f"{pid} | {day} 10:00:00 | {rng.choice(['29463-7', '6768-6'])} | {rng.randint(50, 300)}"
            )
            meds.append(f"{pid} | {day} 10:00:00 | {rng.choice(['313782', '1049625'])}")
    con = build_study(
        patients="patient_id | birth_date | sex\n" + "\n".join(patients),
        encounters="encounter_id | patient_id | start_at\n" + "\n".join(encounters),
        conditions="patient_id | start_date | stop_date | code\n" + "\n".join(conditions),
        observations="patient_id | observed_at | code | value\n" + "\n".join(observations),
        medications="patient_id | start_at | code\n" + "\n".join(meds),
    )
    leaks = con.execute("""
        select count(*) from mart.red_flag_evidence as e
        join intermediate.int_concept_records as m
            on m.patient_id = e.patient_id and m.concept = 'bone_metastasis' and m.record_date > e.index_date
        where e.record_date >= m.record_date
    """).fetchone()[0]
    fired = con.execute(
        "select count(*) from mart.red_flag_evidence where flag <> 'age_50_plus'"
    ).fetchone()[0]
    assert fired > 50 and leaks == 0


# ---------------------------------------------------------------- ascertainability


def test_a_missing_optional_table_nulls_and_lists_only_the_flags_that_need_it():
    rows = dict(
        conditions="p1 | 2016-03-05 | | SNOMED-CT | 36163009\np1 | 2016-02-01 | | SNOMED-CT | 448765001",
        encounters="e2 | p1 | 2016-03-29 09:00:00 | 279039007",
    )
    observations = (
        "patient_id | observed_at | code | value\n p1 | 2016-03-10 08:00:00 | 6768-6 | 200"
    )
    meds = medications(("2016-03-02", "313782"), ("2016-03-09", "856987"))
    full = study(**rows, observations=observations, medications=meds)
    no_observations = study(**rows, medications=meds, absent=["observations"])
    no_medications = study(**rows, observations=observations, absent=["medications"])
    query = f"select {FLAG_COLUMNS}, red_flag_count, not_ascertainable_flags from mart.red_flags"
    assert query_text(full, query) == [
        ["true", "true", "true", "false", "false", "false", "true", "true", "true", "3", ""]
    ]
    assert query_text(no_observations, query) == [
        [
            "true",
            "true",
            "",
            "false",
            "false",
            "false",
            "true",
            "true",
            "",
            "2",
            "weight_loss,elevated_alp",
        ]
    ]
    assert query_text(no_medications, query) == [
        [
            "true",
            "true",
            "true",
            "false",
            "false",
            "false",
            "true",
            "",
            "true",
            "3",
            "failed_conservative_therapy",
        ]
    ]
    everything_else = "select * from mart.cohort"
    assert query_text(full, everything_else) == query_text(no_observations, everything_else)
    assert query_text(full, everything_else) == query_text(no_medications, everything_else)
    assert query_text(
        no_observations, "select distinct flag from mart.red_flag_evidence order by 1"
    ) == [["age_50_plus"], ["failed_conservative_therapy"], ["night_pain"], ["persistent_pain"]]


# ---------------------------------------------------------------- diagnostic pathway


def test_the_first_spine_imaging_after_index_and_its_modality_make_the_pathway():
    con = study(
        procedures="""
            patient_id | start_at            | code
            p1         | 2016-02-01 10:00:00 | 394451000119106
            p1         | 2016-04-20 10:00:00 | 394451000119106
        """,
        imaging_studies="""
            patient_id | studied_at          | body_site_code | modality_code | procedure_code
            p1         | 2016-03-05 10:00:00 | 51185008       | DX            | 399208008
            p1         | 2016-04-02 10:00:00 | 122496007      | DX            | 840361000
        """,
    )
    assert_rows(
        con,
        "select first_spine_imaging_date, first_spine_imaging_modality, is_imaging_ascertainable from mart.episode_pathway",
        """
        first_spine_imaging_date | first_spine_imaging_modality | is_imaging_ascertainable
        2016-04-02               | xray                         | true
        """,
    )


def test_imaging_is_not_ascertainable_without_procedures_and_imaging_studies():
    con = study(absent=["procedures", "imaging_studies"])
    assert query_text(
        con, "select first_spine_imaging_date, is_imaging_ascertainable from mart.episode_pathway"
    ) == [["", "false"]]
