"""Spec tests: index event, eligibility, follow-up, outcome and attrition (PROTOCOL 3-4, 6.3).

Each test builds the whole study on a few hand-written raw rows. The standard patient
p1 (female, born 1960-05-01) has an encounter in 2014 (look-back), a low-back-pain
condition on 2016-03-01 and a last encounter on 2017-06-01, after the 365-day horizon.
"""

from __future__ import annotations

import datetime as dt

from model_spec import assert_rows, build_study, query_text

from pipelines.settings import StudySettings

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
BACK_PAIN = """
    patient_id | start_date | stop_date  | code_system            | code
    p1         | 2016-03-01 | 2016-03-10 | http://snomed.info/sct | 279039007
"""


def cohort(con, columns: str = "patient_id, index_date") -> list[list[str]]:
    return query_text(con, f"select {columns} from mart.cohort order by patient_id, index_date")


def test_the_first_back_pain_record_on_or_after_study_start_is_the_index_date():
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=BACK_PAIN)
    assert_rows(
        con,
        "select patient_id, index_date, age_at_index, sex, end_reason, follow_up_end_date, "
        "days_to_follow_up_end, is_in_landmark_population, reference_standard from mart.cohort",
        """
        patient_id | index_date | age_at_index | sex | end_reason | follow_up_end_date | days_to_follow_up_end | is_in_landmark_population | reference_standard
        p1         | 2016-03-01 | 55           | F   | horizon    | 2017-03-01         | 365                   | true                      | false
        """,
    )


def test_an_encounter_reason_in_the_value_set_is_an_index_event():
    encounters = ENCOUNTERS + "e2 | p1 | 2016-02-10 08:00:00 | 161891005"
    con = build_study(patients=PATIENTS, encounters=encounters, conditions=BACK_PAIN)
    assert cohort(con) == [["p1", "2016-02-10"]]


def test_a_back_pain_record_in_the_washout_makes_a_date_non_incident_and_the_index_moves_to_the_next_incident_record():
    conditions = (
        BACK_PAIN
        + """
        p1 | 2015-06-01 | 2015-06-05 | SNOMED-CT | 279039007
        p1 | 2017-05-01 |            | SNOMED-CT | 279039007
    """
    )
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    # 2015-06-01 is the first record from study start and incident; 2016-03-01 lies in its washout
    assert cohort(con) == [["p1", "2015-06-01"]]
    conditions = (
        BACK_PAIN
        + """
        p1 | 2014-12-01 | 2014-12-05 | SNOMED-CT | 279039007
        p1 | 2015-06-01 | 2015-06-05 | SNOMED-CT | 279039007
    """
    )
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    # 2015-06-01 follows a pre-study record within 365 days: not incident; 2016-03-01 is 274 days
    # after 2015-06-01: not incident either; no incident episode remains
    assert cohort(con) == []
    assert_rows(
        con,
        "select step, n_remaining from mart.attrition where step_order in (2, 3)",
        """
        step                              | n_remaining
        back_pain_record_from_study_start | 1
        incident_episode_after_washout    | 0
        """,
    )


def test_a_record_exactly_washout_days_before_is_in_the_washout_and_one_day_earlier_is_not():
    in_washout = (
        BACK_PAIN + "p1 | 2015-03-02 | 2015-03-03 | SNOMED-CT | 161891005"
    )  # 365 days before
    outside = BACK_PAIN + "p1 | 2015-03-01 | 2015-03-03 | SNOMED-CT | 161891005"  # 366 days before
    settings = StudySettings(study_start_date=dt.date(2016, 1, 1))
    assert (
        cohort(
            build_study(settings, patients=PATIENTS, encounters=ENCOUNTERS, conditions=in_washout)
        )
        == []
    )
    assert cohort(
        build_study(settings, patients=PATIENTS, encounters=ENCOUNTERS, conditions=outside)
    ) == [["p1", "2016-03-01"]]


def test_a_condition_and_an_encounter_reason_on_the_same_day_are_one_incident_record():
    encounters = ENCOUNTERS.replace(
        "e1           | p1         | 2016-03-01 09:00:00 |",
        "e1 | p1 | 2016-03-01 09:00:00 | 279039007",
    )
    con = build_study(patients=PATIENTS, encounters=encounters, conditions=BACK_PAIN)
    records = "select source_table, record_date from intermediate.int_back_pain_records"
    assert sorted(query_text(con, records)) == [
        ["conditions", "2016-03-01"],
        ["encounters", "2016-03-01"],
    ]
    assert cohort(con) == [["p1", "2016-03-01"]]


