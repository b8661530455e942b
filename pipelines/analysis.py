"""Statistics over the episode-level marts, and the disclosure-controlled release.

`run_statistics` reads mart.cohort, mart.red_flags and mart.episode_pathway (episode grain),
computes every analysis table of docs/architecture.md with pipelines.stats, and writes
them with a run_id. `sensitivity_rows` / `write_sensitivity_table` build
mart.sensitivity_analyses from schemas built with alternative settings; `build_release`
writes the suppressed copy of every aggregate table into `release`. Methods:
docs/statistics.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd

from pipelines import clinical
from pipelines.flags import FLAGS, SEED_FLAGS
from pipelines.settings import StudySettings
from pipelines.stats import (
    accuracy,
    coarsen,
    model,
    roc,
    smooth_calibration,
    stard,
    survival,
    validation,
)
from pipelines.stats.disclosure import (
    LOG_COLUMNS,
    align_shared,
    disclose,
    hide,
    row_labels,
    shared_cells,
)
from pipelines.stats.release_tables import release_specs
from pipelines.stats.threads import one_blas_thread
from pipelines.warehouse import plain_name as _schema
from pipelines.warehouse import table_exists, write_table

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
    "calibration_smoothed",
    "decision_curve",
)
CLINICAL_TABLES = (  # pipelines/clinical.py (issue 14); specs in stats/release_tables.py
    "table_one",
    "care_after_diagnosis_summary",
    "presentation_by_interval",
    "prognosis_summary",
    "survival_after_diagnosis",
)
# issue 14: stats/validation.py, stats/stard.py
VALIDATION_TABLES = ("model_validation", "reference_interval")
RELEASED_TABLES = (
    *ANALYSIS_TABLES,
    "sensitivity_analyses",
    "attrition",
    *CLINICAL_TABLES,
    *VALIDATION_TABLES,
)

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
        # diagnoses per day since the index date: the release pools days by them
        # (stats/coarsen.py); never released
        outcome_days = time[(event == survival.OUTCOME) & np.isfinite(time)].astype(int)
        outcome_days = outcome_days[
            (outcome_days >= s.time_zero_day) & (outcome_days <= settings.horizon_days)
        ]
        frames[-1]["n_outcome"] = np.bincount(outcome_days - s.time_zero_day, minlength=days.size)[
            : days.size
        ]
    out = pd.concat(frames, ignore_index=True)
    out["day"] = out["day"].astype(int)
    columns = ["stratum_variable", "stratum", "time_zero", "time_zero_day", "day"]
    return out[[*columns, "estimate", "lower", "upper", "at_risk", "n_outcome"]]


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
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """model_performance, calibration, decision_curve and calibration_smoothed, per subgroup."""
    performance, calibration, decision, smoothed = [], [], [], []
    for name in SUBGROUPS:
        population = landmark_population(subgroup(episodes, name))
        fit = fit_model(population, settings)
        performance.append(performance_row(name, fit, settings))
        y = population["reference_standard"].astype(bool).to_numpy()
        if fit.predictions is not None:
            table = model.calibration_table(y, fit.predictions, CALIBRATION_BINS)
            calibration.append(table.assign(subgroup=name))
            points = smooth_calibration.smoothed_calibration(
                y, fit.predictions, settings.min_cell, CALIBRATION_BINS
            )
            smoothed.append(points.assign(subgroup=name))
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
    smoothed_columns = ["subgroup", *smooth_calibration.COLUMNS]
    smoothed_frame = (
        pd.concat(smoothed, ignore_index=True)[smoothed_columns]
        if smoothed
        else pd.DataFrame({c: pd.Series(dtype=float) for c in smoothed_columns})
    )
    smoothed_frame["subgroup"] = smoothed_frame["subgroup"].astype(str)
    return (
        pd.DataFrame(performance),
        calibration_frame,
        pd.concat(decision, ignore_index=True)[decision_columns],
        smoothed_frame,
    )


def performance_row(name: str, fit: model.ModelResult, settings: StudySettings) -> dict:
    """One subgroup's row of model_performance."""
    return {
        "subgroup": name, "n": fit.n, "n_events": fit.n_events, "cv_folds": settings.cv_folds,
        "auroc": fit.auroc.auroc, "auroc_lower": fit.auroc.lower, "auroc_upper": fit.auroc.upper,
        "calibration_intercept": fit.calibration_intercept,
        "calibration_slope": fit.calibration_slope, "brier_score": fit.brier_score,
        "features": ",".join(f.removeprefix("flag_") for f in fit.features), "note": fit.note,
    }  # fmt: skip


