"""The study as a careful analyst would write it in pandas: the benchmark's baseline.

Reads the raw Synthea CSVs directly (no warehouse) and computes what `mart.cohort`,
`mart.red_flags`, `mart.attrition` and the 2x2 counts of `mart.flag_accuracy` hold:
incident back-pain episodes, inclusion and exclusion, follow-up, the landmark population
and reference standard, the red flags and their 2x2 counts per subgroup (PROTOCOL.md
sections 3-6.3, with the SQL models' reading of each rule). It is meant as a fair
comparison, not a strawman:

- only the needed columns are read (`usecols`), with explicit dtypes; codes, code
  systems and patient ids as `category`, so a code is classified once per distinct
  value, never once per row;
- files are read in chunks and filtered to the study's codes chunk by chunk, so memory
  follows what the study needs rather than the file size;
- patient ids become int32 codes once; every later join and groupby is on integers;
- everything is vectorised (merges, groupby, boolean masks); no Python loop per row.

It shares the project's knowledge of CSV headers (`pipelines.schema`), value sets
(`pipelines.valuesets`) and code systems (`pipelines.codesystems`), nothing else.

    python -m bench.baseline_pandas EXPORT_DIR [--json OUT.json]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import codesystems
from pipelines.flags import FLAGS, SEED_FLAGS
from pipelines.schema import TABLES
from pipelines.settings import StudySettings
from pipelines.valuesets import read_value_sets

SUBGROUPS = ("all", "breast_cancer_history", "female")
# Concepts read from diagnoses and encounter reasons, and the flag each coded finding sets.
CLINICAL_CONCEPTS = (
    "back_pain",
    "bone_metastasis",
    "breast_cancer",
    "night_pain",
    "neuro_symptoms",
    "spinal_tenderness",
    "weight_loss_coded",
)
FINDING_FLAGS = {
    "night_pain": "night_pain",
    "neuro_symptoms": "neuro_symptoms",
    "spinal_tenderness": "spinal_tenderness",
    "weight_loss_coded": "weight_loss",
}
OBSERVATION_CONCEPTS = ("body_weight", "alkaline_phosphatase")
MEDICATION_CONCEPTS = ("non_opioid_analgesic", "opioid")
COHORT_COLUMNS = (
    "patient",
    "index_date",
    "age_at_index",
    "sex",
    "has_breast_cancer_history",
    "observation_end_date",
    "follow_up_end_date",
    "end_reason",
    "outcome_date",
    "days_to_outcome",
    "is_in_landmark_population",
    "reference_standard",
    "death_date",
    "days_to_follow_up_end",
    "first_metastasis_date",
)
DECIMAL_SCALE = 10_000  # observation values compare as DECIMAL(18, 4), as in the SQL models


# ---------------------------------------------------------------------------- value sets


class ValueSets:
    """Value-set codes by (code system, code), exact and prefix, restricted to some concepts."""

    def __init__(self, concepts: tuple[str, ...]):
        rows = [r for r in read_value_sets() if r.concept in concepts]
        self.exact = pd.DataFrame(
            [(r.code_system, r.code, r.concept) for r in rows if r.match == "exact"],
            columns=["system", "code", "concept"],
        ).drop_duplicates()
        self.prefixes = [(r.code_system, r.code, r.concept) for r in rows if r.match == "prefix"]
        self._codes = frozenset(self.exact["code"])

    def candidate(self, codes: pd.Index) -> np.ndarray:
        """Which distinct (normalised) codes could belong to a concept, whatever their system."""
        hit = codes.isin(self._codes)
        for _, prefix, _ in self.prefixes:
            hit |= codes.str.startswith(prefix)
        return np.asarray(hit, dtype=bool)

    def label(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of `frame` (with `system`, `code`) joined to their concepts; one row per concept."""
        parts = [frame.merge(self.exact, on=["system", "code"])]
        for system, prefix, concept in self.prefixes:
            hit = (frame["system"] == system) & frame["code"].str.startswith(prefix)
            parts.append(frame.loc[hit].assign(concept=concept))
        return pd.concat(parts, ignore_index=True)


