"""Planted parameters of the synthetic generator: what the SQL models and statistics must recover.

Pure Python (no numpy) so the CLI can build its parser quickly. Values come from the
defaults below, a TOML file (`--planted FILE.toml`) and `--set name=value` overrides,
in that order. Flag rates are nested: `flags.night_pain.sensitivity = 0.4`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import UserFacingError
from pipelines.flags import FLAGS

# Ordinary episodes: followed to the horizon, diagnosed, dying or lost before the horizon.
REGULAR_SCENARIOS = ("case", "control", "death", "lost_to_follow_up")
# One protocol edge case each, with a known expected result (docs/generator.md).
EDGE_SCENARIOS = (
    "washout_index_moves",
    "washout_not_incident",
    "pre_study_only",
    "prior_episode_outside_washout",
    "minor",
    "turns_18_on_index",
    "short_lookback",
    "lookback_exactly_365",
    "prevalent_metastasis",
    "leakage",
    "early_repeat_visits",
    "repeat_on_day_28",
    "outcome_after_horizon",
)
SCENARIOS = ("background", *REGULAR_SCENARIOS, *EDGE_SCENARIOS)


# Treatments planted after diagnosis (value-set concepts of care_after_diagnosis.csv)
CARE_CATEGORIES = (
    "chemotherapy",
    "endocrine_therapy",
    "radiotherapy",
    "bone_targeted_agent",
    "corticosteroid",
)


class PlantedParameterError(UserFacingError, ValueError):
    """Generator arguments or planted parameters that cannot be generated (unknown name, impossible value)."""


@dataclass(frozen=True)
class FlagRate:
    """Planted accuracy of one red flag among episodes with a reference standard."""

    sensitivity: float
    specificity: float


def _default_flags() -> dict[str, FlagRate]:
    # Loosely after the literature (clinical-anchors.md section 1): history of cancer
    # strong, the rest weak; tenderness is rarely coded at all.
    rates = {
        "persistent_pain": (0.50, 0.81),
        "night_pain": (0.40, 0.85),
        "weight_loss": (0.30, 0.94),
        "neuro_symptoms": (0.30, 0.95),
        "spinal_tenderness": (0.10, 0.99),
        "breast_cancer_history": (0.70, 0.98),
        "age_50_plus": (0.77, 0.71),
        "failed_conservative_therapy": (0.31, 0.90),
        "elevated_alp": (0.62, 0.86),
    }
    return {k: FlagRate(*v) for k, v in rates.items()}


@dataclass(frozen=True)
class PlantedParameters:
    """Every planted quantity, with its default (see docs/generator.md)."""

    extract_date: dt.date = dt.date(2025, 12, 31)  # latest date in the export; no wall clock
    study_start_date: dt.date = dt.date(2015, 1, 1)  # must match StudySettings.study_start_date
    episode_fraction: float = 0.25  # patients with an ordinary incident back-pain episode
    case_fraction: float = 0.05  # of those: bone metastasis diagnosed within the horizon
    death_fraction: float = 0.03  # of the non-cases: death before the horizon
    lost_fraction: float = 0.05  # of the non-cases: last encounter before the horizon
    edge_case_fraction: float = 0.003  # patients per edge-case scenario (at least 2 per chunk)
    diagnosis_median_days: float = 90.0  # lognormal time from index to diagnosis (Levack 2002)
    diagnosis_sigma: float = 0.8  # lognormal shape (log-scale SD)
    female_fraction_cases: float = 0.95
    female_fraction_others: float = 0.55
    family_history_fraction: float = 0.08  # episodes with a FAMILY history record (must not count)
    decoy_fraction: float = 0.05  # near-miss records that must not set a flag
    icd10_fraction: float = 0.2  # study records coded in ICD-10-CM (layouts with SYSTEM only)
    encounter_reason_fraction: float = 0.15  # index events that are an encounter REASONCODE only
    flags: dict[str, FlagRate] = field(default_factory=_default_flags)
    # After diagnosis (PROTOCOL 6.7-6.8; docs/generator.md): each diagnosed episode receives
    # each treatment with its rate, within 60 days of the diagnosis; a skeletal-related event
    # (spinal cord compression, 0-20 days after diagnosis) with logit = intercept + slope x
    # interval/30; death after diagnosis exponential with median survival_median_days at
    # interval 0 and log hazard ratio survival_log_hr_per_30_days per 30 days of interval.
    care_chemotherapy_rate: float = 0.40
    care_endocrine_therapy_rate: float = 0.50
    care_radiotherapy_rate: float = 0.60
    care_bone_targeted_agent_rate: float = 0.45
    care_corticosteroid_rate: float = 0.30
    sre_logit_intercept: float = -2.0
    sre_log_odds_per_30_days: float = 0.30
    survival_median_days: float = 1400.0
    survival_log_hr_per_30_days: float = 0.15

    def __post_init__(self) -> None:
        problems = _validate(self)
        if problems:
            raise PlantedParameterError("invalid planted parameters: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly values (dates as ISO text, flags nested)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.date):
                value = value.isoformat()
            elif f.name == "flags":
                value = {k: dataclasses.asdict(v) for k, v in value.items()}
            out[f.name] = value
        return out


def _validate(p: PlantedParameters) -> list[str]:
    problems = []
    fractions = (
        "episode_fraction",
        "case_fraction",
        "death_fraction",
        "lost_fraction",
        "edge_case_fraction",
        "female_fraction_cases",
        "female_fraction_others",
        "family_history_fraction",
        "decoy_fraction",
        "icd10_fraction",
        "encounter_reason_fraction",
        *(f"care_{c}_rate" for c in CARE_CATEGORIES),
    )
    for name in fractions:
        if not 0 <= getattr(p, name) <= 1:
            problems.append(f"{name} must be between 0 and 1 (got {getattr(p, name)})")
    if p.death_fraction + p.lost_fraction > 1:
        problems.append("death_fraction + lost_fraction must not exceed 1")
    if p.episode_fraction + len(EDGE_SCENARIOS) * p.edge_case_fraction > 0.9:
        problems.append(
            "episode_fraction + edge_case_fraction * number of edge scenarios exceeds 0.9"
        )
    if p.survival_median_days <= 0:
        problems.append("survival_median_days must be positive")
    if not 1 <= p.diagnosis_median_days <= 300 or not 0 < p.diagnosis_sigma <= 3:
        problems.append("diagnosis_median_days must be 1-300 and diagnosis_sigma 0-3")
    if p.study_start_date.year < 1990 or p.extract_date < p.study_start_date + dt.timedelta(
        days=3 * 365
    ):
        problems.append("extract_date must be at least 3 years after study_start_date (>= 1990)")
    # the registry names the flags; the generator plants those it has rates for (the others,
    # e.g. a flag just added to the registry, are never planted: false in the truth)
    unknown = sorted(set(p.flags) - set(FLAGS))
    missing = sorted(set(_default_flags()) - set(p.flags))
    if unknown or missing:
        problems.append(f"flags: unknown {unknown}, missing {missing}")
    for name, rate in p.flags.items():
        if not (0 <= rate.sensitivity <= 1 and 0 <= rate.specificity <= 1):
            problems.append(f"flags.{name}: sensitivity and specificity must be between 0 and 1")
    return problems


def planted_from_mapping(
    values: dict[str, Any], base: PlantedParameters | None = None
) -> PlantedParameters:
    """Parameters from a (nested) mapping of the names above; unknown names are an error."""
    base = base or PlantedParameters()
    names = {f.name for f in dataclasses.fields(PlantedParameters)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise PlantedParameterError(
            f"unknown planted parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    changes = {k: _coerce(k, v, getattr(base, k)) for k, v in values.items()}
    return dataclasses.replace(base, **changes)


def _coerce(name: str, value: Any, default: Any) -> Any:
    if name == "flags":
        return _coerce_flags(value, default)
    if isinstance(default, dt.date):
        try:
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
        except ValueError as exc:
            raise PlantedParameterError(f"{name}: not a date (YYYY-MM-DD): {value!r}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlantedParameterError(f"{name}: expected a number, got {value!r}")
    return float(value)


def _coerce_flags(value: Any, default: dict[str, FlagRate]) -> dict[str, FlagRate]:
    if not isinstance(value, dict):
        raise PlantedParameterError(f"flags: expected a table of flags, got {value!r}")
    out = dict(default)
    for flag, rates in value.items():
        if flag not in out:
            raise PlantedParameterError(f"flags.{flag}: unknown flag; known: {', '.join(FLAGS)}")
        if not isinstance(rates, dict) or set(rates) - {"sensitivity", "specificity"}:
            raise PlantedParameterError(f"flags.{flag}: expected sensitivity and/or specificity")
        merged = dataclasses.asdict(out[flag]) | {
            k: _coerce(f"flags.{flag}.{k}", v, 0.0) for k, v in rates.items()
        }
        out[flag] = FlagRate(**merged)
    return out


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`name=value` strings (dotted names nest) to a mapping; values are read as TOML values."""
    out: dict[str, Any] = {}
    for text in assignments:
        name, sep, raw = text.partition("=")
        if not sep or not name.strip():
            raise PlantedParameterError(f"--set expects name=value, got {text!r}")
        target = out
        *parents, leaf = name.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = _toml_value(raw.strip())
    return out


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # bare text, e.g. a date written without quotes is already TOML


def load_planted(
    path: str | Path | None = None, assignments: list[str] | None = None
) -> PlantedParameters:
    """Defaults, then a TOML file (top level or a [planted] table), then `name=value` overrides."""
    params = PlantedParameters()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PlantedParameterError(f"planted parameter file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise PlantedParameterError(f"{path}: not valid TOML: {exc}") from exc
        if set(data) == {"planted"} and isinstance(data["planted"], dict):
            data = data["planted"]
        params = planted_from_mapping(data, params)
    if assignments:
        params = planted_from_mapping(parse_assignments(assignments), params)
    return params
