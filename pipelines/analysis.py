"""Statistics over the episode-level marts, and the disclosure-controlled release.

`run_statistics` reads mart.cohort, mart.red_flags and mart.episode_pathway (episode grain),
computes every analysis table of docs/architecture.md with pipelines.stats, and writes
them with a run_id. `sensitivity_rows` / `write_sensitivity_table` build
mart.sensitivity_analyses from schemas built with alternative settings; `build_release`
writes the suppressed copy of every aggregate table into `release`. Methods:
docs/statistics.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd

from pipelines import clinical
from pipelines.flags import FLAGS, SEED_FLAGS
from pipelines.settings import StudySettings
from pipelines.stats import accuracy, model, roc, survival
from pipelines.stats.disclosure import suppress
from pipelines.stats.release_tables import release_specs
from pipelines.warehouse import table_exists

FLAG_COLUMNS = tuple(f"flag_{f}" for f in FLAGS)
SUBGROUPS = ("all", "breast_cancer_history", "female")
SCORE = "red_flag_count"
SCORE_THRESHOLDS = range(0, len(SEED_FLAGS) + 2)  # score >= 0 (everyone) .. >= 7 (no one)
CALIBRATION_BINS = 10
ANALYSIS_TABLES = (
    "time_to_diagnosis",
    "cumulative_incidence",
    "diagnostic_pathway",
    "flag_accuracy",
    "roc_points",
    "score_performance",
    "model_performance",
    "calibration",
    "decision_curve",
)
RELEASED_TABLES = (*ANALYSIS_TABLES, "sensitivity_analyses", "attrition")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")

EPISODES_SQL = """
select
    c.patient_id, c.index_date, c.sex, c.has_breast_cancer_history, c.end_reason,
    c.days_to_follow_up_end, c.days_to_outcome, c.is_in_landmark_population,
    c.reference_standard, c.follow_up_end_date, c.outcome_date,
    {flag_columns}, r.red_flag_count,
    p.first_spine_imaging_date, p.first_spine_imaging_modality, p.is_imaging_ascertainable
from {schema}.cohort as c
left join {schema}.red_flags as r using (patient_id, index_date)
left join {schema}.episode_pathway as p using (patient_id, index_date)
order by c.patient_id, c.index_date
"""


# ---- reading -------------------------------------------------------------------------------


def _schema(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain schema name: {name!r}")
    return name


def load_episodes(con: duckdb.DuckDBPyConnection, schema: str = "mart") -> pd.DataFrame:
    """One row per episode with the columns the statistics need (small: episode grain)."""
    sql = EPISODES_SQL.format(
        schema=_schema(schema), flag_columns=", ".join(f"r.{c}" for c in FLAG_COLUMNS)
    )
    frame = con.execute(sql).df()
    booleans = [
        "has_breast_cancer_history",
        "is_in_landmark_population",
        "reference_standard",
        "is_imaging_ascertainable",
        *FLAG_COLUMNS,
    ]
    numbers = ["days_to_follow_up_end", "days_to_outcome", SCORE]
    return frame.astype({c: "boolean" for c in booleans} | {c: "Float64" for c in numbers})


def subgroup(episodes: pd.DataFrame, name: str) -> pd.DataFrame:
    """Episodes of one analysis subgroup (all, breast_cancer_history, female)."""
    if name == "all":
        return episodes
    if name == "breast_cancer_history":
        return episodes[episodes["has_breast_cancer_history"].fillna(False).to_numpy(bool)]
    if name == "female":
        return episodes[(episodes["sex"] == "F").fillna(False).to_numpy(bool)]
    raise ValueError(f"unknown subgroup {name!r}")


def landmark_population(episodes: pd.DataFrame) -> pd.DataFrame:
    """Alive, observed and undiagnosed at the landmark, with a known reference standard."""
    keep = (
        episodes["is_in_landmark_population"].fillna(False) & episodes["reference_standard"].notna()
    )
    return episodes[keep.to_numpy(bool)]


def rules(episodes: pd.DataFrame) -> dict[str, pd.Series]:
    """Every index test: each flag, any seed flag, two or more seed flags (NA: not ascertainable)."""
    score = episodes[SCORE]
    tests = {c: episodes[c] for c in FLAG_COLUMNS}
    tests["any_seed_flag"] = (score >= 1).astype("boolean")
    tests["two_or_more_seed_flags"] = (score >= 2).astype("boolean")
    return tests


# A subgroup defined by a flag: every rule that is positive whenever that flag is (the flag
# itself, "any seed flag" when it is a seed flag) is positive for everyone in the subgroup,
# so its accuracy there is a tautology (incorporation bias), not a result.
SUBGROUP_DEFINING_FLAG = {"breast_cancer_history": "breast_cancer_history"}
NOT_APPLICABLE_REASON = "not applicable: the rule contains the subgroup's defining flag ({flag})"


def is_incorporated(rule: str, subgroup_name: str) -> bool:
    """True when `rule` is positive for every episode of the subgroup by construction."""
    flag = SUBGROUP_DEFINING_FLAG.get(subgroup_name)
    if flag is None:
        return False
    return rule == f"flag_{flag}" or (rule == "any_seed_flag" and flag in SEED_FLAGS)


# ---- time to diagnosis ---------------------------------------------------------------------


def competing_events(episodes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Days from index to follow-up end and event code (1 outcome, 2 death, 0 censored)."""
    reason = episodes["end_reason"].astype(str).to_numpy()
    event = np.select(
        [reason == "bone_metastasis", reason == "death"], [survival.OUTCOME, survival.DEATH], 0
    )
    return episodes["days_to_follow_up_end"].to_numpy(dtype=float, na_value=np.nan), event