def _normalised(categories: pd.Index) -> pd.Index:
    """codesystems.normalize_code over a categorical's categories (each distinct code once)."""
    return (
        pd.Index(categories.astype(str)).str.strip().str.upper().str.replace(".", "", regex=False)
    )


def _systems(system: pd.Series | None, table: str, n: int) -> np.ndarray:
    """Canonical code system per row: a known spelling, else the text as written, else the default."""
    default = codesystems.DEFAULT_SYSTEM[table]
    if system is None:
        return np.full(n, default, dtype=object)
    cats = system.cat.categories
    mapped = np.array(
        [codesystems.canonical_system(c) or (str(c).strip().upper() or default) for c in cats]
        + [default],
        dtype=object,
    )
    return mapped[system.cat.codes.to_numpy()]  # code -1 (empty) picks the appended default


# ---------------------------------------------------------------------------- reading CSVs


@dataclass
class Export:
    """An export folder: each table's files (`name.csv`, `name-2.csv`, `.csv.gz`) read in chunks."""

    folder: Path
    chunksize: int = 2_000_000
    patient_ids: pd.Index | None = None

    def files(self, table: str) -> list[Path]:
        def belongs(name: str) -> bool:
            name = name.lower().removesuffix(".gz")
            return name.endswith(".csv") and (
                name == f"{table}.csv" or name.startswith(f"{table}-")
            )

        return sorted(p for p in self.folder.iterdir() if belongs(p.name) and p.stat().st_size > 0)

    def chunks(self, table: str, columns: dict[str, str]) -> Iterator[pd.DataFrame]:
        """Chunks with canonical column names; `columns` maps each to a dtype (`category` or `str`).

        A column the file's Synthea version lacks comes back as all-missing.
        """
        for path in self.files(table):
            header = _header(path)
            source = {c: _source_column(table, c, header) for c in columns}
            usecols = [s for s in source.values() if s is not None]
            reader = pd.read_csv(
                path,
                usecols=usecols,
                dtype={source[c]: columns[c] for c in columns if source[c] is not None},
                chunksize=self.chunksize,
                keep_default_na=False,
                na_values=[""],
            )
            for chunk in reader:
                chunk = chunk.rename(columns={s: c for c, s in source.items() if s is not None})
                for c in (c for c, s in source.items() if s is None):
                    chunk[c] = pd.Series(np.nan, index=chunk.index, dtype=columns[c])
                yield chunk

    def patient_codes(self, ids: pd.Series) -> np.ndarray:
        """int32 index into `patient_ids` per row (-1: not a known patient)."""
        lookup = self.patient_ids.get_indexer(ids.cat.categories)
        codes = ids.cat.codes.to_numpy()
        return np.where(codes >= 0, lookup[np.maximum(codes, 0)], -1).astype(np.int32)


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh))


def _source_column(table: str, canonical: str, header: list[str]) -> str | None:
    by_upper = {h.strip().upper(): h for h in header}
    for name in TABLES[table].column(canonical).sources:
        if name.upper() in by_upper:
            return by_upper[name.upper()]
    return None


def _timestamps(text: pd.Series) -> pd.Series:
    """`YYYY-MM-DD` or ISO-8601 UTC text to naive UTC datetime64 (NaT when unparseable)."""
    if len(text) == 0:
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    return pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)


def _dates(text: pd.Series) -> pd.Series:
    return _timestamps(text).dt.normalize()


def _max_text(latest: list, text: pd.Series) -> None:
    """Track the latest ISO date or timestamp seen (ISO text sorts like the dates it spells)."""
    value = text.dropna().max() if text.notna().any() else None
    if value is not None:
        latest.append(_dates(pd.Series([value])).iloc[0])


# ---------------------------------------------------------------------------- per-table readers


