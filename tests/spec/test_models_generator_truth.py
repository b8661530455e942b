"""The models recover the generator's planted truth (pipelines.generator, docs/generator.md).

One seeded synthetic export is generated, ingested and built once. Then:
- mart.cohort agrees exactly with truth_episodes.csv for every episode, planted edge cases
  included (who is in, index date, age, follow-up, outcome, landmark, reference standard);
- every red flag agrees with the planted flag episode by episode;
- mart.attrition agrees with truth.json step by step;
- each flag's empirical sensitivity and specificity in the landmark population lies in the
  binomial 95% interval around the planted value.
The truth is stated for the protocol's default settings, which the build uses.
"""

from __future__ import annotations

import csv
import json

import pytest
from model_spec import query_text

from pipelines import warehouse as wh
from pipelines.flags import FLAGS  # the registry, valuesets/flags.csv
from pipelines.ingest import ingest_export
from pipelines.models import build_models
from pipelines.settings import StudySettings

generator = pytest.importorskip("pipelines.generator")
stats = pytest.importorskip("scipy.stats")

PATIENTS, SEED = 6000, 20261123
COHORT_COLUMNS = (
    "index_date", "age_at_index", "sex", "observation_end_date", "follow_up_end_date", "end_reason",
    "outcome_date", "days_to_outcome", "days_to_follow_up_end", "is_in_landmark_population",
    "reference_standard", "death_date",
)  # fmt: skip
# truth.json step -> mart.attrition step
STEP_NAMES = {
    "all_patients": "patients_in_export",
    "back_pain_record": "back_pain_record_from_study_start",
    "incident_episode": "incident_episode_after_washout",
    "age": "age_at_least_min_age",
    "sex": "sex_in_study_sexes",
    "lookback": "prior_observation_at_least_lookback",
    "no_prevalent_outcome": "no_prevalent_bone_metastasis",
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(connection, truth rows by patient, truth.json) for one generated export."""
    root = tmp_path_factory.mktemp("generated")
    generator.generate(root / "export", patients=PATIENTS, seed=SEED)
    warehouse = root / "warehouse.duckdb"
    ingest_export(root / "export", warehouse, log=lambda message: None)
    con = wh.connect(warehouse)
    build_models(con, StudySettings())
    with (root / "export" / "truth_episodes.csv").open(newline="", encoding="utf-8") as f:
        truth = {row["patient_id"]: row for row in csv.DictReader(f)}
    summary = json.loads((root / "export" / "truth.json").read_text(encoding="utf-8"))
    yield con, truth, summary
    con.close()


def rows_by_patient(con, sql: str) -> dict[str, dict[str, str]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    out = {}
    for values in query_text(con, sql):
        row = dict(zip(names, values, strict=True))
        out[row["patient_id"]] = row
    return out


def test_the_cohort_holds_exactly_the_episodes_the_truth_includes(study):
    con, truth, _ = study
    cohort = rows_by_patient(con, "select * from mart.cohort")
    included = {p for p, row in truth.items() if row["expected_step"] == "included"}
    assert set(cohort) == included


def test_every_cohort_value_agrees_with_the_truth(study):
    con, truth, _ = study
    cohort = rows_by_patient(con, "select * from mart.cohort")
    wrong = [
        (truth[p]["scenario"], p, column, row[column], truth[p][column])
        for p, row in cohort.items()
        for column in COHORT_COLUMNS
        if row[column] != truth[p][column]
    ]
    assert wrong == []


@pytest.mark.parametrize("scenario", generator.params.EDGE_SCENARIOS)
def test_each_planted_edge_case_gives_its_expected_result(study, scenario):
    con, truth, _ = study
    cohort = rows_by_patient(con, "select * from mart.cohort")
    cases = {p: row for p, row in truth.items() if row["scenario"] == scenario}
    assert cases, f"no {scenario} patients generated"
    for p, row in cases.items():
        if row["expected_step"] != "included":
            assert p not in cohort, (scenario, p, row["expected_step"])
        else:
            assert {c: cohort[p][c] for c in COHORT_COLUMNS} == {
                c: row[c] for c in COHORT_COLUMNS
            }, (scenario, p)


def test_every_flag_agrees_with_the_planted_flag(study):
    con, truth, _ = study
    flags = rows_by_patient(con, "select * from mart.red_flags")
    wrong = [
        (truth[p]["scenario"], p, f, row[f"flag_{f}"], truth[p][f"flag_{f}"])
        for p, row in flags.items()
        for f in FLAGS
        if row[f"flag_{f}"] != truth[p][f"flag_{f}"]
    ]
    assert wrong == []
    assert all(row["red_flag_count"] == truth[p]["red_flag_count"] for p, row in flags.items())


def test_the_default_extract_date_is_the_planted_one(study):
    con, _, summary = study
    extract = query_text(con, "select data_extract_date from intermediate.int_data_extract_date")
    assert extract == [[summary["assumed_settings"]["data_extract_date"]]]
    assert (
        summary["assumed_settings"]["study_start_date"]
        == StudySettings().study_start_date.isoformat()
    )


def test_attrition_agrees_with_the_truth_step_by_step(study):
    con, truth, summary = study
    ours = {
        row[0]: (int(row[1]), int(row[2]))
        for row in query_text(con, "select step, n_remaining, n_excluded from mart.attrition")
    }
    # the generator counts patients with any back-pain record at step 2; the protocol step counts
    # those with one from study start, so patients with pre-study records only leave one step earlier
    pre_study_only = sum(1 for row in truth.values() if row["scenario"] == "pre_study_only")
    for step in summary["attrition"]:
        remaining, excluded = step["n_remaining"], step["n_excluded"]
        if step["step"] == "back_pain_record":
            remaining, excluded = remaining - pre_study_only, excluded + pre_study_only
        if step["step"] == "incident_episode":
            excluded -= pre_study_only
        assert ours[STEP_NAMES[step["step"]]] == (remaining, excluded), step["step"]
    assert ours["alive_at_index"][1] == 0
    landmark = [r for r in truth.values() if r["is_in_landmark_population"] == "true"]
    assert ours["in_landmark_population"][0] == len(landmark)
    assert ours["reference_standard_known"][0] == sum(
        r["reference_standard"] != "" for r in landmark
    )


@pytest.mark.parametrize("flag", FLAGS)
def test_each_flags_sensitivity_and_specificity_lie_in_the_planted_binomial_95_percent_interval(
    study, flag
):
    """Among regular episodes: edge cases force some flags (e.g. a repeat visit on day 28)."""
    con, truth, summary = study
    regular = [
        p for p, row in truth.items() if row["scenario"] in generator.params.REGULAR_SCENARIOS
    ]
    con.execute("create or replace temp table regular_patients (patient_id varchar)")
    con.executemany("insert into regular_patients values (?)", [[p] for p in regular])
    counts = con.execute(f"""
        select
            count(case when c.reference_standard and f.flag_{flag} then 1 end),
            count(case when c.reference_standard then 1 end),
            count(case when not c.reference_standard and not f.flag_{flag} then 1 end),
            count(case when not c.reference_standard then 1 end)
        from mart.cohort as c
        join mart.red_flags as f using (patient_id, index_date)
        join regular_patients using (patient_id)
        where c.is_in_landmark_population and c.reference_standard is not null
    """).fetchone()
    true_positives, cases, true_negatives, non_cases = counts
    planted = summary["planted"]["flags"][flag]
    assert cases >= 50 and non_cases >= 1000
    low, high = stats.binom.interval(0.95, cases, planted["sensitivity"])
    assert low <= true_positives <= high, (true_positives, cases, planted)
    low, high = stats.binom.interval(0.95, non_cases, planted["specificity"])
    assert low <= true_negatives <= high, (true_negatives, non_cases, planted)