class Stratum(NamedTuple):
    """One curve: its variable and level, its episodes, and its time zero (days after index)."""

    variable: str
    name: str
    episodes: pd.DataFrame
    time_zero_day: int

    @property
    def time_zero(self) -> str:
        return "index_date" if self.time_zero_day == 0 else "landmark"


def strata(episodes: pd.DataFrame, landmark_days: int) -> list[Stratum]:
    """Overall, red_flag_count 0/1/2+, history yes/no (PROTOCOL 6.5).

    red_flag_count uses flags up to the landmark and only before the outcome, so a diagnosis
    before the landmark could only ever sit in the low strata (immortal time): those strata
    start at the landmark, among the episodes alive, observed and undiagnosed there.
    Strata known at index (history) and the overall curve start at the index date.
    """
    history = episodes["has_breast_cancer_history"]
    at_landmark = episodes[episodes["is_in_landmark_population"].fillna(False).to_numpy(bool)]
    score = at_landmark[SCORE]
    return [
        Stratum("overall", "all", episodes, 0),
        Stratum("red_flag_count", "0", at_landmark[(score == 0).fillna(False).to_numpy(bool)], landmark_days),
        Stratum("red_flag_count", "1", at_landmark[(score == 1).fillna(False).to_numpy(bool)], landmark_days),
        Stratum("red_flag_count", "2+", at_landmark[(score >= 2).fillna(False).to_numpy(bool)], landmark_days),
        Stratum("breast_cancer_history", "yes", episodes[history.fillna(False).to_numpy(bool)], 0),
        Stratum("breast_cancer_history", "no", episodes[(~history).fillna(False).to_numpy(bool)], 0),
    ]  # fmt: skip


def time_to_diagnosis_row(
    episodes: pd.DataFrame, settings: StudySettings, time_zero_day: int = 0
) -> dict[str, float]:
    """Counts, median/IQR among the diagnosed, and the CIF with CI and at-risk at fixed days.

    Days are counted from the index date; with a later time zero the curve is conditional on
    being event-free then, and days before it have no estimate (NaN).
    """
    time, event = competing_events(episodes)
    diagnosed = episodes["days_to_outcome"][event == survival.OUTCOME]
    q1, median, q3 = survival.quartiles(diagnosed.astype(float))
    row: dict[str, float] = {
        "n_episodes": len(episodes),
        "n_diagnosed": int(np.sum(event == survival.OUTCOME)),
        "n_died": int(np.sum(event == survival.DEATH)),
        "n_censored": int(np.sum(event == survival.CENSORED)),
        "median_days": median,
        "q1_days": q1,
        "q3_days": q3,
    }
    days = np.array(settings.cumulative_incidence_days)
    at = survival.cumulative_incidence_at(
        time - time_zero_day,
        event,
        days - time_zero_day,
        confidence_level=settings.confidence_level,
    )
    for d, r in zip(days, at.itertuples(), strict=True):
        before = d < time_zero_day
        row |= {
            f"cif_{d}": np.nan if before else r.estimate,
            f"cif_{d}_lower": np.nan if before else r.lower,
            f"cif_{d}_upper": np.nan if before else r.upper,
            f"at_risk_{d}": np.nan if before else int(r.at_risk),
        }
    return row