@dataclass
class Tables:
    """What the study needs from the export, already filtered and typed."""

    patients: pd.DataFrame  # patient, birth_date, death_date, sex
    encounter_span: pd.DataFrame  # index patient: first_encounter, last_encounter
    clinical: pd.DataFrame  # conditions and encounter reasons in a study concept
    observations: pd.DataFrame | None  # body weight and ALP, value as DECIMAL(18,4) units
    medications: pd.DataFrame | None  # analgesic orders
    latest_date: pd.Timestamp
    rows: dict[str, int]


def read_tables(ex: Export) -> Tables:
    latest: list[pd.Timestamp] = []
    rows: dict[str, int] = {}
    patients = _read_patients(ex, latest, rows)
    clinical_sets = ValueSets(CLINICAL_CONCEPTS)
    span, reasons = _read_encounters(ex, clinical_sets, latest, rows)
    conditions = _read_coded(
        ex, "conditions", {"start_date": "str", "stop_date": "str"}, clinical_sets, latest, rows
    )
    observations = _read_coded(
        ex,
        "observations",
        {"observed_at": "str", "value": "str"},
        ValueSets(OBSERVATION_CONCEPTS),
        latest,
        rows,
    )
    medications = _read_coded(
        ex, "medications", {"start_at": "str"}, ValueSets(MEDICATION_CONCEPTS), latest, rows
    )
    for table, column in (("procedures", "start_at"), ("imaging_studies", "studied_at")):
        # only their latest date matters here (it can set the data extract date)
        for chunk in ex.chunks(table, {column: "str"}):
            rows[table] = rows.get(table, 0) + len(chunk)
            _max_text(latest, chunk[column])

    clinical = pd.concat(
        [
            conditions.rename(columns={"start_date": "record_date"}).assign(
                record_date=lambda d: _dates(d["record_date"]),
                stop_date=lambda d: _dates(d["stop_date"]),
                source_table="conditions",
            ),
            reasons,
        ],
        ignore_index=True,
    )
    if observations is not None:
        recorded_at = _timestamps(observations["observed_at"])
        value = pd.to_numeric(observations["value"], errors="coerce")
        observations = pd.DataFrame(
            {
                "patient": observations["patient"],
                "concept": observations["concept"],
                "recorded_at": recorded_at,
                "record_date": recorded_at.dt.normalize(),
                # DECIMAL(18,4) as scaled integers (float64 holds them exactly)
                "value": np.round(value * DECIMAL_SCALE),
            }
        )
    if medications is not None:
        medications = pd.DataFrame(
            {
                "patient": medications["patient"],
                "concept": medications["concept"],
                "record_date": _dates(medications["start_at"]),
            }
        )
    return Tables(
        patients,
        span,
        clinical,
        observations,
        medications,
        max((d for d in latest if pd.notna(d)), default=pd.NaT),
        rows,
    )


def _read_patients(ex: Export, latest: list, rows: dict) -> pd.DataFrame:
    parts = list(
        ex.chunks(
            "patients",
            {"patient_id": "str", "birth_date": "str", "death_date": "str", "sex": "category"},
        )
    )
    if not parts:
        raise FileNotFoundError(f"{ex.folder}: no patients.csv")
    raw = pd.concat(parts, ignore_index=True)
    rows["patients"] = len(raw)
    # duplicated or incomplete patients are quarantined at ingest: leave them out here too
    raw = raw.loc[
        ~raw["patient_id"].duplicated(keep=False)
        & raw["patient_id"].notna()
        & raw["birth_date"].notna()
    ]
    _max_text(latest, raw["death_date"])
    ex.patient_ids = pd.Index(raw["patient_id"].to_numpy())
    sex = (
        raw["sex"]
        .astype(str)
        .str.strip()
        .str.upper()
        .map({"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"})
    )
    return pd.DataFrame(
        {
            "patient": np.arange(len(raw), dtype=np.int32),
            "birth_date": _dates(raw["birth_date"]).to_numpy(),
            "death_date": _dates(raw["death_date"]).to_numpy(),
            "sex": sex.to_numpy(),
        }
    )


