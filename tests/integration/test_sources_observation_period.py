"""OMOP observation_period ends the observation of an episode (PROTOCOL 2-3, docs/sources.md):
the period covering the index date, not the last record, censors follow-up."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from pipelines import warehouse as wh
from pipelines.models import build_models
from pipelines.settings import StudySettings
from pipelines.sources import load_source

PATIENTS, SEED = 400, 11
QUIET = {"log": lambda message: None}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def cohort(folder: Path, warehouse: Path) -> dict[str, tuple]:
    """person_id -> (index_date, observation_end_date, follow_up_end_date, end_reason,
    last encounter date) of each cohort episode."""
    load_source(folder, warehouse, "omop", **QUIET)
    con = wh.connect(warehouse)
    try:
        build_models(con, StudySettings())
        rows = con.execute(
            """SELECT c.patient_id, c.index_date, c.observation_end_date, c.follow_up_end_date,
                      c.end_reason, max(CAST(e.start_at AS DATE))
               FROM mart.cohort c JOIN raw.encounters e USING (patient_id) GROUP BY ALL"""
        ).fetchall()
    finally:
        con.close()
    return {r[0]: r[1:] for r in rows}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> tuple[Path, Path]:
    """(Synthea CSV export, the same converted to OMOP)."""
    from pipelines.generator.convert import convert, generate_in_format

    root = tmp_path_factory.mktemp("periods")
    generate_in_format(root / "synthea", "synthea", patients=PATIENTS, seed=SEED,
                       progress=lambda _: None)  # fmt: skip
    convert(root / "synthea", root / "omop", "omop")
    return root / "synthea", root / "omop"


@pytest.fixture(scope="module")
def omop_export(exports) -> Path:
    return exports[1]


def test_an_observation_period_ending_before_the_last_record_censors_the_episode(
    omop_export, tmp_path
):
    before = cohort(omop_export, tmp_path / "before.duckdb")
    # an episode followed past index + 60 days, with records after that, not ended by death
    person, (index, _, follow_up_end, _, last_visit) = next(
        (p, v)
        for p, v in sorted(before.items())
        if v[3] in ("horizon", "end_of_observation")
        and v[2] > v[0] + dt.timedelta(days=60)
        and v[4] > v[0] + dt.timedelta(days=60)
    )
    end = index + dt.timedelta(days=30)
    folder = tmp_path / "omop"
    folder.mkdir()
    for p in omop_export.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    periods = read_csv(folder / "observation_period.csv")
    for row in periods:
        if row["person_id"] == person:
            row["observation_period_end_date"] = end.isoformat()
    write_csv(folder / "observation_period.csv", periods)

    after = cohort(folder, tmp_path / "after.duckdb")
    got_index, observation_end, got_follow_up_end, reason, got_last_visit = after[person]
    assert (got_index, got_last_visit) == (index, last_visit)  # the records are unchanged
    assert last_visit > end
    assert (observation_end, got_follow_up_end, reason) == (end, end, "end_of_observation")
    # the other episodes are untouched
    assert {p: v for p, v in after.items() if p != person} == {
        p: v for p, v in before.items() if p != person
    }


def test_the_generated_observation_period_gives_the_csv_layouts_observation_end(exports, tmp_path):
    """Each person's period runs from the first visit to the last visit or the death, the
    observation end the study gives the Synthea CSV layout. The generator's deaths fall on
    the last visit; one moved 10 days after it must still end the period."""
    synthea = tmp_path / "synthea"
    synthea.mkdir()
    for p in exports[0].iterdir():
        (synthea / p.name).write_bytes(p.read_bytes())
    last_visits: dict[str, str] = {}
    for v in read_csv(synthea / "encounters.csv"):
        last_visits[v["PATIENT"]] = max(last_visits.get(v["PATIENT"], ""), v["START"][:10])
    patients = read_csv(synthea / "patients.csv")
    moved = next(p for p in patients if p["DEATHDATE"] and p["Id"] in last_visits)
    moved["DEATHDATE"] = (
        dt.date.fromisoformat(last_visits[moved["Id"]]) + dt.timedelta(days=10)
    ).isoformat()
    write_csv(synthea / "patients.csv", patients)
    from pipelines.generator.convert import convert

    omop = tmp_path / "omop"
    convert(synthea, omop, "omop")

    persons = {r["person_id"]: r["person_source_value"] for r in read_csv(omop / "person.csv")}
    deaths = {r["person_id"]: r["death_date"] for r in read_csv(omop / "death.csv")}
    visits: dict[str, list[str]] = {}
    for v in read_csv(omop / "visit_occurrence.csv"):
        visits.setdefault(v["person_id"], []).append(v["visit_start_date"])
    periods = {p["person_id"]: p for p in read_csv(omop / "observation_period.csv")}
    assert set(periods) == set(visits) and set(visits) <= set(persons)
    for person, p in periods.items():
        last, death = max(visits[person]), deaths.get(person)
        assert p["observation_period_start_date"] == min(visits[person])
        assert p["observation_period_end_date"] == max(last, death or last)
        if persons[person] == moved["Id"]:
            assert p["observation_period_end_date"] == moved["DEATHDATE"] > last