def time_to_diagnosis_table(episodes: pd.DataFrame, settings: StudySettings) -> pd.DataFrame:
    rows = [
        {
            "stratum_variable": s.variable,
            "stratum": s.name,
            "time_zero": s.time_zero,
            "time_zero_day": s.time_zero_day,
            **time_to_diagnosis_row(s.episodes, settings, s.time_zero_day),
        }
        for s in strata(episodes, settings.landmark_days)
    ]
    out = pd.DataFrame(rows)
    at_risk = [f"at_risk_{d}" for d in settings.cumulative_incidence_days]
    return out.astype({c: "Int64" for c in at_risk})


def cumulative_incidence_table(episodes: pd.DataFrame, settings: StudySettings) -> pd.DataFrame:
    """The daily Aalen-Johansen curve from each stratum's time zero to the horizon.

    `day` counts from the index date; `time_zero` says where the curve starts (index_date, or
    the landmark for strata defined by flags assessed up to it).
    """
    frames = []
    for s in strata(episodes, settings.landmark_days):
        days = np.arange(s.time_zero_day, settings.horizon_days + 1)
        time, event = competing_events(s.episodes)
        curve = survival.cumulative_incidence_at(
            time - s.time_zero_day,
            event,
            days - s.time_zero_day,
            confidence_level=settings.confidence_level,
        )
        curve["day"] = days
        frames.append(
            curve.assign(
                stratum_variable=s.variable,
                stratum=s.name,
                time_zero=s.time_zero,
                time_zero_day=s.time_zero_day,
            )
        )
    out = pd.concat(frames, ignore_index=True)
    out["day"] = out["day"].astype(int)
    columns = ["stratum_variable", "stratum", "time_zero", "time_zero_day", "day"]
    return out[[*columns, "estimate", "lower", "upper", "at_risk"]]


# ---- diagnostic pathway ------------------------------------------------------------------


def _days(later: pd.Series, earlier: pd.Series) -> pd.Series:
    return (pd.to_datetime(later) - pd.to_datetime(earlier)).dt.days.astype(float)


def _summary(measure: str, category: str, values: pd.Series) -> dict[str, object]:
    q1, median, q3 = survival.quartiles(values)
    return {"measure": measure, "category": category, "n": int(values.notna().sum()),
            "median_days": median, "q1_days": q1, "q3_days": q3}  # fmt: skip


def diagnostic_pathway_table(episodes: pd.DataFrame) -> pd.DataFrame:
    """Onset to first spine imaging (by modality), imaging to diagnosis, first modality."""
    known = episodes[episodes["is_imaging_ascertainable"].fillna(False).to_numpy(bool)]
    imaging = known["first_spine_imaging_date"]
    modality = known["first_spine_imaging_modality"]
    onset_to_imaging = _days(imaging, known["index_date"])
    in_follow_up = (onset_to_imaging >= 0) & (imaging <= known["follow_up_end_date"])
    onset_to_imaging = onset_to_imaging.where(in_follow_up)
    rows = [_summary("days_onset_to_first_imaging", "all", onset_to_imaging)]
    for m in ("xray", "ct", "mri", "bone_scan"):
        rows.append(_summary("days_onset_to_first_imaging", m, onset_to_imaging[modality == m]))
    diagnosed = known[(known["end_reason"] == "bone_metastasis").to_numpy(bool)]
    imaging_to_diagnosis = _days(diagnosed["outcome_date"], diagnosed["first_spine_imaging_date"])
    before = (imaging_to_diagnosis >= 0) & (
        diagnosed["first_spine_imaging_date"] >= diagnosed["index_date"]
    )
    imaging_to_diagnosis = imaging_to_diagnosis.where(before)
    rows.append(_summary("days_imaging_to_diagnosis", "all", imaging_to_diagnosis))
    first = diagnosed["first_spine_imaging_modality"].where(before.to_numpy(bool))
    for category in ("all", "xray", "ct", "mri", "bone_scan", "none"):
        n = len(first) if category == "all" else int((first.fillna("none") == category).sum())
        rows.append({"measure": "first_modality", "category": category, "n": n})
    return pd.DataFrame(rows)