def model_performance_table(episodes: pd.DataFrame, settings: StudySettings) -> pd.DataFrame:
    """model_performance alone, the same rows as model_tables' first table: what the
    sensitivity analyses need, without the calibration and decision curves they would drop."""
    rows = []
    for name in SUBGROUPS:
        fit = fit_model(landmark_population(subgroup(episodes, name)), settings)
        rows.append(performance_row(name, fit, settings))
    return pd.DataFrame(rows)


def model_validation_table(episodes: pd.DataFrame, settings: StudySettings) -> pd.DataFrame:
    """Bootstrap optimism-corrected validation of each subgroup's flag model
    (stats/validation.py), in the landmark population like model_performance."""
    parameters = validation.ValidationParameters.from_settings(settings)
    frames = []
    for name in SUBGROUPS:
        population = landmark_population(subgroup(episodes, name))
        frames.append(
            validation.validate_flag_model(
                population[list(FLAG_COLUMNS)], population["reference_standard"], name, parameters
            )
        )
    return pd.concat(frames, ignore_index=True)


def reference_interval_table(episodes: pd.DataFrame) -> pd.DataFrame:
    """STARD item 22: days from index to diagnosis of the reference positives (stats/stard.py)."""
    rows = [
        stard.reference_interval_row(landmark_population(subgroup(episodes, name)), name)
        for name in SUBGROUPS
    ]
    return pd.DataFrame(rows, columns=stard.COLUMNS)


def analysis_tables(episodes: pd.DataFrame, settings: StudySettings) -> dict[str, pd.DataFrame]:
    """Every analysis table of docs/architecture.md, computed from episode-level data."""
    performance, calibration, decision, smoothed = model_tables(episodes, settings)
    return {
        "time_to_diagnosis": time_to_diagnosis_table(episodes, settings),
        "cumulative_incidence": cumulative_incidence_table(episodes, settings),
        "diagnostic_pathway": diagnostic_pathway_table(episodes),
        "flag_accuracy": flag_accuracy_table(episodes, settings),
        "roc_points": roc_points_table(episodes),
        "score_performance": score_performance_table(episodes, settings),
        "model_performance": performance,
        "calibration": calibration,
        "calibration_smoothed": smoothed,
        "decision_curve": decision,
    }


# ---- writing -------------------------------------------------------------------------------


@one_blas_thread  # many small fits: BLAS threads only spin (stats/threads.py)
def run_statistics(
    con: duckdb.DuckDBPyConnection, settings: StudySettings, run_id: str, *, schema: str = "mart"
) -> dict[str, int]:
    """Compute every analysis table from {schema}'s episode marts and write them there."""
    episodes = load_episodes(con, schema)
    tables = analysis_tables(episodes, settings)
    tables["model_validation"] = model_validation_table(episodes, settings)
    tables["reference_interval"] = reference_interval_table(episodes)
    written = {
        name: write_table(con, schema, name, frame, run_id) for name, frame in tables.items()
    }
    # issue 14: Table 1, care after diagnosis, prognosis (pipelines/clinical.py)
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


@one_blas_thread
def sensitivity_rows(
    con: duckdb.DuckDBPyConnection, settings: StudySettings, analysis_name: str, schema: str
) -> pd.DataFrame:
    """Long-format accuracy and AUROC rows of one analysis, from the marts built in `schema`."""
    episodes = load_episodes(con, schema)
    return _long_rows(
        flag_accuracy_table(episodes, settings),
        score_performance_table(episodes, settings),
        model_performance_table(episodes, settings),
        analysis_name,
    )


