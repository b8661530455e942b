"""The report's words and page model: labels of the codes, values as text, and the
dataclasses the template renders (pipelines/report/render.py builds the page; pipelines/labels.py,
the other modules of pipelines/report/ and the dashboard use the same words).

Imports nothing of the report, so the report's section modules can share it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.flags import REGISTRY

if TYPE_CHECKING:
    import pandas as pd


# rule -> (label, group); the order is the order of every rule table and figure. The flags
# and their labels come from the registry (valuesets/flags.csv), then the combinations.
RULES = {
    **{f.column: (f.label, "seed" if f.is_seed else "literature") for f in REGISTRY},
    "any_seed_flag": ("Any of the six seed red flags", "combination"),
    "two_or_more_seed_flags": ("Two or more seed red flags", "combination"),
}
GROUP_STYLE = {
    "seed": ("#0072B2", "s"),
    "literature": ("#D55E00", "s"),
    "combination": ("#000000", "D"),
}
STRATUM_LABELS = {
    ("overall", "all"): "All episodes",
    ("red_flag_count", "0"): "No red flag",
    ("red_flag_count", "1"): "1 red flag",
    ("red_flag_count", "2+"): "2 or more red flags",
    ("breast_cancer_history", "yes"): "History of breast cancer",
    ("breast_cancer_history", "no"): "No history of breast cancer",
}
SUBGROUP_LABELS = {
    "all": "all episodes",
    "female": "women",
    "breast_cancer_history": "patients with a history of breast cancer",
}
MEASURE_LABELS = {
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "lr_positive": "LR+",
    "lr_negative": "LR\u2212",
    "diagnostic_odds_ratio": "diagnostic odds ratio",
    "auroc": "AUROC",
}
ANALYSIS_LABELS = {
    "primary": "Primary analysis",
    "landmark_0": "Landmark at day 0 (flags at presentation)",
    "persistence_28": "Persistent pain defined at 28 days",
    "washout_180": "Washout of 180 days",
}
MODALITY_LABELS = {"xray": "X-ray", "ct": "CT", "mri": "MRI", "bone_scan": "Bone scan"}
CIF_DAYS = (30, 90, 180, 365)
# Attrition steps of sql/marts/attrition.sql, in words; {names} are study parameters.
STEP_LABELS = {
    "patients_in_export": "Patients in the export",
    "back_pain_record_from_study_start": "Patients with a back-pain record from {study_start_date}",
    "incident_episode_after_washout": "Incident back-pain episodes (no back pain in the {washout_days} days before)",
    "age_at_least_min_age": "Aged {min_age} or over at index",
    "sex_in_study_sexes": "Sex recorded and in the study ({sexes})",
    "prior_observation_at_least_lookback": "At least {lookback_days} days of prior observation",
    "alive_at_index": "Alive at index",
    "no_prevalent_bone_metastasis": "No bone metastasis on or before index: the study cohort",
    "in_landmark_population": "Alive, under observation and undiagnosed on day {landmark_days} (landmark)",
    "reference_standard_known": "Outcome known to day {horizon_days}: population of the accuracy analyses",
}
MIN_CALIBRATION_BINS = 3
POPULATION_STEPS = ("no_prevalent_bone_metastasis", "reference_standard_known")
KEY_LABELS = {"file": "File", "sha256": "SHA-256", "size_bytes": "Size (bytes)", "rows": "Rows"}
# Okabe-Ito: distinguishable with colour-vision deficiency.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
DASH = "\u2013"
SUPPRESSED = "suppressed"
FIGURE_STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
}


@dataclass
class Released:
    """What the report may see: release tables of one run, its run record, min_cell."""

    tables: dict[str, pd.DataFrame]
    run: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    min_cell: int = 11
    parameters: dict[str, Any] = field(default_factory=dict)
    quality: pd.DataFrame | None = None  # dq.data_quality_profile of the run (counts per check)

    def table(self, name: str) -> pd.DataFrame:
        import pandas as pd

        return self.tables.get(name, pd.DataFrame())


# --- values as text --------------------------------------------------------------------


def none_if_na(value: Any) -> Any:
    try:
        import pandas as pd

        return None if pd.isna(value) else value
    except (TypeError, ValueError):  # lists, dicts
        return value


def parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def is_missing(value: Any) -> bool:
    return none_if_na(value) is None or (isinstance(value, float) and math.isnan(value))


class Fmt:
    """Text for counts, proportions, ratios and days; NULL counts read 'suppressed'.

    Not "<11": complementary suppression also hides larger counts, and which hidden cell
    is the small one must not show.
    """

    suppressed = SUPPRESSED

    def count(self, v: Any) -> str:
        return self.suppressed if is_missing(v) else f"{int(v):,}"

    def pct(self, v: Any, lo: Any = None, hi: Any = None, digits: int = 1) -> str:
        if is_missing(v):
            return DASH
        text = f"{100 * v:.{digits}f}%"
        if not is_missing(lo) and not is_missing(hi):
            text += f" ({100 * lo:.{digits}f}{DASH}{100 * hi:.{digits}f})"
        return text

    def ratio(self, v: Any, lo: Any = None, hi: Any = None) -> str:
        if is_missing(v):
            return DASH
        text = sig_figs(v)
        if not is_missing(lo) and not is_missing(hi):
            text += f" ({sig_figs(lo)}{DASH}{sig_figs(hi)})"
        return text

    def days(self, median: Any, q1: Any = None, q3: Any = None) -> str:
        if is_missing(median):
            return DASH
        text = f"{median:.0f}"
        if not is_missing(q1) and not is_missing(q3):
            text += f" ({q1:.0f}{DASH}{q3:.0f})"
        return text


def sig_figs(v: float) -> str:
    """Ratios to 2-3 significant figures (0.45, 2.8, 15, 120)."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def rule_label(rule: str) -> str:
    if rule in RULES:
        return RULES[rule][0]
    return rule.removeprefix("flag_").replace("_", " ").capitalize()


