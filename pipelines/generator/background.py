"""Synthea-like background care for every patient, from the first to the last encounter.

Yearly wellness visits (vitals incl. body weight and height, quality-of-life scores,
surveys, lab panels, screening procedures, social findings, chronic medication
renewals) plus symptom, problem, dental, follow-up, emergency and eye visits at rates
tuned so rows per patient match the real exports (docs/generator.md). None of it is
study signal: codes come from catalog's background lists, observation values are drawn
later within normal ranges, weights follow each patient's slow drift.
"""

from __future__ import annotations

import numpy as np

from pipelines.generator import catalog as cat
from pipelines.generator.catalog import ENCOUNTER_INDEX as ENC
from pipelines.generator.population import Population, uniform_days
from pipelines.generator.records import NEVER, Records, code_id, code_ids, imaging_id, observable_id

VISITS_PER_YEAR = {
    "symptom": 0.8,
    "problem": 0.35,
    "dental": 0.5,
    "follow_up": 0.15,
    "emergency": 0.1,
    "eye": 0.1,
}
BACTERIAL = frozenset(code_id(c) for c in cat.ACUTE_CONDITIONS[:5] + cat.ACUTE_CONDITIONS[6:7])
_ACUTE = code_ids(cat.ACUTE_CONDITIONS)
_ACUTE_P = np.array(cat.ACUTE_WEIGHTS) / sum(cat.ACUTE_WEIGHTS)
_SOCIAL = code_ids(cat.SOCIAL_FINDINGS)
_SOCIAL_P = np.array(cat.SOCIAL_WEIGHTS) / sum(cat.SOCIAL_WEIGHTS)
_CHRONIC = code_ids([c for c, _ in cat.CHRONIC_CONDITIONS])


def add_background(rng: np.random.Generator, pop: Population, rec: Records) -> None:
    """Background encounters and their records for all patients of the chunk."""
    patient, day = _wellness_days(rng, pop)
    _wellness(rng, pop, rec, patient, day)
    years = (pop.last_day - pop.first_day + 1) / 365.25
    for etype, rate in VISITS_PER_YEAR.items():
        count = rng.poisson(rate * years)
        patient = np.repeat(np.arange(pop.n), count)
        day = uniform_days(rng, pop.first_day[patient], pop.last_day[patient])
        VISIT_BUILDERS[etype](rng, pop, rec, patient, day)
    last = np.arange(pop.n)  # an encounter on the last day pins the end of observation
    _problem(rng, pop, rec, last, pop.last_day.copy())