def test_an_open_condition_begun_before_the_washout_does_not_block_a_later_record():
    # the washout looks at record dates (condition START), not at how long a condition stays open
    conditions = BACK_PAIN.replace("2016-03-01 | 2016-03-10", "2013-01-01 |           ")
    encounters = ENCOUNTERS + "e2 | p1 | 2016-03-01 10:00:00 | 279039007"
    con = build_study(patients=PATIENTS, encounters=encounters, conditions=conditions)
    records = "select source_table, record_date, stop_date from intermediate.int_back_pain_records"
    assert sorted(query_text(con, records)) == [
        ["conditions", "2013-01-01", ""],
        ["encounters", "2016-03-01", ""],
    ]
    assert cohort(con) == [["p1", "2016-03-01"]]


def test_a_shorter_washout_makes_the_later_record_incident():
    conditions = BACK_PAIN + "p1 | 2015-06-01 | 2015-06-05 | SNOMED-CT | 279039007"
    settings = StudySettings(study_start_date=dt.date(2016, 1, 1), washout_days=180)
    con = build_study(settings, patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    assert cohort(con) == [["p1", "2016-03-01"]]


def test_records_before_study_start_only_give_no_episode():
    conditions = "patient_id | start_date | code\n p1 | 2014-06-01 | 279039007"
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    assert cohort(con) == []


def test_minors_are_excluded_and_a_patient_turning_18_on_the_index_date_is_included():
    patients = """
        patient_id | birth_date | sex
        minor      | 1998-03-02 | F
        turns18    | 1998-03-01 | F
    """
    encounters = """
        encounter_id | patient_id | start_at
        a0 | minor   | 2014-01-10 09:00:00
        a1 | minor   | 2017-06-01 09:00:00
        b0 | turns18 | 2014-01-10 09:00:00
        b1 | turns18 | 2017-06-01 09:00:00
    """
    conditions = """
        patient_id | start_date | code
        minor      | 2016-03-01 | 279039007
        turns18    | 2016-03-01 | 279039007
    """
    con = build_study(patients=patients, encounters=encounters, conditions=conditions)
    assert cohort(con, "patient_id, age_at_index") == [["turns18", "18"]]


def test_a_short_lookback_is_excluded_and_a_lookback_of_exactly_365_days_is_included():
    patients = """
        patient_id | birth_date | sex
        short      | 1960-01-01 | M
        exact      | 1960-01-01 | M
    """
    encounters = """
        encounter_id | patient_id | start_at
        a0 | short | 2015-03-03 09:00:00
        a1 | short | 2017-06-01 09:00:00
        b0 | exact | 2015-03-02 09:00:00
        b1 | exact | 2017-06-01 09:00:00
    """
    conditions = """
        patient_id | start_date | code
        short      | 2016-03-01 | 279039007
        exact      | 2016-03-01 | 279039007
    """
    con = build_study(patients=patients, encounters=encounters, conditions=conditions)
    assert cohort(con, "patient_id") == [["exact"]]


def test_only_the_configured_sexes_are_included_and_sex_must_be_reported():
    patients = """
        patient_id | birth_date | sex
        woman      | 1960-01-01 | F
        man        | 1960-01-01 | M
        unknown    | 1960-01-01 |
    """
    encounters = "\n".join(
        ["encounter_id | patient_id | start_at"]
        + [
            f"{p}{i} | {p} | {d} 09:00:00"
            for p in ("woman", "man", "unknown")
            for i, d in enumerate(("2014-01-10", "2017-06-01"))
        ]
    )
    conditions = "patient_id | start_date | code\n" + "\n".join(
        f"{p} | 2016-03-01 | 279039007" for p in ("woman", "man", "unknown")
    )
    con = build_study(patients=patients, encounters=encounters, conditions=conditions)
    assert cohort(con, "patient_id") == [["man"], ["woman"]]
    con = build_study(
        StudySettings(sexes=("F",)), patients=patients, encounters=encounters, conditions=conditions
    )
    assert cohort(con, "patient_id") == [["woman"]]


def test_a_bone_metastasis_on_or_before_the_index_date_excludes_the_episode():
    for day in ("2015-01-01", "2016-03-01"):
        conditions = BACK_PAIN + f"p1 | {day} | | SNOMED-CT | 94222008"
        con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
        assert cohort(con) == []
        assert query_text(
            con, "select n_excluded from mart.attrition where step = 'no_prevalent_bone_metastasis'"
        ) == [["1"]]


def test_the_outcome_is_the_first_bone_metastasis_record_after_index_within_follow_up():
    conditions = (
        BACK_PAIN
        + """
        p1 | 2016-06-09 | | http://hl7.org/fhir/sid/icd-10-cm | C79.51
        p1 | 2016-07-01 | | SNOMED-CT                         | 94602001
    """
    )
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    assert_rows(
        con,
        "select outcome_date, days_to_outcome, end_reason, follow_up_end_date, reference_standard from mart.cohort",
        """
        outcome_date | days_to_outcome | end_reason      | follow_up_end_date | reference_standard
        2016-06-09   | 100             | bone_metastasis | 2016-06-09         | true
        """,
    )


def test_a_bone_metastasis_after_the_horizon_is_not_an_outcome():
    conditions = BACK_PAIN + "p1 | 2017-03-02 | | SNOMED-CT | 94222008"
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    assert cohort(con, "outcome_date, end_reason, reference_standard") == [["", "horizon", "false"]]
    on_horizon = BACK_PAIN + "p1 | 2017-03-01 | | SNOMED-CT | 94222008"
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=on_horizon)
    assert cohort(con, "outcome_date, end_reason, reference_standard") == [
        ["2017-03-01", "bone_metastasis", "true"]
    ]