# what the sensitivity rows are made of, as run_statistics writes them
SENSITIVITY_SOURCES = ("flag_accuracy", "score_performance", "model_performance")


def sensitivity_rows_written(
    con: duckdb.DuckDBPyConnection, analysis_name: str, schema: str
) -> pd.DataFrame | None:
    """The rows of `sensitivity_rows` from the tables run_statistics wrote to `schema` (the
    primary analysis: the statistics stage has just computed them from the same marts and
    settings), or None when one of them is missing."""
    if not all(table_exists(con, _schema(schema), t) for t in SENSITIVITY_SOURCES):
        return None
    frames = [
        con.execute(f"select * from {_schema(schema)}.{_schema(t)}").df().drop(columns="run_id")
        for t in SENSITIVITY_SOURCES
    ]
    return _long_rows(*frames, analysis_name)


def _long_rows(
    flag_accuracy: pd.DataFrame,
    score_performance: pd.DataFrame,
    model_performance: pd.DataFrame,
    analysis_name: str,
) -> pd.DataFrame:
    long = pd.concat(
        [_accuracy_long(flag_accuracy), _auroc_long(score_performance, model_performance)],
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


# ---- release ----------------------------------------------------------------------------


def build_release(
    con: duckdb.DuckDBPyConnection,
    settings: StudySettings,
    run_id: str,
    *,
    source_schema: str = "mart",
    target_schema: str = "release",
    previous: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, int]:
    """Disclosure-controlled copies of every aggregate table present in the source, and
    `disclosure_log` (never row-level tables). Method: docs/statistics.md section 7;
    `previous`: counts earlier runs released (pipelines/history.py, section 7.1)."""
    frames = {}
    for name in RELEASED_TABLES:
        if table_exists(con, _schema(source_schema), name):
            frame = con.execute(f"select * from {_schema(source_schema)}.{name}").df()
            frames[name] = frame.drop(columns=["run_id"], errors="ignore")
    released, log = release_tables(frames, settings, previous)
    written = {
        name: write_table(con, target_schema, name, frame, run_id)
        for name, frame in released.items()
    }
    written["disclosure_log"] = write_table(con, target_schema, "disclosure_log", log, run_id)
    written["labels"] = write_labels(con, target_schema, settings, run_id)
    return written


# --- labels (issue 15): code -> words for dashboards; words only, no values, so no disclosure
def write_labels(
    con: duckdb.DuckDBPyConnection, target_schema: str, settings: StudySettings, run_id: str
) -> int:
    """`release.labels` (kind, code, label) from pipelines/labels.py, attrition steps filled
    with this run's parameters."""
    from pipelines.labels import labels_frame

    return write_table(con, target_schema, "labels", labels_frame(settings.as_dict()), run_id)


def release_tables(
    frames: dict[str, pd.DataFrame],
    settings: StudySettings,
    previous: Mapping[str, Sequence[float]] | None = None,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Every table through the one disclosure layer, then the rules that link tables.

    Counts shared across tables are declared in the specs (`TableSpec.shared`): a count one
    table hides is hidden in every table sharing it, by disclosing that table again with the
    count forced hidden (so its complements there are hidden too), until nothing changes;
    values that are not counts (curves, smoothed points) follow (`align_shared`).
    `previous` adds the overlapping-release relations (pipelines/history.py)."""
    from pipelines.history import with_overlap

    specs = with_overlap(
        release_specs(settings.cumulative_incidence_days), previous, settings.min_cell
    )
    released, logs = {}, {}
    force: dict[str, set] = {}
    pending = set(frames)
    while pending:
        for name in sorted(pending):
            out = disclose(
                specs[name].releasable(frames[name]),
                specs[name],
                settings.min_cell,
                settings.rounding_base,
                name,
                force=force.get(name, ()),
            )
            released[name], logs[name] = out.frame, out.log
        if {"flag_accuracy", "roc_points"} <= set(released):
            align_shared_counts(released["flag_accuracy"], released["roc_points"], specs)
        extra = shared_cells(released, specs)
        for name, cells in indeterminate_cells(frames, released, settings.min_cell).items():
            extra[name] = extra.get(name, set()) | cells
        pending = {n for n, cells in extra.items() if not cells <= force.get(n, set())}
        for name in pending:
            force[name] = force.get(name, set()) | extra[name]
    align_shared(released, specs)
    if {"time_to_diagnosis", "cumulative_incidence"} <= set(released):
        curves_of_shown_strata(released, settings)
    if "roc_points" in released and len(notes := roc_of_shown_populations(released)):
        logs["roc_points"] = pd.concat([logs["roc_points"], notes], ignore_index=True)
    align_clinical_tables(released, specs)
    log = final_log(released, list(logs.values()), specs)
    return released, pd.concat([log, disclosure_summary(released, settings)], ignore_index=True)


HIDDEN = ("suppressed_small", "suppressed_complement")


def _hide(frame: pd.DataFrame, rows, columns: Iterable[str], status: str) -> None:
    """Set values NULL with a status (in place), unless already hidden or not estimable."""
    hide(frame, rows, columns, status)


# Rules of flag_accuracy that are rows of roc_points too: the same episodes, the same counts.
SHARED_RULE_THRESHOLDS = {"any_seed_flag": 1, "two_or_more_seed_flags": 2}
CELL_COLUMNS = ["tp", "fp", "fn", "tn"]


def align_shared_counts(flags: pd.DataFrame, roc: pd.DataFrame, specs: dict) -> None:
    """The rows flag_accuracy and roc_points share show the same thing (in place).

    roc_points keeps a cut-off only where its score bands are safe (coarsened); the 2x2 of
    that cut-off in flag_accuracy is hidden when roc_points leaves the cut-off out, else the
    band between it and a released cut-off would be a difference of released counts. A
    roc_points row whose cells flag_accuracy hides is dropped. Hiding more never reveals."""
    drop = []
    for rule, threshold in SHARED_RULE_THRESHOLDS.items():
        for sub in flags.loc[flags["rule"] == rule, "subgroup"].unique():
            f = flags.index[(flags["rule"] == rule) & (flags["subgroup"] == sub)]
            r = roc.index[(roc["threshold"] == threshold) & (roc["subgroup"] == sub)]
            flags_hidden = flags.loc[f, [f"{c}_status" for c in CELL_COLUMNS]].isin(HIDDEN)
            if len(r) == 0 or flags_hidden.to_numpy().any():
                _hide(
                    flags,
                    f,
                    [*CELL_COLUMNS, *specs["flag_accuracy"].derived],
                    "suppressed_complement",
                )
                drop.extend(r)
    roc.drop(index=drop, inplace=True)
    roc.reset_index(drop=True, inplace=True)


def indeterminate_cells(
    frames: Mapping[str, pd.DataFrame], released: Mapping[str, pd.DataFrame], min_cell: int
) -> dict[str, set]:
    """Count cells to hide so that a rule's 2x2 neither gives away its indeterminate results
    nor rebuilds a hidden population (docs/statistics.md 7, "Indeterminate results").

    Per rule, population n = 2x2 total + indeterminate results and events = tp + fn +
    indeterminate cases (the accuracy population: model_performance; in
    sensitivity_analyses each analysis's model row). The rule's 2x2 is forced hidden (with
    its complements), not the population, which many tables share, when
    - n is shown and n - total is 1..min_cell-1 (the report's flow diagram prints it), or
    - n is hidden and n - total is 0..min_cell-1, or the events are hidden and
      events - (tp + fn) is 0..min_cell-1: zero included, since with no indeterminate
      result the 2x2 total (case margin) *is* the hidden count, and a few indeterminate
      ones would make it the largest total over the rules, or an exact guess off by a few.
    A rule with min_cell or more indeterminate results only bounds a hidden n from below."""
    cells: dict[str, set] = {}

    def force(name: str, rows: np.ndarray, columns: Sequence[str]) -> None:
        frame = released[name]
        for i in np.flatnonzero(rows):
            for c in columns:
                if frame[f"{c}_status"].iat[i] not in HIDDEN:
                    cells.setdefault(name, set()).add((int(i), c))

    def exposed(truth: pd.DataFrame, n, events, n_shown, events_shown):
        """(rows whose 2x2 total gives away an indeterminate count or rebuilds a hidden n,
        rows whose case margin rebuilds hidden events)."""
        counts = truth[CELL_COLUMNS].astype(float)
        gap = pd.Series(np.asarray(n, dtype=float)) - counts.sum(axis=1, min_count=4).to_numpy()
        case_gap = pd.Series(np.asarray(events, dtype=float)) - (counts["tp"] + counts["fn"])
        n_shown = pd.Series(np.asarray(n_shown, dtype=bool))
        events_shown = pd.Series(np.asarray(events_shown, dtype=bool))
        near = _is_near(min_cell)
        total = (n_shown & gap.map(_is_small(min_cell))) | (~n_shown & gap.map(near))
        return total.to_numpy(), (~events_shown & case_gap.map(near)).to_numpy()

    if {"flag_accuracy", "model_performance"} <= set(released):
        truth = frames["flag_accuracy"].reset_index(drop=True)
        population = frames["model_performance"].set_index("subgroup")
        shown = released["model_performance"].set_index("subgroup")[["n", "n_events"]].notna()
        sub = truth["subgroup"]
        total, margin = exposed(
            truth,
            sub.map(population["n"]),
            sub.map(population["n_events"]),
            sub.map(shown["n"]).eq(True),
            sub.map(shown["n_events"]).eq(True),
        )
        force("flag_accuracy", total | margin, CELL_COLUMNS)
    if "sensitivity_analyses" in released:
        truth = frames["sensitivity_analyses"].reset_index(drop=True)
        out = released["sensitivity_analyses"]
        model = truth["rule"] == "model"
        keys = ["analysis", "subgroup"]
        population = truth[model].drop_duplicates(keys).set_index(keys)
        shown = out[model.to_numpy()].drop_duplicates(keys).set_index(keys)
        index = pd.MultiIndex.from_frame(truth[keys])

        def per_row(column: str, table: pd.DataFrame, fill) -> np.ndarray:
            return table[column].reindex(index, fill_value=fill).to_numpy()

        total, margin = exposed(
            truth,
            per_row("n_episodes", population, np.nan).astype(float),
            per_row("n_events", population, np.nan).astype(float),
            pd.Series(per_row("n_episodes", shown, pd.NA)).notna(),
            pd.Series(per_row("n_events", shown, pd.NA)).notna(),
        )
        rules = (~model).to_numpy() & truth[CELL_COLUMNS].notna().all(axis=1).to_numpy()
        # a rule row repeats its 2x2 total and case margin as n_episodes and n_events: the
        # total goes with a hidden n, the margin with hidden events (a shown n stays)
        force("sensitivity_analyses", total & rules, [*CELL_COLUMNS, "n_episodes", "n_events"])
        force("sensitivity_analyses", margin & rules, [*CELL_COLUMNS, "n_events"])
    return cells


def _is_small(min_cell: int):
    return lambda v: bool(np.isfinite(v)) and 1 <= abs(v) < min_cell


def _is_near(min_cell: int):
    """0..min_cell-1: a hidden count a sum falls short of by too little to protect it."""
    return lambda v: bool(np.isfinite(v)) and 0 <= v < min_cell


def curves_of_shown_strata(released: dict[str, pd.DataFrame], settings: StudySettings) -> None:
    """A stratum whose counts are hidden releases no curve; cif_<d> reads the coarsened curve.

    Table 1's cif_<d> is the released step function at day d (its last step on or before
    d), so it adds nothing to the curve: the exact estimate at d would reveal the few
    diagnoses between the last step and d."""
    ttd, curve = released["time_to_diagnosis"], released["cumulative_incidence"]
    keys = ["stratum_variable", "stratum"]
    shown = ttd[~ttd["n_diagnosed_status"].isin(HIDDEN) & ~ttd["n_episodes_status"].isin(HIDDEN)]
    pairs = set(shown[keys].astype(str).itertuples(index=False, name=None))
    in_shown = np.array(
        [p in pairs for p in curve[keys].astype(str).itertuples(index=False, name=None)], dtype=bool
    )
    released["cumulative_incidence"] = curve = curve[in_shown].reset_index(drop=True)
    for i, row in ttd.iterrows():
        mine = curve[(curve["stratum_variable"] == row["stratum_variable"])
                     & (curve["stratum"].astype(str) == str(row["stratum"]))]  # fmt: skip
        for d in settings.cumulative_incidence_days:
            columns = [f"cif_{d}", f"cif_{d}_lower", f"cif_{d}_upper"]
            if (
                ttd.at[i, f"cif_{d}_status"] in HIDDEN
                or ttd.at[i, f"cif_{d}_status"] == "not_estimable"
            ):
                continue
            if mine.empty:
                _hide(ttd, [i], columns, "suppressed_complement")
                continue
            for col, source in zip(columns, ("estimate", "lower", "upper"), strict=True):
                ttd.at[i, col] = coarsen.step_value(mine, d, source)
                ttd.at[i, f"{col}_status"] = "rounded"


# the tables whose n / n_events count a subgroup's landmark population (SHARED keys
# landmark_episodes / landmark_events): score_performance's are the ROC curve's margins
POPULATION_TABLES = ("score_performance", "model_performance")
ROC_OF_HIDDEN_POPULATION = "cross-table: the subgroup's population counts are hidden"


def roc_of_shown_populations(released: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A subgroup whose population counts are hidden releases no ROC curve (in place);
    returns one log note per curve left out.

    Every cut-off's 2x2 adds up to the subgroup's margins (cases = tp + fn, non-cases =
    fp + tn: score_performance's n_events and n - n_events), and its sensitivities step by
    1 / cases: a curve beside a hidden n or n_events gives it back. The cross-table rule of
    curves_of_shown_strata, for the subgroups of the landmark population."""
    hidden: set[str] = set()
    for name in POPULATION_TABLES:
        table = released.get(name)
        if table is None or table.empty:
            continue
        status = table[["n_status", "n_events_status"]].isin(HIDDEN).any(axis=1).to_numpy()
        hidden |= set(table.loc[status, "subgroup"].astype(str))
    roc = released["roc_points"]
    keep = ~roc["subgroup"].astype(str).isin(hidden).to_numpy()
    released["roc_points"] = roc[keep].reset_index(drop=True)
    dropped = sorted(set(roc.loc[~keep, "subgroup"].astype(str)))
    notes = [{**dict.fromkeys(LOG_COLUMNS), "table_name": "roc_points",
              "row_key": f"subgroup={sub}", "status": "suppressed_complement",
              "rule": ROC_OF_HIDDEN_POPULATION, "detail": "curve not released"}
             for sub in dropped]  # fmt: skip
    return pd.DataFrame(notes, columns=LOG_COLUMNS)


# ---- clinical tables (issue 14) -----------------------------------------------------------


def align_clinical_tables(released: dict[str, pd.DataFrame], specs: dict) -> None:
    """The rules that link the clinical tables beyond shared counts (in place; the counts
    they share with each other and with the older tables are declared in the specs and
    aligned by `disclosure.align_shared`); hiding more never reveals.

    1. Table 1's SMD compares two groups: hidden on every row of a variable where a count
       (or the median) of that variable is hidden;
    2. the survival curve is released only when the deaths and episodes it rests on are shown
       (a group whose counts are hidden releases no curve); median and 1-year survival are
       read from the coarsened curve, so they add nothing to it."""
    if "table_one" in released:
        hide_smds_of_hidden_counts(released["table_one"])
    if "survival_after_diagnosis" in released:
        survival_from_coarsened_curve(released)


def hide_smds_of_hidden_counts(table: pd.DataFrame) -> None:
    columns = [f"{c}_status" for c in ("count", "n_group", "n_missing", "median")]
    keys = ["population", "comparison", "variable"]
    hidden = (
        table[columns].isin(HIDDEN).any(axis=1).groupby([table[k] for k in keys]).transform("any")
    )
    _hide(table, table.index[hidden.to_numpy(bool)], ["smd"], "suppressed_complement")


SURVIVAL_MEASURES = ("median_survival_days", "survival_1_year")


def survival_from_coarsened_curve(released: dict[str, pd.DataFrame]) -> None:
    curve = released["survival_after_diagnosis"]
    summary = released.get("prognosis_summary")
    if summary is None:
        return
    rows = summary.index[summary["measure"].isin(SURVIVAL_MEASURES)]
    counts_hidden = summary.loc[rows, ["n_status", "n_events_status"]].isin(HIDDEN).any(axis=None)
    if counts_hidden or curve.empty:
        released["survival_after_diagnosis"] = curve.iloc[0:0]
        _hide(summary, rows, ["estimate", "lower", "upper"], "suppressed_complement")
        return
    for i in rows:
        if summary.at[i, "estimate_status"] in (*HIDDEN, "not_estimable"):
            continue
        for col, source in (("estimate", "estimate"), ("lower", "lower"), ("upper", "upper")):
            if summary.at[i, "measure"] == "survival_1_year":
                value = coarsen.step_value(curve, survival_days_one_year(), source)
            else:  # the median of the curve (its CI: where the CI curves cross one half)
                value = coarsen.first_day_at_or_below(curve, source, 0.5)
            summary.at[i, col] = value
            summary.at[i, f"{col}_status"] = "rounded" if np.isfinite(value) else "not_estimable"


def survival_days_one_year() -> int:
    from pipelines.stats.prognosis import ONE_YEAR

    return ONE_YEAR


CROSS_TABLE_RULES = {
    "rounded": "cross-table: curve value read from the coarsened curve's last step",
    "suppressed_complement": "cross-table: hidden because a linked table hides the same count",
}


def final_log(
    released: dict[str, pd.DataFrame], logs: list[pd.DataFrame], specs: dict
) -> pd.DataFrame:
    """One row per suppressed or rounded value of the final tables, with the rule that did it
    (the cross-table rules for values changed after each table's own disclosure), then the
    curve-pooling notes."""
    rules = {}
    for log in logs:
        cells = log[log["column_name"].notna()]
        for r in cells.itertuples(index=False):
            rules[(r.table_name, r.row_key, r.column_name, r.status)] = r.rule
    rows = []
    for name, frame in released.items():
        labels = row_labels(frame, specs[name].keys)
        for col in [c for c in frame.columns if c.endswith("_status")]:
            column = col.removesuffix("_status")
            for i in np.flatnonzero(frame[col].isin([*HIDDEN, "rounded"]).to_numpy()):
                status = frame[col].iloc[i]
                rule = rules.get((name, labels[i], column, status), CROSS_TABLE_RULES.get(status))
                rows.append((name, int(i), labels[i], column, status, rule, None))
    notes = [log[log["column_name"].isna()] for log in logs]
    cells = pd.DataFrame(rows, columns=LOG_COLUMNS)
    return pd.concat([*[n for n in notes if len(n)], cells], ignore_index=True)


def disclosure_summary(released: dict[str, pd.DataFrame], settings: StudySettings) -> pd.DataFrame:
    """Per table and status, how many values: the lines an output checker signs off."""
    rows = []
    parameters = f"min_cell={settings.min_cell}, rounding={settings.rounding}"
    for name, frame in released.items():
        statuses = frame[[c for c in frame.columns if c.endswith("_status")]].to_numpy().ravel()
        values, counts = np.unique(statuses.astype(str), return_counts=True)
        for status, count in zip(values, counts, strict=True):
            rows.append({"table_name": name, "row_number": None, "row_key": None,
                         "column_name": None, "status": status, "rule": "summary",
                         "detail": f"{int(count)} values; {parameters}"})  # fmt: skip
    return pd.DataFrame(rows)