def _wellness_days(rng: np.random.Generator, pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """About yearly from the first encounter (which is the first wellness visit) to the last."""
    count = (pop.last_day - pop.first_day) // 365 + 1
    patient = np.repeat(np.arange(pop.n), count)
    nth = np.arange(patient.size) - np.repeat(np.cumsum(count) - count, count)
    jitter = np.where(nth > 0, rng.integers(-30, 31, patient.size), 0)
    day = np.minimum(pop.first_day[patient] + 365 * nth + jitter, pop.last_day[patient])
    return patient, day


def _bernoulli(rng: np.random.Generator, rows: np.ndarray, probability: float) -> np.ndarray:
    return rows[rng.random(rows.size) < probability]


def _stop(pop: Population, patient: np.ndarray, day: np.ndarray) -> np.ndarray:
    return np.minimum(day, np.minimum(pop.last_day[patient], pop.death[patient]))


def _observe(
    rec: Records,
    rng: np.random.Generator,
    enc: np.ndarray,
    panel,
    probability: float = 1.0,
    has_encounter: bool = True,
) -> None:
    """A panel of observations (values drawn later) at a share of the given encounters."""
    enc = _bernoulli(rng, enc, probability)
    for obs in panel:
        rec.add_observations(enc, observable_id(obs), np.nan, has_encounter)


def _wellness(rng, pop: Population, rec: Records, patient: np.ndarray, day: np.ndarray) -> None:
    enc = rec.add_encounters(patient, day, ENC["wellness"])
    _observe(rec, rng, enc, (cat.HEIGHT, cat.WEIGHT, cat.BMI, *cat.VITALS))
    _observe(rec, rng, enc, cat.QUALITY_OF_LIFE, has_encounter=False)
    _observe(rec, rng, enc, (cat.TOBACCO,), 0.8)
    for obs, probability in cat.SCORES:
        _observe(rec, rng, enc, (obs,), probability)
    _observe(rec, rng, enc, cat.PRAPARE, 0.12)
    _observe(rec, rng, enc, cat.METABOLIC_PANEL, 0.35)
    _observe(rec, rng, enc, cat.LIPID_PANEL, 0.30)
    _observe(rec, rng, enc, cat.CBC_PANEL, 0.12)
    _observe(rec, rng, enc, cat.HEPATIC_PANEL, 0.08)
    _observe(rec, rng, enc, (cat.HBA1C,), 0.10)
    for code, probability in cat.WELLNESS_PROCEDURES:
        rec.add_procedures(_bernoulli(rng, enc, probability), code_id(code))
    _social_findings(rng, pop, rec, enc, patient, day)
    first = np.r_[
        True, patient[1:] != patient[:-1]
    ]  # chronic conditions diagnosed at the first visit
    for k in range(_CHRONIC.size):
        rows = np.flatnonzero(first & pop.chronic[patient, k])
        rec.add_conditions(enc[rows], _CHRONIC[k], NEVER)
    _chronic_medications(rng, pop, rec, enc, patient, day)


def _social_findings(rng, pop: Population, rec: Records, enc, patient, day) -> None:
    """Employment, stress and other social findings, as Synthea records them at wellness visits."""
    for probability in (0.85, 0.35):
        rows = np.flatnonzero(rng.random(enc.size) < probability)
        code = rng.choice(_SOCIAL, size=rows.size, p=_SOCIAL_P)
        later = _stop(pop, patient[rows], day[rows] + rng.integers(200, 800, rows.size))
        rec.add_conditions(enc[rows], code, np.where(rng.random(rows.size) < 0.3, NEVER, later))


def _chronic_medications(rng, pop: Population, rec: Records, enc, patient, day) -> None:
    """Renewals of each chronic condition's medications (Synthea writes one row per renewal)."""
    for k, (condition, _) in enumerate(cat.CHRONIC_CONDITIONS):
        rows = np.flatnonzero(pop.chronic[patient, k])
        for med in cat.CHRONIC_MEDICATIONS[condition.code]:
            stop = day[rows] + rng.integers(300, 400, rows.size)
            stop = np.where(
                stop > pop.last_day[patient[rows]], NEVER, stop
            )  # still taken at the end
            rec.add_medications(enc[rows], code_id(med), stop, code_id(condition))
    age = (day - pop.birth[patient]) / 365.25
    uses_contraceptive = (
        pop.weight_phase[patient] < 1.2
    )  # a fixed ~19% of patients (phase is uniform)
    rows = np.flatnonzero(pop.female[patient] & (age >= 18) & (age < 45) & uses_contraceptive)
    rec.add_medications(
        enc[rows], code_id(cat.CONTRACEPTIVE), _stop(pop, patient[rows], day[rows] + 365)
    )


def _symptom(rng, pop: Population, rec: Records, patient, day) -> None:
    condition = rng.choice(_ACUTE, size=patient.size, p=_ACUTE_P)
    enc = rec.add_encounters(patient, day, ENC["symptom"], condition)
    rec.add_conditions(enc, condition, _stop(pop, patient, day + rng.integers(7, 29, patient.size)))
    second = np.flatnonzero(rng.random(patient.size) < 0.2)  # e.g. cough with the sinusitis
    rec.add_conditions(
        enc[second],
        rng.choice(_ACUTE, size=second.size, p=_ACUTE_P),
        _stop(pop, patient[second], day[second] + 14),
    )
    rows = np.flatnonzero(np.isin(condition, list(BACTERIAL)) & (rng.random(patient.size) < 0.7))
    antibiotic = rng.choice(code_ids(cat.ANTIBIOTICS), size=rows.size)
    rec.add_medications(
        enc[rows], antibiotic, _stop(pop, patient[rows], day[rows] + 10), condition[rows]
    )
    rows = np.flatnonzero(rng.random(patient.size) < 0.25)
    rec.add_medications(
        enc[rows],
        code_id(cat.LORATADINE),
        _stop(pop, patient[rows], day[rows] + 14),
        condition[rows],
    )
    rec.add_procedures(_bernoulli(rng, enc, 0.3), code_id(cat.OTHER_PROCEDURES[0]))
    _observe(rec, rng, enc, cat.FOLLOW_UP_VITALS, 0.3)


def _problem(rng, pop: Population, rec: Records, patient, day) -> None:
    enc = rec.add_encounters(patient, day, ENC["problem"])
    _observe(rec, rng, enc, cat.FOLLOW_UP_VITALS, 0.8)
    _observe(rec, rng, enc, cat.METABOLIC_PANEL, 0.2)
    rec.add_procedures(_bernoulli(rng, enc, 0.3), code_id(cat.OTHER_PROCEDURES[1]))
    _chronic_medications(rng, pop, rec, enc, patient, day)


def _dental(rng, pop: Population, rec: Records, patient, day) -> None:
    enc = rec.add_encounters(patient, day, ENC["dental"])
    for code, probability in cat.DENTAL_PROCEDURES:
        rec.add_procedures(_bernoulli(rng, enc, probability), code_id(code))
    xray = _bernoulli(rng, enc, 0.35)
    rec.add_procedures(xray, code_id(cat.DENTAL_XRAY))
    rec.add_imaging(xray, imaging_id(cat.DENTAL_IMAGING))
    rows = np.flatnonzero(rng.random(enc.size) < 0.15)
    code = rng.choice(code_ids(cat.DENTAL_CONDITIONS), size=rows.size)
    rec.add_conditions(
        enc[rows], code, _stop(pop, patient[rows], day[rows] + rng.integers(14, 61, rows.size))
    )
    rows = np.flatnonzero(rng.random(enc.size) < 0.25)
    rec.add_medications(
        enc[rows], code_id(cat.FLUORIDE), day[rows], code_id(cat.DENTAL_CONDITIONS[0])
    )


def _follow_up(rng, pop: Population, rec: Records, patient, day) -> None:
    enc = rec.add_encounters(patient, day, ENC["follow_up"])
    _observe(rec, rng, enc, cat.FOLLOW_UP_VITALS, 0.5)


def _emergency(rng, pop: Population, rec: Records, patient, day) -> None:
    condition = np.where(
        rng.random(patient.size) < 0.5, rng.choice(_ACUTE, size=patient.size, p=_ACUTE_P), -1
    )
    enc = rec.add_encounters(patient, day, ENC["emergency"], condition)
    rows = np.flatnonzero(condition >= 0)
    rec.add_conditions(enc[rows], condition[rows], _stop(pop, patient[rows], day[rows] + 14))
    rec.add_procedures(_bernoulli(rng, enc, 0.3), code_id(cat.OTHER_PROCEDURES[2]))
    xray = _bernoulli(rng, enc, 0.25)
    rec.add_procedures(xray, code_id(cat.CHEST_XRAY))
    rec.add_imaging(xray, imaging_id(cat.CHEST_IMAGING))


def _eye(rng, pop: Population, rec: Records, patient, day) -> None:
    enc = rec.add_encounters(patient, day, ENC["eye"])
    photo = _bernoulli(rng, enc, 0.6)
    rec.add_procedures(photo, code_id(cat.FUNDOSCOPY))
    rec.add_imaging(photo, imaging_id(cat.EYE_IMAGING))
    rows = np.flatnonzero(rng.random(enc.size) < 0.6)
    rec.add_medications(enc[rows], code_id(cat.TROPICAMIDE), day[rows])


VISIT_BUILDERS = {
    "symptom": _symptom,
    "problem": _problem,
    "dental": _dental,
    "follow_up": _follow_up,
    "emergency": _emergency,
    "eye": _eye,
}
