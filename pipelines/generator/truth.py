"""The planted truth: one row per back-pain patient (`truth_episodes.csv`) and a summary (`truth.json`).

Expected cohort values are stated for the protocol's default settings (washout, lookback
and horizon 365 days, landmark and persistence 42, minimum age 18, both sexes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.flags import FLAGS, SEED_FLAGS
from pipelines.generator import catalog as cat
from pipelines.generator.params import SCENARIOS
from pipelines.generator.planting import PERSISTENCE
from pipelines.generator.population import EXCLUDED_STEP, HORIZON, LANDMARK, NO_INCIDENT, Population
from pipelines.generator.records import NEVER

STEPS = (  # (step, description, scenarios excluded at it)
    ("all_patients", "patients in the export", ()),
    ("back_pain_record", "patients with any back-pain record", ("background",)),
    (
        "incident_episode",
        "incident back-pain episode on/after study_start_date (washout 365 days)",
        NO_INCIDENT,
    ),
    ("age", "age >= 18 at index", ("minor",)),
    ("sex", "sex in F, M", ()),
    ("lookback", ">= 365 days of prior observation", ("short_lookback",)),
    ("no_prevalent_outcome", "no bone metastasis on or before index", ("prevalent_metastasis",)),
)
_BACK_PAIN_CODES = [c.code for c in cat.BACK_PAIN_CONDITIONS]


def episode_truth(pop: Population, patient_ids: np.ndarray) -> pd.DataFrame:
    """Expected result for every patient with a back-pain record in the chunk."""
    rows = np.flatnonzero(pop.index < NEVER)
    included = pop.evidence["is_included"][rows]
    index, death, outcome = pop.index[rows], pop.death[rows], pop.outcome[rows]
    obs_end = np.where(death < NEVER, death, pop.last_day[rows])
    horizon_end = index + HORIZON
    censor = np.minimum(np.minimum(death, obs_end), horizon_end)
    has_outcome = (outcome < NEVER) & (outcome <= censor)
    follow_end = np.where(has_outcome, outcome, censor)
    end_reason = np.select(
        [has_outcome, death <= censor, obs_end < horizon_end],
        ["bone_metastasis", "death", "end_of_observation"],
        "horizon",
    )
    landmark = index + LANDMARK
    in_landmark = (
        ~(has_outcome & (outcome <= landmark)) & ~(death <= landmark) & (obs_end >= landmark)
    )
    # Only in the landmark population (PROTOCOL 6.3): outcome within the horizon; else death before
    # the horizon or observation to it; NULL when observation ends before the horizon (censored).
    negative = in_landmark & ~has_outcome & ((death <= horizon_end) | (obs_end >= horizon_end))
    reference = np.where(in_landmark & has_outcome, "true", np.where(negative, "false", ""))
    step = np.array(["included"] * rows.size, dtype=object)
    for name, expected in EXCLUDED_STEP.items():
        step[pop.scenario[rows] == SCENARIOS.index(name)] = expected
    step[np.isin(pop.scenario[rows], [SCENARIOS.index(s) for s in NO_INCIDENT])] = (
        "incident_episode"
    )
    df = pd.DataFrame(
        {
            "patient_id": patient_ids[rows].astype(str),
            "scenario": np.array(SCENARIOS)[pop.scenario[rows]],
            "expected_step": step,
            "index_date": _dates(np.where(step == "incident_episode", NEVER, index)),
            "index_source": np.where(
                pop.evidence["index_by_reason"][rows], "encounter_reason", "condition"
            ),
            "index_code": np.array(_BACK_PAIN_CODES)[pop.evidence["index_concept"][rows]],
            "age_at_index": pop.age[rows],
            "sex": np.where(pop.female[rows], "F", "M"),
            "death_date": _dates(death),
            "observation_end_date": _dates(obs_end),
            "follow_up_end_date": _dates(follow_end),
            "end_reason": end_reason,
            "outcome_date": _dates(np.where(has_outcome, outcome, NEVER)),
            "days_to_outcome": pd.Series(np.where(has_outcome, outcome - index, 0))
            .astype("Int64")
            .where(has_outcome),
            "days_to_follow_up_end": follow_end - index,
            "is_in_landmark_population": in_landmark,
            "reference_standard": reference,
        }
    )
    for flag in FLAGS:
        df[f"flag_{flag}"] = _planted(pop, flag)[rows]
    df["red_flag_count"] = sum(_planted(pop, f)[rows].astype(int) for f in SEED_FLAGS)
    df["weight_loss_coded"] = pop.evidence["weight_loss_coded"][rows]
    df["weight_loss_measured"] = pop.evidence["weight_loss_measured"][rows]
    df["persistence_mechanism"] = np.array(PERSISTENCE)[pop.evidence["persistence_mechanism"][rows]]
    df["has_family_history_record"] = pop.evidence["has_family_history_record"][rows]
    for name in [k for k in pop.evidence if k.startswith("planted_")]:  # after diagnosis
        df[name] = pop.evidence[name][rows]
    df["first_spine_imaging_date"] = _dates(pop.evidence["imaging_day"][rows])
    df["first_spine_imaging_modality"] = np.where(
        pop.evidence["imaging_modality"][rows] >= 0,
        np.array(cat.IMAGING_MODALITIES)[pop.evidence["imaging_modality"][rows]],
        "",
    )
    df["outcome_record_count"] = pop.evidence["outcome_records"][rows]
    return _blank_excluded(df, included)


def _planted(pop: Population, flag: str) -> np.ndarray:
    """The planted values of one registry flag; all false for a flag the generator does not
    plant (it writes none of its codes)."""
    return pop.flags.get(flag, np.zeros(pop.age.size, dtype=bool))


def _dates(days: np.ndarray) -> np.ndarray:
    out = np.asarray(days).astype("datetime64[D]").astype(str).astype(object)
    out[np.asarray(days) >= NEVER] = ""
    return out


def _blank_excluded(df: pd.DataFrame, included: np.ndarray) -> pd.DataFrame:
    """Cohort columns only for episodes that enter the cohort."""
    cohort_cols = [
        c
        for c in df.columns
        if c
        not in (
            "patient_id",
            "scenario",
            "expected_step",
            "index_date",
            "index_source",
            "index_code",
            "age_at_index",
            "sex",
            "death_date",
            "outcome_record_count",
        )
    ]
    df = df.astype({c: object for c in cohort_cols})
    df.loc[~included, cohort_cols] = ""
    return df


def write_episodes(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for col in out.columns:
        out[col] = out[col].map(
            lambda v: (
                "true"
                if v is True or v is np.True_
                else "false"
                if v is False or v is np.False_
                else v
            )
        )
    out.to_csv(path, index=False, na_rep="", lineterminator="\n")


def attrition(scenario_counts: dict[str, int], patients: int) -> list[dict[str, Any]]:
    """Expected attrition under default settings (each edge case fails exactly one step)."""
    out, remaining = [], patients
    for order, (step, description, excluded_at) in enumerate(STEPS, start=1):
        excluded = sum(scenario_counts.get(s, 0) for s in excluded_at)
        remaining -= excluded
        out.append(
            {
                "step_order": order,
                "step": step,
                "description": description,
                "n_remaining": remaining,
                "n_excluded": excluded,
            }
        )
    return out


def flag_accuracy(df: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """Expected 2x2 counts per flag among the landmark population with a reference standard."""
    data = df[
        df["is_in_landmark_population"].eq(True) & df["reference_standard"].isin(["true", "false"])
    ]
    truth = data["reference_standard"] == "true"
    subgroups = {
        "all": data.index == data.index,
        "female": data["sex"] == "F",
        "breast_cancer_history": data["flag_breast_cancer_history"].eq(True),
    }
    rules = {f"flag_{f}": data[f"flag_{f}"].eq(True) for f in FLAGS}
    rules["any_seed_flag"] = data["red_flag_count"].astype(int) >= 1
    rules["two_or_more_seed_flags"] = data["red_flag_count"].astype(int) >= 2
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, member in subgroups.items():
        member = np.asarray(member, dtype=bool)
        out[name] = {
            rule: {
                "tp": int((member & pos & truth).sum()),
                "fp": int((member & pos & ~truth).sum()),
                "fn": int((member & ~pos & truth).sum()),
                "tn": int((member & ~pos & ~truth).sum()),
            }
            for rule, pos in rules.items()
        }
    return out


def cohort_summary(df: pd.DataFrame) -> dict[str, Any]:
    cohort = df[df["expected_step"] == "included"]
    days = pd.to_numeric(cohort["days_to_outcome"], errors="coerce").dropna()
    return {
        "episodes": len(cohort),
        "end_reasons": {
            k: int(v) for k, v in cohort["end_reason"].value_counts().sort_index().items()
        },
        "outcomes_within_follow_up": int((cohort["end_reason"] == "bone_metastasis").sum()),
        "median_days_to_outcome": float(days.median()) if len(days) else None,
        "landmark_population": int(cohort["is_in_landmark_population"].eq(True).sum()),
        "reference_standard": {
            k: int((cohort["reference_standard"] == v).sum())
            for k, v in (("true", "true"), ("false", "false"), ("unknown", ""))
        },
    }


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def code_lists() -> dict[str, list[str]]:
    """The planted codes, for readers of truth.json."""
    return {
        "back_pain": sorted(cat.BACK_PAIN_CODES),
        "bone_metastasis": sorted(cat.BONE_METASTASIS_CODES),
        "night_pain": [cat.NIGHT_PAIN.code],
        "weight_loss": [cat.WEIGHT_LOSS.code, cat.WEIGHT_LOSS_ICD10.code, cat.WEIGHT.code],
        "neuro_symptoms": [c.code for c in (*cat.NEURO_SYMPTOMS, *cat.NEURO_SYMPTOMS_ICD10)],
        "spinal_tenderness": [cat.SPINAL_TENDERNESS.code],
        "breast_cancer": [c.code for c in (cat.BREAST_CANCER, *cat.BREAST_CANCER_ICD10)],
        "family_history_not_counted": [
            cat.FAMILY_HISTORY_BREAST_CANCER.code,
            cat.FAMILY_HISTORY_ICD10.code,
        ],
        "non_opioid_analgesic": [c.code for c in cat.NON_OPIOID_ANALGESICS],
        "opioid": [c.code for c in cat.OPIOIDS],
        "alkaline_phosphatase": [cat.ALP.code],
        "spine_imaging_procedures": [k.procedure.code for k in cat.SPINE_IMAGING.values()],
    }