def test_death_ends_observation_and_death_before_the_horizon_is_outcome_negative():
    patients = PATIENTS.replace("| F   |", "| F   | 2016-08-01")
    encounters = ENCOUNTERS.replace(
        "e9           | p1         | 2017-06-01", "e9 | p1 | 2016-07-01"
    )
    conditions = (
        BACK_PAIN + "p1 | 2016-09-01 | | SNOMED-CT | 94222008"
    )  # after death: data error, not an outcome
    con = build_study(patients=patients, encounters=encounters, conditions=conditions)
    assert_rows(
        con,
        "select death_date, observation_end_date, follow_up_end_date, end_reason, outcome_date, "
        "days_to_follow_up_end, reference_standard from mart.cohort",
        """
        death_date | observation_end_date | follow_up_end_date | end_reason | outcome_date | days_to_follow_up_end | reference_standard
        2016-08-01 | 2016-08-01           | 2016-08-01         | death      |              | 153                   | false
        """,
    )


def test_an_outcome_on_the_day_of_death_counts_as_the_outcome():
    patients = PATIENTS.replace("| F   |", "| F   | 2016-08-01")
    conditions = BACK_PAIN + "p1 | 2016-08-01 | | SNOMED-CT | 94222008"
    con = build_study(patients=patients, encounters=ENCOUNTERS, conditions=conditions)
    assert cohort(con, "end_reason, outcome_date, death_date") == [
        ["bone_metastasis", "2016-08-01", "2016-08-01"]
    ]


def test_observation_ending_before_the_horizon_without_outcome_or_death_leaves_the_reference_standard_unknown():
    encounters = ENCOUNTERS.replace("2017-06-01", "2016-12-01")
    con = build_study(patients=PATIENTS, encounters=encounters, conditions=BACK_PAIN)
    assert cohort(
        con, "observation_end_date, end_reason, is_in_landmark_population, reference_standard"
    ) == [["2016-12-01", "end_of_observation", "true", ""]]
    assert_rows(
        con,
        "select step, n_remaining, n_excluded from mart.attrition where step_order >= 8",
        """
        step                         | n_remaining | n_excluded
        no_prevalent_bone_metastasis | 1           | 0
        in_landmark_population       | 1           | 0
        reference_standard_known     | 0           | 1
        """,
    )


def test_the_data_extract_date_caps_observation():
    settings = StudySettings(data_extract_date=dt.date(2016, 10, 1))
    con = build_study(settings, patients=PATIENTS, encounters=ENCOUNTERS, conditions=BACK_PAIN)
    assert cohort(con, "observation_end_date, end_reason, reference_standard") == [
        ["2016-10-01", "end_of_observation", ""]
    ]


def test_a_death_after_the_extract_date_is_not_known():
    patients = PATIENTS.replace("| F   |", "| F   | 2016-11-01")
    settings = StudySettings(data_extract_date=dt.date(2016, 10, 1))
    con = build_study(settings, patients=patients, encounters=ENCOUNTERS, conditions=BACK_PAIN)
    assert cohort(con, "death_date, observation_end_date, end_reason, reference_standard") == [
        ["", "2016-10-01", "end_of_observation", ""]
    ]


def test_the_default_extract_date_is_the_latest_record_date_and_ignores_stop_dates():
    conditions = BACK_PAIN + "p1 | 2016-05-01 | 2030-01-01 | SNOMED-CT | 44077006"
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    extract = "select data_extract_date from intermediate.int_data_extract_date"
    assert query_text(con, extract) == [["2017-06-01"]]  # the last encounter, not the 2030 STOP
    observations = (
        "patient_id | observed_at | code | value\n p1 | 2017-07-01 08:00:00 | 29463-7 | 70"
    )
    con = build_study(
        patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions, observations=observations
    )
    assert query_text(con, extract) == [["2017-07-01"]]