def _keep_coded(
    ex: Export, chunk: pd.DataFrame, table: str, sets: ValueSets, code: str = "code"
) -> pd.DataFrame:
    """The chunk's rows whose (system, code) is in a value set, with `patient` and `concept`."""
    codes = _normalised(chunk[code].cat.categories)
    maybe = sets.candidate(codes)
    c = chunk[code].cat.codes.to_numpy()
    rows = chunk.loc[(c >= 0) & maybe[np.maximum(c, 0)]]
    rows = rows.assign(
        code=codes.to_numpy(dtype=object)[rows[code].cat.codes.to_numpy()],
        system=_systems(rows.get("code_system"), table, len(rows)),
        patient=ex.patient_codes(rows["patient_id"]),
    )
    rows = rows.loc[rows["patient"] >= 0].drop(columns=["patient_id"])
    return sets.label(rows)


def _read_coded(
    ex: Export, table: str, extra: dict[str, str], sets: ValueSets, latest: list, rows: dict
):
    """A coded table's records in the value sets (None when the export has no such file)."""
    date_column = next(iter(extra))
    columns = {"patient_id": "category", "code": "category", **extra}
    if "code_system" in {c.name for c in TABLES[table].columns}:
        columns["code_system"] = "category"
    parts = []
    for chunk in ex.chunks(table, columns):
        rows[table] = rows.get(table, 0) + len(chunk)
        _max_text(latest, chunk[date_column])
        parts.append(_keep_coded(ex, chunk, table, sets))
    if not parts:
        if TABLES[table].required:
            raise FileNotFoundError(f"{ex.folder}: no {table}.csv")
        return None
    out = pd.concat(parts, ignore_index=True)
    return out.drop(columns=[c for c in ("code_system", "system") if c in out])


def _read_encounters(ex: Export, sets: ValueSets, latest: list, rows: dict):
    """Per patient first and last encounter date, and encounters whose REASONCODE is in a study concept."""
    spans, reasons = [], []
    columns = {"patient_id": "category", "start_at": "str", "reason_code": "category"}
    for chunk in ex.chunks("encounters", columns):
        rows["encounters"] = rows.get("encounters", 0) + len(chunk)
        _max_text(latest, chunk["start_at"])
        day = _dates(chunk["start_at"])
        patient = ex.patient_codes(chunk["patient_id"])
        frame = pd.DataFrame({"patient": patient, "day": day.to_numpy()}).loc[patient >= 0]
        spans.append(frame.groupby("patient")["day"].agg(["min", "max"]))
        coded = _keep_coded(ex, chunk, "encounters", sets, code="reason_code")
        reasons.append(
            pd.DataFrame(
                {
                    "patient": coded["patient"].to_numpy(),
                    "concept": coded["concept"].to_numpy(),
                    "record_date": _dates(coded["start_at"]).to_numpy(),
                    "source_table": "encounters",
                }
            )
        )
    if not spans:
        raise FileNotFoundError(f"{ex.folder}: no encounters.csv")
    span = (
        pd.concat(spans)
        .groupby(level=0)
        .agg(first_encounter=("min", "min"), last_encounter=("max", "max"))
    )
    return span, pd.concat(reasons, ignore_index=True)


# ---------------------------------------------------------------------------- the study


@dataclass
class BaselineResult:
    cohort: pd.DataFrame  # one row per episode, mart.cohort's columns (patient_id as in the export)
    red_flags: pd.DataFrame  # one row per episode, mart.red_flags' flag columns
    flag_counts: pd.DataFrame  # subgroup, rule, tp, fp, fn, tn (mart.flag_accuracy's counts)
    attrition: pd.DataFrame  # step_order, step, n_remaining, n_excluded (mart.attrition)
    rows_read: dict[str, int]
    seconds: dict[str, float]


