"""Disclosure specifications of every table that may reach the `release` schema.

Each spec names the count columns, the columns built on them, and the relations an
outsider could use to recover a suppressed count: 2x2 margins (treated as public),
subgroups nested in `all` (female and breast_cancer_history; the complement is virtual),
strata adding up to the overall row, attrition steps, and sensitivity analyses differing
from the primary analysis. Row-level tables have no spec and never reach `release`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from pipelines.stats import coarsen, stard
from pipelines.stats.accuracy import MEASURES
from pipelines.stats.disclosure import (
    Cell,
    Group,
    Linkage,
    Nested,
    Shared,
    TableSpec,
    Withheld,
    identical_rows,
    partition,
    public_totals,
    row_complement,
    row_sums,
    sequence_differences,
)
from pipelines.stats.validation import NET_BENEFIT

NESTED_SUBGROUPS = ("female", "breast_cancer_history")
CELLS = ("tp", "fp", "fn", "tn")
NON_EVENTS = "n_non_events"  # virtual: n - n_events
WINDOW_EVENTS, WINDOW_NON_EVENTS = "window_events", "window_non_events"
# Complementary suppression hides the cheapest cell: censored before died before diagnosed.
TIME_TO_DIAGNOSIS_COST = {"n_censored": 0, "n_died": 1, "n_diagnosed": 2, "n_episodes": 3}


def _rows_where(column: str, value: str):
    """Headline rows (hidden last by complementary suppression): column == value."""

    def headline(frame: pd.DataFrame):
        return (frame[column].astype(str) == value).to_numpy()

    return headline


def _primary_first(frame: pd.DataFrame):
    """Hide a sensitivity analysis's cell before a primary one, a primary subgroup's before
    the primary `all` row (weights of HEADLINE_COST: 0, 1, 2)."""
    primary = (frame["analysis"] == "primary").to_numpy()
    return primary * (1.0 + (frame["subgroup"] == "all").to_numpy())


def margins_public(frame: pd.DataFrame) -> Linkage:
    """A 2x2 table whose margins (cases, non-cases, test positives, negatives) are public."""
    return (
        row_sums(frame, ["tp", "fn"])
        + row_sums(frame, ["fp", "tn"])
        + row_sums(frame, ["tp", "fp"])
        + row_sums(frame, ["fn", "tn"])
    )


def nested_subgroups(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> Linkage:
    """Each nested subgroup plus its virtual complement adds up to the `all` row."""
    linkage = Linkage()
    for child in NESTED_SUBGROUPS:
        linkage += partition(
            frame,
            frame["subgroup"] == "all",
            frame["subgroup"] == child,
            keys,
            columns,
            exhaustive=False,
        )
    return linkage


def threshold_differences(
    frame: pd.DataFrame, order: str, columns: list[str], nested: bool = True
) -> Linkage:
    """Counts of a rule `value >= threshold` over ordered thresholds are cumulative.

    Per subgroup, the difference between any two thresholds (episodes with a score in one
    band [k, k'), of one score or several) is a virtual cell: count(k) = count(k') + band.
    Every band, not only single scores: with count(k+1) suppressed, count(k) - count(k+2)
    would still reveal a small band of two scores. For each nested subgroup, the band of its
    complement is virtual too: band_all = band_child + rest.
    (fn and tn need no bands of their own: with public margins they follow from tp and fp.)
    """
    positions = pd.Series(range(len(frame)), index=frame.index)
    groups: list[Group] = []
    virtual: dict[Cell, float] = {}
    bands: dict[tuple, Cell] = {}
    thresholds = frame[order].to_numpy()
    for sub, block in positions.groupby(frame["subgroup"], sort=False):
        ordered = block.iloc[frame.loc[block.index, order].to_numpy().argsort(kind="stable")]
        rows = ordered.tolist()
        for col in columns:
            values = frame[col].to_numpy(dtype=float, na_value=float("nan"))
            for i, low in enumerate(rows):
                for high in rows[i + 1 :]:
                    band = values[low] - values[high]
                    if band != band:  # NaN: not a released count
                        continue
                    key = (thresholds[low], thresholds[high])
                    cell: Cell = (("band", sub, *key), col)
                    virtual[cell] = float(band)
                    bands[(sub, key, col)] = cell
                    groups.append(Group(((high, col), cell), (low, col)))
    for (sub, key, col), cell in list(bands.items()) if nested else ():
        if sub not in NESTED_SUBGROUPS or ("all", key, col) not in bands:
            continue
        parent = bands[("all", key, col)]
        rest: Cell = (("band_rest", sub, *key), col)
        virtual[rest] = virtual[parent] - virtual[cell]
        groups.append(Group((cell, rest), parent))
    return Linkage(tuple(groups), virtual)


def _flag_accuracy(frame: pd.DataFrame) -> Linkage:
    return margins_public(frame) + nested_subgroups(frame, ["rule"], list(CELLS))


def _roc_points(frame: pd.DataFrame) -> Linkage:
    return (
        margins_public(frame)
        + nested_subgroups(frame, ["threshold"], list(CELLS))
        + threshold_differences(frame, "threshold", ["tp", "fp"])
    )


def _performance(keys: list[str]):
    def linkage(frame: pd.DataFrame) -> Linkage:
        return row_complement(frame, "n", "n_events", NON_EVENTS) + nested_subgroups(
            frame, keys, ["n", "n_events"]
        )

    return linkage


def _calibration(frame: pd.DataFrame) -> Linkage:
    return row_complement(frame, "n", "n_events", NON_EVENTS) + public_totals(
        frame, ["subgroup"], ["n", "n_events"]
    )


def _decision_curve(frame: pd.DataFrame) -> Linkage:
    """Each subgroup has its own model, so tp/fp of two subgroups are not nested (n and
    n_events are); thresholds of one model are cumulative."""
    return (
        row_complement(frame, "n", "n_events", NON_EVENTS)
        + identical_rows(frame, ["subgroup"], ["n", "n_events"])
        + nested_subgroups(frame, ["threshold"], ["n", "n_events"])
        + threshold_differences(frame, "threshold", ["tp", "fp"], nested=False)
    )


def _strata(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> Linkage:
    overall = frame["stratum_variable"] == "overall"
    linkage = Linkage()
    for variable in ("red_flag_count", "breast_cancer_history"):
        linkage += partition(frame, overall, frame["stratum_variable"] == variable, keys, columns)
    return linkage


def _time_to_diagnosis(frame: pd.DataFrame) -> Linkage:
    """Numbers at risk are always rounded, so they add up to nothing exactly: no relation."""
    counts = ["n_episodes", "n_diagnosed", "n_died", "n_censored"]
    return row_sums(frame, ["n_diagnosed", "n_died", "n_censored"], "n_episodes") + _strata(
        frame, [], counts
    )


def _diagnostic_pathway(frame: pd.DataFrame) -> Linkage:
    measure, category = frame["measure"], frame["category"]
    linkage = Linkage()
    for m in ("days_onset_to_first_imaging", "first_modality"):
        linkage += partition(
            frame,
            (measure == m) & (category == "all"),
            (measure == m) & (category != "all"),
            [],
            ["n"],
        )
    imaged_before_diagnosis = (measure == "days_imaging_to_diagnosis") & (category == "all")
    no_imaging = (measure == "first_modality") & (category == "none")
    return linkage + partition(
        frame,
        (measure == "first_modality") & (category == "all"),
        imaged_before_diagnosis | no_imaging,
        [],
        ["n"],
    )


def _attrition(frame: pd.DataFrame) -> Linkage:
    return sequence_differences(frame, "step_order", "n_remaining", "n_excluded")


SENSITIVITY_COUNTS = ("n_episodes", "n_events", NON_EVENTS, *CELLS)
POPULATION_COUNTS = ("n_episodes", "n_events", NON_EVENTS)
# Which sensitivity analyses count nested populations of the primary one, and for which
# counts (study.SENSITIVITY_VARIANTS; defaults washout 365, persistence 42, landmark 42 days):
# - washout_180: every episode incident after a 365-day washout is incident after 180 days,
#   with the same index date and flags: every count differs by the episodes it adds;
# - persistence_28: the same episodes; a flag persistent for 42 days is persistent for 28,
#   so the positives of a rule differ by the episodes the shorter rule adds;
# - landmark_0: everyone in the landmark population at day 42 is in it at day 0 (episodes,
#   events, non-events nested), but flags are read up to the landmark, so the 2x2 cells are
#   net differences (added minus lost), not counts of episodes, and are not declared.
SENSITIVITY_NESTING = {
    "washout_180": SENSITIVITY_COUNTS,
    "persistence_28": SENSITIVITY_COUNTS,
    "landmark_0": POPULATION_COUNTS,
}
SENSITIVITY_NESTED = (
    *(
        Nested("subgroup", "all", child, ("analysis", "rule"), SENSITIVITY_COUNTS)
        for child in NESTED_SUBGROUPS
    ),
    *(
        Nested("analysis", analysis, "primary", ("subgroup", "rule"), counts)
        for analysis, counts in SENSITIVITY_NESTING.items()
    ),
)


SCORE_RULE, MODEL_RULE = "red_flag_count", "model"


def _score_within_model(frame: pd.DataFrame) -> Linkage:
    """Per analysis and subgroup, the score's AUROC row counts the model row's population
    (the episodes with a known score: all of them on generated data): n_episodes and n_events
    of the `red_flag_count` row plus a remainder (the episodes without a score, virtual and
    sensitive when not 0) equal the `model` row's. Without it a count hidden in one row and
    shown in the other is given back by the other (docs/statistics.md 7, "The score's
    AUROC row counts the model's population"); the primary rows are also linked across
    tables (SHARED)."""
    auroc = (frame["measure"] == "auroc").to_numpy() & ~frame.duplicated(
        ["analysis", "subgroup", "rule"]
    ).to_numpy()
    rule = frame["rule"].to_numpy()
    return partition(
        frame,
        pd.Series(auroc & (rule == MODEL_RULE)),
        pd.Series(auroc & (rule == SCORE_RULE)),
        ["analysis", "subgroup"],
        ["n_episodes", "n_events"],
    )


def _sensitivity_analyses(frame: pd.DataFrame) -> Linkage:
    """Long format: counts repeat across measures; AUROC rows have no 2x2 (NULL cells).

    Subgroups nested in `all` and analyses nested in the primary one are declared in the
    spec (`SENSITIVITY_NESTED`); the primary rows are aligned with flag_accuracy and the
    AUROC tables (analysis.py); the score's AUROC row is linked to the model's."""
    counts = ["n_episodes", "n_events", *CELLS]
    return (
        row_complement(frame, "n_episodes", "n_events", NON_EVENTS)
        + margins_public(frame)
        + identical_rows(frame, ["analysis", "subgroup", "rule"], counts)
        + _score_within_model(frame)
    )


STRATUM = ("stratum_variable", "stratum")

# ---- clinical tables (issue 14): Table 1, care after diagnosis, prognosis -----------------

KNOWN = "n_known"  # virtual: n_group - n_missing (episodes with the variable known)
NOT_RECEIVED = "n_not_received"  # virtual: n_diagnosed - n_received
NO_SRE = "n_no_sre"  # virtual: n - n_sre
TABLE_ONE_GROUP = ["population", "comparison", "group"]


def _aliases(frame: pd.DataFrame, rows: np.ndarray, column: str) -> Linkage:
    """The marked rows repeat one count (the same episodes): aliases of the first of them."""
    positions = np.flatnonzero(rows)
    if len(positions) < 2:
        return Linkage()
    first = int(positions[0])
    return Linkage(aliases={(int(p), column): (first, column) for p in positions[1:]})


def _table_one(frame: pd.DataFrame) -> Linkage:
    """Long Table 1: levels of a variable plus its missing add up to the group; the groups of
    a comparison add up to `overall`; the landmark population is nested in the cohort (the
    complement is virtual). n_group repeats per group, n_missing per variable."""
    linkage = row_complement(frame, "n_group", "n_missing", KNOWN)
    linkage += identical_rows(frame, TABLE_ONE_GROUP, ["n_group"])
    linkage += identical_rows(frame, [*TABLE_ONE_GROUP, "variable"], ["n_missing"])
    categorical = frame["count"].notna().to_numpy()
    groups = []
    positions = pd.Series(range(len(frame)), index=frame.index)[categorical]
    for _, block in positions.groupby(
        [frame.loc[categorical, k] for k in [*TABLE_ONE_GROUP, "variable"]], sort=False
    ):
        rows = block.tolist()
        parts = (*((r, "count") for r in rows), (rows[0], "n_missing"))
        groups.append(Group(parts, (rows[0], "n_group")))
    linkage += Linkage(tuple(groups))
    columns = ["count", "n_group", "n_missing"]
    overall = frame["comparison"] == "overall"
    for comparison in ("reference_standard", "breast_cancer_history"):
        linkage += partition(
            frame,
            overall,
            frame["comparison"] == comparison,
            ["population", "variable", "level"],
            columns,
        )
    cohort, landmark = frame["population"] == "cohort", frame["population"] == "landmark"
    for comparison in ("overall", "breast_cancer_history"):  # same groups in both populations
        same = frame["comparison"] == comparison
        linkage += partition(
            frame, cohort & same, landmark & same, ["group", "variable", "level"], columns
        )
    return linkage


def _care(frame: pd.DataFrame) -> Linkage:
    """Every care category counts the same diagnosed episodes (n_diagnosed repeats)."""
    return row_complement(frame, "n_diagnosed", "n_received", NOT_RECEIVED) + _aliases(
        frame, np.ones(len(frame), dtype=bool), "n_diagnosed"
    )


def _presentation(frame: pd.DataFrame) -> Linkage:
    third = frame["interval_third"] != "all"
    return row_complement(frame, "n", "n_sre", NO_SRE) + partition(
        frame, frame["interval_third"] == "all", third, [], ["n", "n_sre"]
    )


def _prognosis(frame: pd.DataFrame) -> Linkage:
    """n repeats on every row; deaths on every row but the SRE odds ratio's (SRE events)."""
    deaths = (frame["measure"] != "sre_odds_ratio_per_30_days").to_numpy()
    return (
        row_complement(frame, "n", "n_events", NON_EVENTS)
        + _aliases(frame, np.ones(len(frame), dtype=bool), "n")
        + _aliases(frame, deaths, "n_events")
    )


def clinical_specs() -> dict[str, TableSpec]:
    """Disclosure specs of the clinical aggregate tables (pipelines/clinical.py)."""
    interval = ("proportion", "lower", "upper")
    quartiles = ("median_days", "q1_days", "q3_days")
    return {
        "table_one": TableSpec(
            counts=("n_group", "n_missing", "count"),
            derived={
                "percent": ("count", KNOWN),
                **{c: (KNOWN,) for c in ("median", "q1", "q3")},
                # the SMD compares two groups: hidden with any count of its variable
                # (analysis.hide_smds_of_hidden_counts)
                "smd": (),
            },
            linkage=_table_one,
            hide_cost={"n_missing": 0},
            headline=_rows_where("comparison", "overall"),
            keys=("population", "comparison", "group", "variable", "level"),
        ),
        "care_after_diagnosis_summary": TableSpec(
            counts=("n_diagnosed", "n_received"),
            derived={
                **{c: ("n_received", NOT_RECEIVED) for c in interval},
                **{c: ("n_received",) for c in quartiles},
            },
            linkage=_care,
            hide_cost={"n_diagnosed": 5},
            keys=("care_category",),
        ),
        "presentation_by_interval": TableSpec(
            counts=("n", "n_sre"),
            # extremes are one patient's value: never released
            not_released=("min_interval_days", "max_interval_days"),
            derived={c: ("n_sre", NO_SRE) for c in interval},
            linkage=_presentation,
            headline=_rows_where("interval_third", "all"),
            keys=("interval_third",),
        ),
        # Medians, 1-year survival, hazard and odds ratios rest on their events and
        # non-events: hidden when either is small (docs/statistics.md 7).
        "prognosis_summary": TableSpec(
            counts=("n", "n_events"),
            derived={c: ("n_events", NON_EVENTS) for c in ("estimate", "lower", "upper")},
            linkage=_prognosis,
            keys=("measure",),
        ),
        # Kaplan-Meier: steps pooled to >= min_cell deaths (coarsen.survival_curve).
        "survival_after_diagnosis": TableSpec(
            counts=("at_risk",),
            curve={"at_risk": ("estimate", "lower", "upper")},
            drop_cut_rows=True,
            coarsen=coarsen.survival_curve,
            always_rounded=("at_risk",),
            keys=("day",),
        ),
    }


def _model_validation(frame: pd.DataFrame) -> Linkage:
    """Long format: n / n_events repeat on every row of a subgroup (its one model); the
    nested subgroups' first rows add up within `all`'s first row (complement virtual)."""
    first = ~frame.duplicated(["subgroup"])
    linkage = row_complement(frame, "n", "n_events", NON_EVENTS)
    linkage += identical_rows(frame, ["subgroup"], ["n", "n_events"])
    for child in NESTED_SUBGROUPS:
        linkage += partition(
            frame,
            first & (frame["subgroup"] == "all"),
            first & (frame["subgroup"] == child),
            [],
            ["n", "n_events"],
        )
    return linkage


def validation_specs() -> dict[str, TableSpec]:
    """mart.model_validation (stats/validation.py): estimates resting on the model's events
    and non-events, hidden when either is below min_cell (like model_performance)."""
    values = ("apparent", "optimism", "corrected", "lower", "upper", "events_per_variable")
    return {
        "model_validation": TableSpec(
            counts=("n", "n_events"),
            derived={c: ("n_events", NON_EVENTS) for c in values},
            linkage=_model_validation,
            # The apparent net benefit times n is TP - FP * pt/(1 - pt) of the model fitted
            # on all episodes: with integer TP and FP both can be solved from it, however
            # small, and its optimism would give it back from the corrected value; so neither
            # is released for net benefit (decision_curve releases the pooled
            # cross-validated curve instead).
            withheld=(Withheld(("apparent", "optimism"), "measure", NET_BENEFIT),),
            headline=_rows_where("subgroup", "all"),
            keys=("subgroup", "measure", "threshold"),
        )
    }


def _with_bounds(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for m in names for c in (m, f"{m}_lower", f"{m}_upper"))


def release_specs(cumulative_incidence_days: tuple[int, ...]) -> dict[str, TableSpec]:
    """Disclosure spec per releasable table name, with the counts each shares (SHARED)."""
    specs = _own_specs(cumulative_incidence_days)
    return {
        name: dataclasses.replace(spec, shared=SHARED.get(name, ())) for name, spec in specs.items()
    }


# ---- counts shared across tables (cross-table alignment, disclosure.align_shared) -----------

SUBGROUP = ("subgroup",)
PRIMARY = {"analysis": "primary"}
AUROC_RULES = (SCORE_RULE, MODEL_RULE)
DIAGNOSED, SRE = "cohort_diagnosed", "sre_at_diagnosis"
LANDMARK_N, LANDMARK_EVENTS = "landmark_episodes", "landmark_events"
COHORT_N, COHORT_N_HISTORY = "cohort_episodes", "cohort_episodes_by_history"
# not n / n_events themselves: hiding one must not look like the other hidden (a count of
# 0 events stays shown when n is small), else the keys would hide each other everywhere
MODEL_CURVE = ("tp", "fp", "net_benefit_model", "net_benefit_treat_all")
CALIBRATION_BINS = ("n", "n_events", "mean_predicted", "observed_rate")
SMOOTHED = ("mean_predicted", "observed_smoothed")
T1_COHORT, T1_LANDMARK = {"population": "cohort"}, {"population": "landmark"}


def Kept(*args, **kwargs) -> Shared:  # noqa: N802 - reads as a declaration like Shared
    """A shared count another table headlines: this table hides it last (Shared.keep)."""
    return Shared(*args, **kwargs, keep=True)


def _t1(population: dict, comparison: str, group: str | None = None) -> dict:
    where = {**population, "comparison": comparison}
    return where if group is None else {**where, "group": group}


# Per table, the counts it shares with others: the same key is the same episodes' count.
# - cohort episodes (overall and by breast cancer history): time_to_diagnosis, Table 1;
# - diagnosed episodes in the cohort: time_to_diagnosis, Table 1, care, presentation,
#   prognosis; skeletal-related events at diagnosis: presentation, prognosis;
# - the landmark population and its events per subgroup: score, model, decision curve,
#   the primary AUROC rows of sensitivity_analyses, Table 1's landmark rows; calibration
#   (bins add up to them; smoothed points rest on them) depends on them;
# - each primary 2x2: flag_accuracy and the primary rows of sensitivity_analyses.
# `Kept`: Table 1 repeats counts the older tables headline (the cohort's episodes and
# diagnosed, the landmark population and its events): it picks them last as complements
# and receives their hiding without pushing its own back (Shared.keep; on the demo Table
# 1's complements would otherwise hide the model's, the score's and the overall
# cumulative incidence's `all` rows everywhere).
SHARED: dict[str, tuple[Shared, ...]] = {
    "time_to_diagnosis": (
        Shared(COHORT_N, ("n_episodes",), {"stratum_variable": "overall"}),
        Shared(COHORT_N_HISTORY, ("n_episodes",), {"stratum_variable": "breast_cancer_history"},
               by=("stratum",)),
        Shared(DIAGNOSED, ("n_diagnosed",), {"stratum_variable": "overall"}),
    ),
    "table_one": (
        Kept(COHORT_N, ("n_group",), _t1(T1_COHORT, "overall")),
        Kept(COHORT_N_HISTORY, ("n_group",), _t1(T1_COHORT, "breast_cancer_history"),
               by=("group",)),
        Kept(DIAGNOSED, ("n_group",), _t1(T1_COHORT, "reference_standard", "positive")),
        Kept(LANDMARK_N, ("n_group",), _t1(T1_LANDMARK, "overall"), value=("all",)),
        Kept(LANDMARK_N, ("n_group",), _t1(T1_LANDMARK, "breast_cancer_history", "yes"),
               value=("breast_cancer_history",)),
        Kept(LANDMARK_EVENTS, ("n_group",), _t1(T1_LANDMARK, "reference_standard", "positive"),
               value=("all",)),
    ),
    "care_after_diagnosis_summary": (Shared(DIAGNOSED, ("n_diagnosed",)),),
    "presentation_by_interval": (
        Shared(DIAGNOSED, ("n",), {"interval_third": "all"}),
        Shared(SRE, ("n_sre",), {"interval_third": "all"}),
    ),
    "prognosis_summary": (
        Shared(DIAGNOSED, ("n",)),
        Shared(SRE, ("n_events",), {"measure": "sre_odds_ratio_per_30_days"}),
    ),
    "score_performance": (
        Shared(LANDMARK_N, ("n",), by=SUBGROUP),
        Shared(LANDMARK_EVENTS, ("n_events",), by=SUBGROUP),
    ),
    "model_performance": (
        Shared(LANDMARK_N, ("n",), by=SUBGROUP),
        Shared(LANDMARK_EVENTS, ("n_events",), by=SUBGROUP),
    ),
    "decision_curve": (  # treat-all's step shows n_events as tp: the whole curve goes
        Shared(LANDMARK_N, ("n",), by=SUBGROUP, also_hide=MODEL_CURVE),
        Shared(LANDMARK_EVENTS, ("n_events",), by=SUBGROUP, also_hide=MODEL_CURVE),
    ),
    "calibration": (
        Shared(LANDMARK_N, by=SUBGROUP, also_hide=CALIBRATION_BINS),
        Shared(LANDMARK_EVENTS, by=SUBGROUP, also_hide=CALIBRATION_BINS),
    ),
    "calibration_smoothed": (
        Shared(LANDMARK_N, by=SUBGROUP, also_hide=SMOOTHED),
        Shared(LANDMARK_EVENTS, by=SUBGROUP, also_hide=SMOOTHED),
    ),
    "model_validation": (  # issue 14: the validated model is model_performance's model
        Shared(LANDMARK_N, ("n",), by=SUBGROUP),
        Shared(LANDMARK_EVENTS, ("n_events",), by=SUBGROUP),
    ),
    "reference_interval": (  # STARD 22: n is the reference positives, the landmark events
        Shared(LANDMARK_EVENTS, ("n",), by=SUBGROUP),
    ),
    "flag_accuracy": (Shared("primary_2x2", CELLS, by=("subgroup", "rule")),),
    "sensitivity_analyses": (
        Shared("primary_2x2", CELLS, PRIMARY, by=("subgroup", "rule"),
               also_hide=("n_episodes", "n_events")),
        Shared(LANDMARK_N, ("n_episodes",), {**PRIMARY, "rule": AUROC_RULES}, by=SUBGROUP),
        Shared(LANDMARK_EVENTS, ("n_events",), {**PRIMARY, "rule": AUROC_RULES}, by=SUBGROUP),
    ),
}  # fmt: skip


def _own_specs(cumulative_incidence_days: tuple[int, ...]) -> dict[str, TableSpec]:
    """Each table's own disclosure spec."""
    days = cumulative_incidence_days
    cell_sources = CELLS
    auroc = _with_bounds(("auroc",))
    model_values = (*auroc, "calibration_intercept", "calibration_slope", "brier_score")
    return {
        "time_to_diagnosis": TableSpec(
            counts=(
                "n_episodes",
                "n_diagnosed",
                "n_died",
                "n_censored",
                *(f"at_risk_{d}" for d in days),
            ),
            derived={
                **{c: ("n_diagnosed",) for c in ("median_days", "q1_days", "q3_days")},
                **{c: ("n_diagnosed",) for c in _with_bounds(tuple(f"cif_{d}" for d in days))},
            },
            linkage=_time_to_diagnosis,
            curve={f"at_risk_{d}": _with_bounds((f"cif_{d}",)) for d in days},
            hide_cost=TIME_TO_DIAGNOSIS_COST,
            headline=_rows_where("stratum_variable", "overall"),
            always_rounded=tuple(f"at_risk_{d}" for d in days),
            keys=STRATUM,
        ),
        # Strata's at-risk numbers are rounded, so they add up to nothing exactly; steps are
        # pooled (coarsen.cumulative_incidence) so no small number of diagnoses is between.
        "cumulative_incidence": TableSpec(
            counts=("at_risk",),
            curve={"at_risk": ("estimate", "lower", "upper")},
            drop_cut_rows=True,
            coarsen=coarsen.cumulative_incidence,
            always_rounded=("at_risk",),
            keys=(*STRATUM, "day"),
        ),
        "diagnostic_pathway": TableSpec(
            counts=("n",),
            derived={c: ("n",) for c in ("median_days", "q1_days", "q3_days")},
            linkage=_diagnostic_pathway,
            keys=("measure", "category"),
        ),
        "flag_accuracy": TableSpec(
            counts=CELLS,
            derived={c: cell_sources for c in _with_bounds(MEASURES)},
            linkage=_flag_accuracy,
            headline=_rows_where("subgroup", "all"),
            keys=("subgroup", "rule"),
        ),
        "roc_points": TableSpec(
            counts=CELLS,
            derived={"sensitivity": cell_sources, "false_positive_rate": cell_sources},
            linkage=_roc_points,
            coarsen=coarsen.roc_points,
            headline=_rows_where("subgroup", "all"),
            keys=("subgroup", "threshold"),
        ),
        "score_performance": TableSpec(
            counts=("n", "n_events"),
            derived={c: ("n_events", NON_EVENTS) for c in auroc},
            linkage=_performance(["score"]),
            headline=_rows_where("subgroup", "all"),
            keys=("subgroup", "score"),
        ),
        "model_performance": TableSpec(
            counts=("n", "n_events"),
            derived={c: ("n_events", NON_EVENTS) for c in model_values},
            linkage=_performance([]),
            headline=_rows_where("subgroup", "all"),
            keys=("subgroup",),
        ),
        "calibration": TableSpec(
            counts=("n", "n_events"),
            derived={"mean_predicted": ("n",), "observed_rate": ("n_events", NON_EVENTS)},
            linkage=_calibration,
            coarsen=coarsen.calibration,
            keys=("subgroup", "bin", "bin_to"),
        ),
        # Smoothed observed risk per decile (stats/smooth_calibration.py): shown when its
        # window weighs >= min_cell events and non-events; the weights are never released.
        "calibration_smoothed": TableSpec(
            counts=(WINDOW_EVENTS, WINDOW_NON_EVENTS),
            derived={"mean_predicted": (), "observed_smoothed": (WINDOW_EVENTS, WINDOW_NON_EVENTS)},
            internal=(WINDOW_EVENTS, WINDOW_NON_EVENTS),
            keys=("subgroup", "bin"),
        ),
        "decision_curve": TableSpec(
            counts=("n", "n_events", "tp", "fp"),
            derived={
                "net_benefit_model": ("tp", "fp", "n"),
                "net_benefit_treat_all": ("n_events", NON_EVENTS),
            },
            linkage=_decision_curve,
            coarsen=coarsen.decision_curve,
            headline=_rows_where("subgroup", "all"),
            keys=("subgroup", "threshold"),
        ),
        "sensitivity_analyses": TableSpec(
            counts=("n_episodes", "n_events", *CELLS),
            derived={
                c: ("n_episodes", "n_events", NON_EVENTS, *CELLS)
                for c in ("estimate", "lower", "upper")
            },
            linkage=_sensitivity_analyses,
            nested=SENSITIVITY_NESTED,
            headline=_primary_first,
            keys=("analysis", "subgroup", "rule", "measure"),
        ),
        "attrition": TableSpec(
            counts=("n_remaining", "n_excluded"),
            linkage=_attrition,
            hide_cost={"n_excluded": 0},
            keys=("step_order",),
        ),
        **clinical_specs(),
        **validation_specs(),
        "reference_interval": stard.spec(),
    }