def test_supporting_outcome_codes_are_listed_within_follow_up_and_neither_exclude_nor_make_an_outcome():
    conditions = (
        BACK_PAIN
        + """
        p1 | 2016-01-01 | | SNOMED-CT                         | 71286001
        p1 | 2016-05-01 | | http://hl7.org/fhir/sid/icd-10-cm | G95.20
        p1 | 2017-04-01 | | ICD-10-CM                         | M84.58XA
    """
    )
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    assert cohort(con, "patient_id, outcome_date, end_reason, reference_standard") == [
        ["p1", "", "horizon", "false"]
    ]
    # before index (2016-01-01) and after the follow-up end (2017-03-01) are not listed
    assert_rows(
        con,
        "select patient_id, record_date, code from intermediate.int_outcome_supporting_records",
        """
        patient_id | record_date | code
        p1         | 2016-05-01  | G9520
        """,
    )


def test_the_landmark_population_excludes_episodes_diagnosed_dead_or_unobserved_by_day_42():
    patients = """
        patient_id | birth_date | sex | death_date
        diagnosed  | 1960-01-01 | F   |
        died       | 1960-01-01 | F   | 2016-04-12
        lost       | 1960-01-01 | F   |
        day42      | 1960-01-01 | F   |
    """
    encounters = "encounter_id | patient_id | start_at\n" + "\n".join(
        f"{p}{i} | {p} | {d} 09:00:00"
        for p, last in (
            ("diagnosed", "2017-06-01"),
            ("died", "2016-04-01"),
            ("lost", "2016-04-11"),
            ("day42", "2016-04-12"),
        )
        for i, d in enumerate(("2014-01-10", "2016-03-01", last))
    )
    conditions = (
        "patient_id | start_date | code\n"
        + "\n".join(f"{p} | 2016-03-01 | 279039007" for p in ("diagnosed", "died", "lost", "day42"))
        + "\ndiagnosed | 2016-04-12 | 94222008"
    )
    con = build_study(patients=patients, encounters=encounters, conditions=conditions)
    # 2016-04-12 is index + 42: diagnosed or dead on that day is out; observed until that day is in
    # outside the landmark population the reference standard is not used, and NULL
    assert cohort(con, "patient_id, is_in_landmark_population, reference_standard, end_reason") == [
        ["day42", "true", "", "end_of_observation"],
        ["diagnosed", "false", "", "bone_metastasis"],
        ["died", "false", "", "death"],
        ["lost", "false", "", "end_of_observation"],
    ]


def test_a_patient_contributes_further_episodes_only_when_repeat_episodes_are_allowed():
    conditions = (
        BACK_PAIN + "p1 | 2017-05-01 | 2017-05-02 | SNOMED-CT | 279039007"
    )  # 426 days later
    con = build_study(patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    assert cohort(con) == [["p1", "2016-03-01"]]
    settings = StudySettings(allow_repeat_episodes=True)
    con = build_study(settings, patients=PATIENTS, encounters=ENCOUNTERS, conditions=conditions)
    assert cohort(con) == [["p1", "2016-03-01"], ["p1", "2017-05-01"]]


def test_attrition_reports_every_protocol_step_in_order():
    patients = (
        PATIENTS
        + """
        minor   | 2005-01-01 | F |
        nopain  | 1960-01-01 | F |
    """
    )
    encounters = (
        ENCOUNTERS
        + """
        m0 | minor  | 2014-01-10 09:00:00 |
        n0 | nopain | 2014-01-10 09:00:00 |
    """
    )
    conditions = BACK_PAIN + "minor | 2016-03-01 | | SNOMED-CT | 279039007"
    con = build_study(patients=patients, encounters=encounters, conditions=conditions)
    assert_rows(
        con,
        "select step_order, step, n_remaining, n_excluded from mart.attrition",
        """
        step_order | step                                | n_remaining | n_excluded
        1          | patients_in_export                  | 3           | 0
        2          | back_pain_record_from_study_start   | 2           | 1
        3          | incident_episode_after_washout      | 2           | 0
        4          | age_at_least_min_age                | 1           | 1
        5          | sex_in_study_sexes                  | 1           | 0
        6          | prior_observation_at_least_lookback | 1           | 0
        7          | alive_at_index                      | 1           | 0
        8          | no_prevalent_bone_metastasis        | 1           | 0
        9          | in_landmark_population              | 1           | 0
        10         | reference_standard_known            | 1           | 0
        """,
    )