def run_baseline(
    export: str | Path, settings: StudySettings | None = None, *, chunksize: int = 2_000_000
) -> BaselineResult:
    """Cohort, red flags, attrition and 2x2 counts from one Synthea export folder."""
    s = settings or StudySettings()
    laps: dict[str, float] = {}
    t = time.perf_counter()
    ex = Export(Path(export), chunksize=chunksize)
    tables = read_tables(ex)
    laps["read"], t = time.perf_counter() - t, time.perf_counter()
    extract = pd.Timestamp(s.data_extract_date) if s.data_extract_date else tables.latest_date
    episodes, attrition = cohort(s, tables, extract)
    laps["cohort"], t = time.perf_counter() - t, time.perf_counter()
    flags = red_flags(s, tables, episodes, extract)
    laps["red_flags"], t = time.perf_counter() - t, time.perf_counter()
    counts = flag_counts(episodes, flags)
    landmark = episodes["is_in_landmark_population"]
    attrition = pd.concat(
        [
            attrition,
            pd.DataFrame(
                {
                    "step": ["in_landmark_population", "reference_standard_known"],
                    "n_remaining": [
                        int(landmark.sum()),
                        int((landmark & episodes["reference_standard"].notna()).sum()),
                    ],
                }
            ),
        ],
        ignore_index=True,
    )
    attrition.insert(0, "step_order", range(1, len(attrition) + 1))
    attrition["n_excluded"] = (
        (attrition["n_remaining"].shift() - attrition["n_remaining"]).fillna(0).astype(int)
    )
    laps["flag_counts"] = time.perf_counter() - t
    ids = ex.patient_ids
    episodes = episodes.assign(patient_id=ids[episodes["patient"].to_numpy()]).drop(
        columns="patient"
    )
    flags = flags.assign(patient_id=ids[flags["patient"].to_numpy()]).drop(columns="patient")
    return BaselineResult(
        episodes, flags, counts, attrition, tables.rows, {k: round(v, 3) for k, v in laps.items()}
    )


def _days(n: int) -> pd.Timedelta:
    return pd.Timedelta(days=n)


def _completed_years(born: pd.Series, on: pd.Series) -> pd.Series:
    before_birthday = on.dt.month * 100 + on.dt.day < born.dt.month * 100 + born.dt.day
    return on.dt.year - born.dt.year - before_birthday.astype(int)