def stratum_label(variable: str, stratum: str) -> str:
    return STRATUM_LABELS.get((variable, str(stratum)), f"{variable}: {stratum}")


# --- shared by the sections (tables and figures) ------------------------------------


def subgroup_rows(df: pd.DataFrame, subgroup: str) -> pd.DataFrame:
    return df[df["subgroup"] == subgroup] if len(df) and "subgroup" in df else df.iloc[0:0]


def rule_order(rule: str) -> int:
    order = list(RULES)
    return order.index(rule) if rule in order else len(order)


def brier(v: Any) -> str:
    return DASH if is_missing(v) else f"{v:.3f}"


def days_or_none(row: Any, fmt: Fmt) -> str:
    if not is_missing(row["n_diagnosed"]) and row["n_diagnosed"] == 0:
        return "no diagnoses"
    return fmt.days(row["median_days"], row["q1_days"], row["q3_days"])


# --- page model (what the template renders) --------------------------------------------


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    title: str = ""
    first_column_is_header: bool = True
    text_columns: int = 1  # leading columns of words (left-aligned); the rest are numbers

    def __post_init__(self) -> None:
        """A trailing Note column with nothing to say is left out."""
        if self.columns and self.columns[-1] == "Note" and not any(r[-1] for r in self.rows):
            self.columns = self.columns[:-1]
            self.rows = [r[:-1] for r in self.rows]


@dataclass
class Chart:
    """A figure as a data URI, or a notice in words when there is nothing to draw."""

    title: str
    caption: str
    image: str | None = None
    notice: str | None = None
    alt: str = ""
    # the same drawing as files (pipelines/report/figures.py): `image` is these PNG bytes
    png: bytes | None = None
    svg: str | None = None


@dataclass
class Box:
    label: str
    n: str
    excluded: str | None = None
    is_population: bool = False  # the study cohort, or the accuracy analyses' population
    reason: str | None = None  # why the step excludes (STARD 2015 item 19)