# ---- accuracy, ROC, model --------------------------------------------------------------------


def _note(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def flag_accuracy_table(episodes: pd.DataFrame, settings: StudySettings) -> pd.DataFrame:
    """2x2 counts and accuracy measures of every rule, in the landmark population, per subgroup."""
    rows = []
    for name in SUBGROUPS:
        population = landmark_population(subgroup(episodes, name))
        reference = population["reference_standard"]
        for rule, test in rules(population).items():
            table = accuracy.two_by_two(test, reference)
            ascertained = int(test.notna().sum())
            note = _note(
                "not ascertainable" if len(test) and ascertained == 0 else "",
                "partly ascertainable" if 0 < ascertained < len(test) else "",
                "no events" if table.tp + table.fn == 0 else "",
            )
            row = accuracy.accuracy_row(table, settings.confidence_level)
            status = "estimated"
            if is_incorporated(rule, name):
                # counts stay (they are the subgroup's margins); the measures are not published
                status = "not_applicable"
                row |= {c: np.nan for c in row if c not in ("tp", "fp", "fn", "tn")}
                note = _note(NOT_APPLICABLE_REASON.format(flag=SUBGROUP_DEFINING_FLAG[name]), note)
            rows.append({"subgroup": name, "rule": rule, **row, "status": status, "note": note})
    return pd.DataFrame(rows)


def roc_points_table(episodes: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for name in SUBGROUPS:
        population = landmark_population(subgroup(episodes, name))
        points = roc.roc_points(
            population["reference_standard"], population[SCORE], SCORE_THRESHOLDS
        )
        frames.append(points.assign(subgroup=name))
    out = pd.concat(frames, ignore_index=True)
    return out[
        ["subgroup", "threshold", "tp", "fp", "fn", "tn", "sensitivity", "false_positive_rate"]
    ]


def score_performance_table(episodes: pd.DataFrame, settings: StudySettings) -> pd.DataFrame:
    rows = []
    for name in SUBGROUPS:
        population = landmark_population(subgroup(episodes, name))
        known = population[population[SCORE].notna().to_numpy(bool)]
        y = known["reference_standard"].astype(bool).to_numpy()
        est = roc.delong_auroc(y, known[SCORE].to_numpy(dtype=float), settings.confidence_level)
        note = _note("no events" if y.sum() == 0 else "", "no non-events" if y.all() else "")
        rows.append({"subgroup": name, "score": SCORE, "n": y.size, "n_events": int(y.sum()),
                     "auroc": est.auroc, "auroc_lower": est.lower, "auroc_upper": est.upper,
                     "note": note})  # fmt: skip
    return pd.DataFrame(rows)


def fit_model(population: pd.DataFrame, settings: StudySettings) -> model.ModelResult:
    return model.fit_flag_model(
        population[list(FLAG_COLUMNS)],
        population["reference_standard"],
        folds=settings.cv_folds,
        seed=settings.random_seed,
        confidence_level=settings.confidence_level,
    )


def model_tables(
    episodes: pd.DataFrame, settings: StudySettings
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """model_performance, calibration and decision_curve, per subgroup."""
    performance, calibration, decision = [], [], []
    for name in SUBGROUPS:
        population = landmark_population(subgroup(episodes, name))
        fit = fit_model(population, settings)
        performance.append({
            "subgroup": name, "n": fit.n, "n_events": fit.n_events, "cv_folds": settings.cv_folds,
            "auroc": fit.auroc.auroc, "auroc_lower": fit.auroc.lower, "auroc_upper": fit.auroc.upper,
            "calibration_intercept": fit.calibration_intercept,
            "calibration_slope": fit.calibration_slope, "brier_score": fit.brier_score,
            "features": ",".join(f.removeprefix("flag_") for f in fit.features), "note": fit.note,
        })  # fmt: skip
        y = population["reference_standard"].astype(bool).to_numpy()
        if fit.predictions is not None:
            table = model.calibration_table(y, fit.predictions, CALIBRATION_BINS)
            calibration.append(table.assign(subgroup=name))
        curve = model.decision_curve(y, fit.predictions, settings.decision_thresholds)
        decision.append(curve.assign(subgroup=name))
    calibration_columns = ["subgroup", "bin", "n", "n_events", "mean_predicted", "observed_rate"]
    calibration_frame = (
        pd.concat(calibration, ignore_index=True)[calibration_columns]
        if calibration
        else pd.DataFrame({c: pd.Series(dtype=float) for c in calibration_columns})
    )
    decision_columns = ["subgroup", "threshold", "n", "n_events", "tp", "fp",
                        "net_benefit_model", "net_benefit_treat_all", "net_benefit_treat_none"]  # fmt: skip
    calibration_frame["subgroup"] = calibration_frame["subgroup"].astype(str)
    return (
        pd.DataFrame(performance),
        calibration_frame,
        pd.concat(decision, ignore_index=True)[decision_columns],
    )


def analysis_tables(episodes: pd.DataFrame, settings: StudySettings) -> dict[str, pd.DataFrame]:
    """Every analysis table of docs/architecture.md, computed from episode-level data."""
    performance, calibration, decision = model_tables(episodes, settings)
    return {
        "time_to_diagnosis": time_to_diagnosis_table(episodes, settings),
        "cumulative_incidence": cumulative_incidence_table(episodes, settings),
        "diagnostic_pathway": diagnostic_pathway_table(episodes),
        "flag_accuracy": flag_accuracy_table(episodes, settings),
        "roc_points": roc_points_table(episodes),
        "score_performance": score_performance_table(episodes, settings),
        "model_performance": performance,
        "calibration": calibration,
        "decision_curve": decision,
    }


# ---- writing -------------------------------------------------------------------------------


def write_table(
    con: duckdb.DuckDBPyConnection, schema: str, name: str, frame: pd.DataFrame, run_id: str
) -> int:
    """CREATE OR REPLACE {schema}.{name} from a frame, with run_id on every row."""
    out = frame.drop(columns=["run_id"], errors="ignore").assign(run_id=run_id)
    view = f"_redflags_{name}"
    con.register(view, out)
    try:
        con.execute(f"create schema if not exists {_schema(schema)}")
        con.execute(
            f"create or replace table {_schema(schema)}.{_schema(name)} as select * from {view}"
        )
    finally:
        con.unregister(view)
    return len(out)


def run_statistics(
    con: duckdb.DuckDBPyConnection, settings: StudySettings, run_id: str, *, schema: str = "mart"
) -> dict[str, int]:
    """Compute every analysis table from {schema}'s episode marts and write them there."""
    episodes = load_episodes(con, schema)
    tables = analysis_tables(episodes, settings)
    written = {
        name: write_table(con, schema, name, frame, run_id) for name, frame in tables.items()
    }
    # issue 14: Table 1, care after diagnosis, prognosis (pipelines/clinical.py; not released yet)
    return written | clinical.run_clinical_tables(con, settings, run_id, schema)


# ---- sensitivity analyses ----------------------------------------------------------------


SENSITIVITY_COLUMNS = ["analysis", "subgroup", "rule", "measure", "estimate", "lower", "upper",
                       "n_episodes", "n_events", "tp", "fp", "fn", "tn"]  # fmt: skip


def _accuracy_long(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in table.to_dict("records"):
        for m in accuracy.MEASURES:
            rows.append({
                "subgroup": r["subgroup"], "rule": r["rule"], "measure": m, "estimate": r[m],
                "lower": r[f"{m}_lower"], "upper": r[f"{m}_upper"],
                "n_episodes": r["tp"] + r["fp"] + r["fn"] + r["tn"], "n_events": r["tp"] + r["fn"],
                "tp": r["tp"], "fp": r["fp"], "fn": r["fn"], "tn": r["tn"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def _auroc_long(score: pd.DataFrame, performance: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for table, rule in ((score, SCORE), (performance, "model")):
        frames.append(pd.DataFrame({
            "subgroup": table["subgroup"], "rule": rule, "measure": "auroc",
            "estimate": table["auroc"], "lower": table["auroc_lower"], "upper": table["auroc_upper"],
            "n_episodes": table["n"], "n_events": table["n_events"],
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def sensitivity_rows(
    con: duckdb.DuckDBPyConnection, settings: StudySettings, analysis_name: str, schema: str
) -> pd.DataFrame:
    """Long-format accuracy and AUROC rows of one analysis, from the marts built in `schema`."""
    episodes = load_episodes(con, schema)
    performance, _, _ = model_tables(episodes, settings)
    long = pd.concat(
        [
            _accuracy_long(flag_accuracy_table(episodes, settings)),
            _auroc_long(score_performance_table(episodes, settings), performance),
        ],
        ignore_index=True,
    )
    return long.assign(analysis=analysis_name).reindex(columns=SENSITIVITY_COLUMNS)


def write_sensitivity_table(
    con: duckdb.DuckDBPyConnection,
    frames: Iterable[pd.DataFrame],
    run_id: str,
    schema: str = "mart",
) -> int:
    """Assemble the rows of sensitivity_rows into {schema}.sensitivity_analyses."""
    combined = pd.concat(list(frames), ignore_index=True).reindex(columns=SENSITIVITY_COLUMNS)
    return write_table(con, schema, "sensitivity_analyses", combined, run_id)


# ---- release -------------------------------------------------------------------------------


def build_release(
    con: duckdb.DuckDBPyConnection,
    settings: StudySettings,
    run_id: str,
    *,
    source_schema: str = "mart",
    target_schema: str = "release",
) -> dict[str, int]:
    """Suppressed copies of every aggregate table present in the source (never row-level tables)."""
    specs = release_specs(settings.cumulative_incidence_days)
    released = {}
    for name in RELEASED_TABLES:
        if not table_exists(con, _schema(source_schema), name):
            continue
        frame = con.execute(f"select * from {source_schema}.{name}").df()
        released[name] = suppress(
            frame.drop(columns=["run_id"], errors="ignore"), specs[name], settings.min_cell
        )
    if {"flag_accuracy", "roc_points"} <= set(released):
        align_shared_counts(released["flag_accuracy"], released["roc_points"], specs)
    return {
        name: write_table(con, target_schema, name, frame, run_id)
        for name, frame in released.items()
    }


# Rules of flag_accuracy that are rows of roc_points too: the same episodes, the same counts.
SHARED_RULE_THRESHOLDS = {"any_seed_flag": 1, "two_or_more_seed_flags": 2}


def align_shared_counts(flags: pd.DataFrame, roc: pd.DataFrame, specs: dict) -> None:
    """Hide in both tables every count that either hides, for the rows they share (in place).

    Each table is suppressed on its own, so the complementary cells chosen can differ: a
    count hidden in flag_accuracy but shown in roc_points would undo the protection (and
    vice versa). Hiding more never reveals anything; rates built on a newly hidden count
    are hidden too."""
    cells = ["tp", "fp", "fn", "tn"]
    for rule, threshold in SHARED_RULE_THRESHOLDS.items():
        for sub in flags.loc[flags["rule"] == rule, "subgroup"].unique():
            f = flags.index[(flags["rule"] == rule) & (flags["subgroup"] == sub)]
            r = roc.index[(roc["threshold"] == threshold) & (roc["subgroup"] == sub)]
            if len(f) != 1 or len(r) != 1:
                continue
            hidden = (
                flags.loc[f, cells].isna().to_numpy()[0] | roc.loc[r, cells].isna().to_numpy()[0]
            )
            for frame, rows, name in ((flags, f, "flag_accuracy"), (roc, r, "roc_points")):
                newly = hidden & ~frame.loc[rows, cells].isna().to_numpy()[0]
                if newly.any():
                    frame.loc[rows, [c for c, h in zip(cells, hidden, strict=True) if h]] = pd.NA
                    frame.loc[rows, list(specs[name].derived)] = pd.NA