def cohort(s: StudySettings, t: Tables, extract: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Incident episodes, eligibility, follow-up, outcome, landmark population and reference standard."""
    clinical = t.clinical
    back_pain = clinical.loc[
        (clinical["concept"] == "back_pain") & (clinical["record_date"] <= extract),
        ["patient", "record_date"],
    ]
    days = back_pain.drop_duplicates().sort_values(["patient", "record_date"], kind="stable")
    previous = days.groupby("patient", sort=False)["record_date"].shift()
    start = pd.Timestamp(s.study_start_date)
    incident = (days["record_date"] >= start) & (
        previous.isna() | (previous < days["record_date"] - _days(s.washout_days))
    )
    ep = days.loc[incident].rename(columns={"record_date": "index_date"})
    if not s.allow_repeat_episodes:
        ep = ep.drop_duplicates("patient", keep="first")
    ep = ep.merge(t.patients, on="patient").merge(
        t.encounter_span, left_on="patient", right_index=True, how="left"
    )

    ep["age_at_index"] = _completed_years(ep["birth_date"], ep["index_date"])
    meets_age = (ep["age_at_index"] >= s.min_age).to_numpy()
    meets_sex = ep["sex"].isin(s.sexes).to_numpy()
    meets_lookback = (ep["first_encounter"] <= ep["index_date"] - _days(s.lookback_days)).to_numpy()
    alive = (ep["death_date"].isna() | (ep["death_date"] >= ep["index_date"])).to_numpy()
    metastases = clinical.loc[clinical["concept"] == "bone_metastasis", ["patient", "record_date"]]
    first_met = metastases.groupby("patient")["record_date"].min()
    prevalent = (ep["patient"].map(first_met) <= ep["index_date"]).to_numpy()
    eligible = meets_age & meets_sex & meets_lookback & alive & ~prevalent
    patients_from_start = back_pain.loc[back_pain["record_date"] >= start, "patient"].nunique()
    attrition = pd.DataFrame(
        {
            "step": [
                "patients_in_export",
                "back_pain_record_from_study_start",
                "incident_episode_after_washout",
                "age_at_least_min_age",
                "sex_in_study_sexes",
                "prior_observation_at_least_lookback",
                "alive_at_index",
                "no_prevalent_bone_metastasis",
            ],
            "n_remaining": [
                len(t.patients),
                patients_from_start,
                len(ep),
                int(meets_age.sum()),
                int((meets_age & meets_sex).sum()),
                int((meets_age & meets_sex & meets_lookback).sum()),
                int((meets_age & meets_sex & meets_lookback & alive).sum()),
                int(eligible.sum()),
            ],
        }
    )
    ep = ep.loc[eligible].reset_index(drop=True)
    breast_cancer = (
        clinical.loc[clinical["concept"] == "breast_cancer"].groupby("patient")["record_date"].min()
    )
    ep["has_breast_cancer_history"] = (
        ep["patient"].map(breast_cancer) < ep["index_date"]
    ).to_numpy()

    # First bone-metastasis record after index (even outside follow-up: it also cuts the flag window).
    after = metastases.merge(ep[["patient", "index_date"]], on="patient")
    after = after.loc[after["record_date"] > after["index_date"]]
    ep = ep.merge(
        after.groupby(["patient", "index_date"])["record_date"]
        .min()
        .rename("first_metastasis_date"),
        left_on=["patient", "index_date"],
        right_index=True,
        how="left",
    )
    return _follow_up(s, ep, extract)[list(COHORT_COLUMNS)], attrition


def _follow_up(s: StudySettings, ep: pd.DataFrame, extract: pd.Timestamp) -> pd.DataFrame:
    death = ep["death_date"].where(
        ep["death_date"] <= extract
    )  # a death after the extract is not yet known
    ep["death_date"] = death
    last_contact = ep[["last_encounter", "index_date"]].max(axis=1)
    ep["observation_end_date"] = death.fillna(last_contact).clip(upper=extract)
    horizon = ep["index_date"] + _days(s.horizon_days)
    censor = ep[["observation_end_date"]].assign(h=horizon).min(axis=1)
    first_met = ep["first_metastasis_date"]
    ep["outcome_date"] = first_met.where(first_met <= censor)
    has_outcome = ep["outcome_date"].notna()
    ep["follow_up_end_date"] = ep["outcome_date"].fillna(censor)
    ep["end_reason"] = np.select(
        [has_outcome, death <= horizon, ep["observation_end_date"] >= horizon],
        ["bone_metastasis", "death", "horizon"],
        default="end_of_observation",
    )
    ep["days_to_outcome"] = (ep["outcome_date"] - ep["index_date"]).dt.days.astype("Int64")
    ep["days_to_follow_up_end"] = (ep["follow_up_end_date"] - ep["index_date"]).dt.days
    landmark = ep["index_date"] + _days(s.landmark_days)
    ep["is_in_landmark_population"] = (
        ~(ep["outcome_date"] <= landmark)
        & ~(death <= landmark)
        & (ep["observation_end_date"] >= landmark)
    )
    # In the landmark population only: outcome within the horizon, else death before it or
    # observation to it (both outcome-negative); NA when observation ends first (censored).
    reference = pd.Series(pd.NA, index=ep.index, dtype="boolean")
    reference[(death <= horizon) | (ep["observation_end_date"] >= horizon)] = False
    reference[has_outcome] = True
    reference[~ep["is_in_landmark_population"]] = pd.NA
    ep["reference_standard"] = reference
    return ep


def _in_window(records: pd.DataFrame, windows: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    """Records joined to episodes, kept when start <= record_date <= end and before the first metastasis."""
    joined = records.merge(windows, on="patient")
    date = joined["record_date"]
    keep = (date >= joined[start]) & (date <= joined[end])
    keep &= joined["first_metastasis_date"].isna() | (date < joined["first_metastasis_date"])
    return joined.loc[keep]


def red_flags(s: StudySettings, t: Tables, ep: pd.DataFrame, extract: pd.Timestamp) -> pd.DataFrame:
    """One row per episode: each flag True/False, NA when it cannot be ascertained; the seed count."""
    key = ["patient", "index_date"]
    w = ep[
        [
            *key,
            "age_at_index",
            "has_breast_cancer_history",
            "first_metastasis_date",
            "observation_end_date",
        ]
    ].copy()
    w["window_start"] = w["index_date"] - _days(s.flag_lookback_days)
    w["window_end"] = w["index_date"] + _days(s.landmark_days)
    w["repeat_start"] = w["index_date"] + _days(s.early_repeat_days)
    w["persistence_date"] = w["index_date"] + _days(s.persistence_days)
    out = w[key].copy()

    def fired(evidence: pd.DataFrame) -> np.ndarray:
        hit = evidence[key].drop_duplicates().assign(_hit=True)
        return out.merge(hit, on=key, how="left")["_hit"].notna().to_numpy()

    clinical = t.clinical
    findings = _in_window(
        clinical.loc[clinical["concept"].isin(FINDING_FLAGS)], w, "window_start", "window_end"
    )
    for concept, flag in FINDING_FLAGS.items():
        out[f"flag_{flag}"] = fired(findings.loc[findings["concept"] == concept])

    back_pain = clinical.loc[
        (clinical["concept"] == "back_pain") & (clinical["record_date"] <= extract)
    ]
    repeat = _in_window(back_pain, w, "repeat_start", "window_end")
    active = back_pain.loc[back_pain["source_table"] == "conditions"].merge(w, on="patient")
    active = active.loc[
        (active["record_date"] >= active["window_start"])
        & (active["record_date"] <= active["index_date"])
        & (active["stop_date"].isna() | (active["stop_date"] >= active["persistence_date"]))
        & (active["persistence_date"] <= active["observation_end_date"])
        & (
            active["first_metastasis_date"].isna()
            | (active["persistence_date"] < active["first_metastasis_date"])
        )
    ]
    out["flag_persistent_pain"] = fired(pd.concat([repeat[key], active[key]]))
    out["flag_breast_cancer_history"] = ep["has_breast_cancer_history"].to_numpy()
    out["flag_age_50_plus"] = (w["age_at_index"] >= 50).to_numpy()

    if t.observations is not None:
        obs = t.observations
        weights = obs.loc[(obs["concept"] == "body_weight") & (obs["value"] > 0)]
        before = weights.merge(w[key], on="patient")
        before = before.loc[
            (before["record_date"] >= before["index_date"] - _days(s.weight_baseline_days))
            & (before["record_date"] < before["index_date"])
        ]
        baseline = before.groupby(key)["value"].max().rename("baseline")
        latest = (
            _in_window(weights, w, "window_start", "window_end")
            .sort_values([*key, "recorded_at", "value"], kind="stable")
            .groupby(key)["value"]
            .last()
            .rename("latest")
        )
        change = pd.concat([baseline, latest], axis=1, join="inner")
        # exact decimal comparison: (baseline - latest) >= baseline * fraction, in scaled integers
        fraction = round(s.weight_loss_fraction * 1_000_000)
        lost = (change["baseline"] - change["latest"]) * 1_000_000 >= change["baseline"] * fraction
        out["flag_weight_loss"] |= fired(change.loc[lost].reset_index())
        alp = obs.loc[
            (obs["concept"] == "alkaline_phosphatase")
            & (obs["value"] > s.alp_upper_limit * DECIMAL_SCALE)
        ]
        out["flag_elevated_alp"] = fired(_in_window(alp, w, "window_start", "window_end"))
    else:  # an absent optional file makes its flags not ascertainable, never false
        out["flag_weight_loss"] = None
        out["flag_elevated_alp"] = None

    if t.medications is not None:
        meds = _in_window(t.medications, w, "index_date", "window_end")
        first_plain = (
            meds.loc[meds["concept"] == "non_opioid_analgesic"].groupby(key)["record_date"].min()
        )
        last_opioid = meds.loc[meds["concept"] == "opioid"].groupby(key)["record_date"].max()
        both = pd.concat(
            [first_plain.rename("plain"), last_opioid.rename("opioid")], axis=1, join="inner"
        )
        out["flag_failed_conservative_therapy"] = fired(
            both.loc[both["opioid"] > both["plain"]].reset_index()
        )
    else:
        out["flag_failed_conservative_therapy"] = None
    if s.landmark_days < s.persistence_days:  # persistence cannot be known at an earlier landmark
        out["flag_persistent_pain"] = None

    for flag in FLAGS:
        out[f"flag_{flag}"] = out[f"flag_{flag}"].astype("boolean")
    out["red_flag_count"] = sum(out[f"flag_{f}"].fillna(False).astype(int) for f in SEED_FLAGS)
    return out


def flag_counts(ep: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """2x2 counts per subgroup and rule, in the landmark population with a known reference standard."""
    in_population = (ep["is_in_landmark_population"] & ep["reference_standard"].notna()).to_numpy()
    data = flags.loc[in_population].reset_index(drop=True)
    truth = ep.loc[in_population, "reference_standard"].to_numpy(dtype=bool)
    members = {
        "all": np.ones(len(data), dtype=bool),
        "breast_cancer_history": ep.loc[in_population, "has_breast_cancer_history"].to_numpy(
            dtype=bool
        ),
        "female": (ep.loc[in_population, "sex"] == "F").to_numpy(),
    }
    tests = {f"flag_{f}": data[f"flag_{f}"] for f in FLAGS}
    tests["any_seed_flag"] = (data["red_flag_count"] >= 1).astype("boolean")
    tests["two_or_more_seed_flags"] = (data["red_flag_count"] >= 2).astype("boolean")
    rows = []
    for subgroup in SUBGROUPS:
        for rule, test in tests.items():
            known = members[subgroup] & test.notna().to_numpy()
            positive = test.fillna(False).to_numpy(dtype=bool)
            rows.append(
                {
                    "subgroup": subgroup,
                    "rule": rule,
                    "tp": int((known & positive & truth).sum()),
                    "fp": int((known & positive & ~truth).sum()),
                    "fn": int((known & ~positive & truth).sum()),
                    "tn": int((known & ~positive & ~truth).sum()),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- command line


def summarise(result: BaselineResult, seconds: float) -> dict:
    cohort_ = result.cohort
    return {
        "seconds": round(seconds, 3),
        "stage_seconds": result.seconds,
        "rows_read": result.rows_read,
        "cohort_size": len(cohort_),
        "landmark_population": int(cohort_["is_in_landmark_population"].sum()),
        "outcomes": int(cohort_["outcome_date"].notna().sum()),
        "attrition": result.attrition.to_dict(orient="records"),
        "flag_counts": result.flag_counts.to_dict(orient="records"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="folder of Synthea CSV files")
    parser.add_argument("--json", type=Path, help="write the summary here instead of printing it")
    parser.add_argument("--chunksize", type=int, default=2_000_000, help="rows per CSV chunk")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result = run_baseline(args.export, chunksize=args.chunksize)
    text = json.dumps(summarise(result, time.perf_counter() - t0), indent=2, default=str)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
