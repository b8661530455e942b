"""Every study parameter in one typed, frozen object (PROTOCOL.md names and defaults).

Load with `load_settings(path)` from a TOML file whose keys are the protocol's parameter
names; unknown keys and impossible values raise `SettingsError`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import UserFacingError


class SettingsError(UserFacingError, ValueError):
    """A study configuration that cannot be run (a ValueError too, as it always was)."""


@dataclass(frozen=True)
class StudySettings:
    # Cohort (PROTOCOL.md section 3)
    study_start_date: dt.date = dt.date(2015, 1, 1)
    data_extract_date: dt.date | None = None  # None: the latest date in the export
    washout_days: int = 365
    lookback_days: int = 365
    min_age: int = 18
    sexes: tuple[str, ...] = ("F", "M")
    allow_repeat_episodes: bool = False
    horizon_days: int = 365
    # Red flags (section 5)
    landmark_days: int = 42
    persistence_days: int = 42
    early_repeat_days: int = 28  # "a repeat visit in the first 4 weeks does not count"
    flag_lookback_days: int = 365
    weight_loss_fraction: float = 0.05
    weight_baseline_days: int = 365
    alp_upper_limit: float = 147.0
    # Analyses (section 6)
    cumulative_incidence_days: tuple[int, ...] = (30, 90, 180, 365)
    decision_thresholds: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 21))
    cv_folds: int = 5
    random_seed: int = 20261123
    confidence_level: float = 0.95
    # Model validation (section 6.3; docs/statistics.md 5a): Harrell's bootstrap optimism
    # correction with this many replicates (each one tunes the L2 penalty by inner cv_folds
    # CV over the grid of C = 1/penalty); the events-per-variable rule warns below epv_warn
    # and refuses (the subgroup model is not fitted) below epv_refuse
    validation_bootstraps: int = 100
    validation_penalty_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    epv_warn: float = 10.0
    epv_refuse: float = 5.0
    # Care after diagnosis and prognosis (sections 6.7-6.8)
    care_window_days: int = 90  # care counted from the diagnosis date to this many days after
    sre_window_days: int = 30  # skeletal-related event at presentation: diagnosis +/- these days
    # Disclosure control (section 7)
    min_cell: int = 11
    # Rounding of every released count after suppression: "none", or a base such as "5"
    # (TOML may give the number 5); never shows 1..min_cell-1 (docs/statistics.md 7)
    rounding: str = "none"
    # Which sensitivity analyses to run (section 6.4); empty to skip them
    sensitivity_analyses: tuple[str, ...] = field(
        default=("landmark_0", "persistence_28", "washout_180")
    )

    def __post_init__(self) -> None:
        problems = list(_validate(self))
        if problems:
            raise SettingsError("invalid study settings: " + "; ".join(problems))

    @property
    def rounding_base(self) -> int:
        """The rounding base, 0 for none."""
        return 0 if self.rounding == "none" else int(self.rounding)

    def replace(self, **changes: Any) -> StudySettings:
        """A copy with some parameters changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Parameters as JSON-friendly values, for run records."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.date):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def sql_parameters(self) -> dict[str, Any]:
        """Scalar parameters SQL models may bind by name ($name)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not isinstance(getattr(self, f.name), tuple)
        }


# Sane bounds of every whole-number parameter: a value past them is a typo, and the SQL
# (date arithmetic, INTEGER columns) would fail on it half-way through a run, e.g.
# horizon_days = 9000000000. 36,500 days is 100 years.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "washout_days": (0, 36_500),
    "lookback_days": (0, 36_500),
    "horizon_days": (0, 36_500),
    "landmark_days": (0, 36_500),
    "persistence_days": (0, 36_500),
    "early_repeat_days": (0, 36_500),
    "flag_lookback_days": (0, 36_500),
    "weight_baseline_days": (0, 36_500),
    "min_age": (0, 150),
    "cv_folds": (2, 100),
    "random_seed": (0, 2**32 - 1),  # numpy's seed range
    "min_cell": (1, 1_000_000),
    "care_window_days": (0, 36_500),
    "sre_window_days": (0, 36_500),
    "validation_bootstraps": (0, 10_000),
}
MAX_ALP_UPPER_LIMIT = 10_000.0  # U/L; the ALP flag's threshold, far above any lab's range


def _validate(s: StudySettings) -> list[str]:
    problems = []
    for name, (low, high) in INT_BOUNDS.items():
        value = getattr(s, name)
        if value < 0 <= low:
            problems.append(f"{name} must not be negative (got {value})")
        elif value < low:
            problems.append(f"{name} must be at least {low} (got {value})")
        elif value > high:
            problems.append(f"{name} must be at most {high:,} (got {value:,})")
    if s.landmark_days > s.horizon_days:
        problems.append(
            f"landmark_days ({s.landmark_days}) must not be longer than horizon_days ({s.horizon_days})"
        )
    if s.early_repeat_days > s.persistence_days:
        problems.append(
            f"early_repeat_days ({s.early_repeat_days}) must not exceed persistence_days ({s.persistence_days})"
        )
    if not 0 < s.weight_loss_fraction < 1:
        problems.append(
            f"weight_loss_fraction must be between 0 and 1 (got {s.weight_loss_fraction})"
        )
    if s.alp_upper_limit <= 0:
        problems.append(f"alp_upper_limit must be positive (got {s.alp_upper_limit})")
    elif s.alp_upper_limit > MAX_ALP_UPPER_LIMIT:
        problems.append(
            f"alp_upper_limit must be at most {MAX_ALP_UPPER_LIMIT:,.0f} (got {s.alp_upper_limit})"
        )
    if s.min_cell < 1:
        problems.append(f"min_cell must be at least 1 (got {s.min_cell})")
    if not (s.rounding == "none" or (s.rounding.isdigit() and int(s.rounding) >= 2)):
        problems.append(
            f"rounding must be 'none' or a whole number of at least 2 (got {s.rounding!r})"
        )
    if not s.sexes or any(x not in ("F", "M") for x in s.sexes):
        problems.append(f"sexes must be a non-empty list of 'F' and/or 'M' (got {list(s.sexes)})")
    if not 0 < s.confidence_level < 1:
        problems.append(f"confidence_level must be between 0 and 1 (got {s.confidence_level})")
    if any(not 0 < d <= s.horizon_days for d in s.cumulative_incidence_days):
        problems.append(
            f"cumulative_incidence_days must lie between 1 and horizon_days ({s.horizon_days})"
            f" (got {list(s.cumulative_incidence_days)})"
        )
    if any(not 0 < t < 1 for t in s.decision_thresholds):
        problems.append("decision_thresholds must lie strictly between 0 and 1")
    if not s.validation_penalty_grid or any(c <= 0 for c in s.validation_penalty_grid):
        problems.append("validation_penalty_grid must be a non-empty list of positive numbers")
    if not 0 <= s.epv_refuse <= s.epv_warn:
        problems.append(
            f"epv_refuse ({s.epv_refuse}) must lie between 0 and epv_warn ({s.epv_warn})"
        )
    if s.data_extract_date is not None and s.data_extract_date < s.study_start_date:
        problems.append("data_extract_date is before study_start_date")
    known = {"landmark_0", "persistence_28", "washout_180"}
    unknown = [a for a in s.sensitivity_analyses if a not in known]
    if unknown:
        problems.append(f"unknown sensitivity analyses {unknown}; known: {sorted(known)}")
    return problems


def _coerce(name: str, value: Any, default: Any) -> Any:
    if name in ("study_start_date", "data_extract_date"):
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError as exc:
                raise SettingsError(f"{name}: not a date (YYYY-MM-DD): {value!r}") from exc
        raise SettingsError(f"{name}: expected a date, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{name}: expected a whole number, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list):
            raise SettingsError(f"{name}: expected a list, got {value!r}")
        if default:  # each element takes the type of the defaults' elements
            return tuple(_coerce(f"{name}[{i}]", v, default[0]) for i, v in enumerate(value))
        return tuple(value)
    if name == "rounding" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # rounding = 5 in TOML: the base, kept as text like "none"
    if isinstance(default, str) and not isinstance(value, str):
        raise SettingsError(f"{name}: expected a string, got {value!r}")
    return value


def settings_from_mapping(
    values: dict[str, Any], base: StudySettings | None = None
) -> StudySettings:
    """Settings from a mapping of protocol parameter names; unknown names are an error."""
    base = base or StudySettings()
    fields = {f.name: f for f in dataclasses.fields(StudySettings)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SettingsError(
            f"unknown parameter(s) {', '.join(_with_suggestion(u, fields) for u in unknown)};"
            f" known parameters: {', '.join(sorted(fields))}"
        )
    changes = {k: _coerce(k, v, getattr(base, k)) for k, v in values.items()}
    return dataclasses.replace(base, **changes)


def _with_suggestion(name: str, known: Iterable[str]) -> str:
    """`name (did you mean x?)` when a known name is close, else `name`."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"{name} (did you mean {close[0]}?)" if close else str(name)


def load_settings(path: str | Path | None) -> StudySettings:
    """Protocol defaults, overridden by a TOML file (top level or a [study] table)."""
    if path is None:
        return StudySettings()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    if "study" in data and isinstance(data["study"], dict) and len(data) == 1:
        data = data["study"]
    try:
        return settings_from_mapping(data)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------- operational limits
# Not study parameters (they do not change results, only what a run refuses to do), but
# recorded here with them so every number the pipeline acts on is in one place.

# A raw table that lost more than this fraction of its rows since the previous successful
# ingest stops the ingest (and so the run) unless `--accept-shrink`: a truncated export
# would otherwise overwrite good results. docs/operations.md, "Shrinking tables".
MAX_ROW_DROP_FRACTION = 0.5
