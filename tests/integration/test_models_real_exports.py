"""The models on the three real Synthea exports (../shared/synthea): they build, the cohort
holds exactly the qualifying chronic-low-back-pain patients, and there are no outcomes.

The expected cohort is recomputed here in plain Python, straight from the CSV files (in these
exports back pain appears only as SNOMED 278860009, from Synthea's chronic-pain module).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest
from model_spec import query_text

from pipelines import warehouse as wh
from pipelines.ingest import ingest_export
from pipelines.models import build_models, model_graph
from pipelines.settings import StudySettings
from pipelines.valuesets import read_value_sets

EARLY_START = StudySettings(study_start_date=dt.date(2010, 1, 1))


def rows(export: Path, table: str) -> list[dict[str, str]]:
    with (export / f"{table}.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def value_set_codes(concept: str) -> set[str]:
    return {r.code for r in read_value_sets() if r.concept == concept and r.code_system == "SNOMED"}


def expected_cohort(export: Path, settings: StudySettings) -> set[tuple[str, str]]:
    """(patient, index date) per PROTOCOL 3, recomputed in plain Python from the CSV files.

    Back-pain records are SNOMED conditions (by START) and encounter REASONCODEs (these exports
    code both in SNOMED); the index is the first record day from study start with no record in
    the washout_days before it (one episode per patient).
    """
    back_pain, metastasis = value_set_codes("back_pain"), value_set_codes("bone_metastasis")
    patients = {p["Id"]: p for p in rows(export, "patients")}
    first_encounter: dict[str, dt.date] = {}
    records: dict[str, set[dt.date]] = {}
    for e in rows(export, "encounters"):
        day = dt.date.fromisoformat(e["START"][:10])
        first_encounter[e["PATIENT"]] = min(day, first_encounter.get(e["PATIENT"], day))
        if e["REASONCODE"] in back_pain:
            records.setdefault(e["PATIENT"], set()).add(day)
    metastasis_days: dict[str, list[dt.date]] = {}
    for c in rows(export, "conditions"):
        day = dt.date.fromisoformat(c["START"])
        if c["CODE"] in back_pain:
            records.setdefault(c["PATIENT"], set()).add(day)
        if c["CODE"] in metastasis:
            metastasis_days.setdefault(c["PATIENT"], []).append(day)
    washout = dt.timedelta(days=settings.washout_days)
    cohort = set()
    for patient, days in records.items():
        incident = [
            d
            for d in sorted(days)
            if d >= settings.study_start_date and not any(d - washout <= x < d for x in days)
        ]
        if not incident:
            continue
        index, p = incident[0], patients[patient]
        born = dt.date.fromisoformat(p["BIRTHDATE"])
        age = index.year - born.year - ((index.month, index.day) < (born.month, born.day))
        history = first_encounter[patient] <= index - dt.timedelta(days=settings.lookback_days)
        alive = not p["DEATHDATE"] or dt.date.fromisoformat(p["DEATHDATE"][:10]) >= index
        prevalent = any(d <= index for d in metastasis_days.get(patient, []))
        sex_ok = p["GENDER"].upper() in settings.sexes
        if age >= settings.min_age and history and alive and sex_ok and not prevalent:
            cohort.add((patient, index.isoformat()))
    return cohort


@pytest.fixture(scope="module")
def built(real_exports, tmp_path_factory):
    """Each export ingested once, built with the default settings and with an early study start."""
    out = {}
    for export in real_exports:
        warehouse = tmp_path_factory.mktemp(export.name) / "warehouse.duckdb"
        ingest_export(export, warehouse, log=lambda message: None)
        con = wh.connect(warehouse)
        build_models(con, StudySettings())
        build_models(con, EARLY_START, schema_suffix="__early")
        out[export] = con
    yield out
    for con in out.values():
        con.close()


def test_every_model_builds_on_every_real_export(built):
    for con in built.values():
        for model in model_graph():
            for schema in (model.schema, model.schema + "__early"):
                con.execute(f"select count(*) from {schema}.{model.name}").fetchone()


def test_the_cohort_holds_exactly_the_qualifying_chronic_low_back_pain_patients(built):
    for export, con in built.items():
        for settings, schema in ((StudySettings(), "mart"), (EARLY_START, "mart__early")):
            cohort = {
                tuple(r)
                for r in query_text(con, f"select patient_id, index_date from {schema}.cohort")
            }
            assert cohort == expected_cohort(export, settings), (export.name, schema)
    total = sum(len(query_text(con, "select 1 from mart__early.cohort")) for con in built.values())
    assert total >= 3  # the early start really exercises the cohort


def test_the_default_cohort_is_the_one_adult_with_incident_chronic_low_back_pain_after_2015(built):
    cohorts = {
        e.name: query_text(con, "select patient_id, index_date, age_at_index, sex from mart.cohort")
        for e, con in built.items()
    }
    assert cohorts == {
        "Evinett_synthea_AUC": [["92675303-ca5b-136a-169b-e764c5753f06", "2017-01-12", "18", "M"]],
        "OHDSI_dbt-synthea": [],
        "jijones12_synthea": [],
    }


def test_plain_synthea_has_no_bone_metastasis_outcomes(built):
    for con in built.values():
        for schema in ("mart", "mart__early"):
            assert query_text(con, f"select count(outcome_date) from {schema}.cohort") == [["0"]]
            assert query_text(
                con, f"select count(*) from {schema}.cohort where end_reason = 'bone_metastasis'"
            ) == [["0"]]
        assert query_text(
            con,
            "select count(*) from intermediate.int_concept_records where concept = 'bone_metastasis'",
        ) == [["0"]]


def test_attrition_agrees_with_the_cohort_on_every_export(built):
    for con in built.values():
        for schema in ("mart", "mart__early"):
            steps = query_text(
                con, f"select n_remaining, n_excluded from {schema}.attrition order by step_order"
            )
            assert all(int(n) >= 0 for n, _ in steps)
            cohort = query_text(con, f"select count(*) from {schema}.cohort")
            assert steps[7][0] == cohort[0][0]
            red_flags = query_text(con, f"select count(*) from {schema}.red_flags")
            assert red_flags == cohort
