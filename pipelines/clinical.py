"""The clinical story beyond accuracy (PROTOCOL 6.6-6.8): Table 1, care after diagnosis,
presentation and prognosis by diagnostic interval.

Thin: reads the episode-grain marts (mart.baseline_characteristics, ...), calls the plain
functions of pipelines.stats.baseline / .prognosis, and writes aggregate tables to the
same schema with a run_id (`run_clinical_tables`, one call from analysis.run_statistics).
build_release publishes them through the one disclosure layer (specs in
stats/release_tables.py, docs/statistics.md section 7).
"""

from __future__ import annotations

import duckdb
import pandas as pd

from pipelines.flags import FLAGS
from pipelines.settings import StudySettings
from pipelines.stats import baseline, care, prognosis
from pipelines.warehouse import plain_name as _schema
from pipelines.warehouse import table_exists, write_table

# PROTOCOL 6.6, in the order Table 1 shows them
TABLE_ONE_VARIABLES = {
    "age_at_index": "continuous",
    "age_band": "categorical",
    "sex": "categorical",
    **{f"flag_{f}": "categorical" for f in FLAGS},
    "n_encounters_lookback": "continuous",
    "has_prior_other_cancer": "categorical",
    "has_osteoporosis": "categorical",
    "has_prior_vertebral_fracture": "categorical",
}


def _mask(series: pd.Series) -> pd.Series:
    return series.astype("boolean").fillna(False).astype(bool)


def table_one(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1 for the cohort and the landmark population, overall, by reference standard
    (in the cohort: diagnosed within follow-up, as the reference standard is defined only in
    the landmark population) and by breast_cancer_history, with SMDs between the two groups.
    """
    landmark = frame[_mask(frame["is_in_landmark_population"]).to_numpy(bool)]
    landmark = landmark[landmark["reference_standard"].notna().to_numpy(bool)]
    parts = []
    for population, episodes, outcome in (
        ("cohort", frame, "is_diagnosed"),
        ("landmark", landmark, "reference_standard"),
    ):
        everyone = pd.Series(True, index=episodes.index)
        history = _mask(episodes["has_breast_cancer_history"])
        event = _mask(episodes[outcome])
        for comparison, groups in (
            ("overall", {"all": everyone}),
            ("reference_standard", {"positive": event, "negative": ~event}),
            ("breast_cancer_history", {"yes": history, "no": ~history}),
        ):
            parts.append(
                baseline.table_one(
                    episodes,
                    TABLE_ONE_VARIABLES,
                    population=population,
                    comparison=comparison,
                    groups=groups,
                )
            )
    return pd.concat(parts, ignore_index=True)


def clinical_tables(
    con: duckdb.DuckDBPyConnection, settings: StudySettings, schema: str = "mart"
) -> dict[str, pd.DataFrame]:
    """Every clinical aggregate table whose episode mart exists in `schema`."""
    tables: dict[str, pd.DataFrame] = {}
    if table_exists(con, schema, "baseline_characteristics"):
        # a fixed row order: the same sums in the same order give the same bits on every run
        frame = con.execute(
            f"select * from {_schema(schema)}.baseline_characteristics"
            " order by patient_id, index_date"
        ).df()
        tables["table_one"] = table_one(frame)
    if table_exists(con, schema, "care_after_diagnosis"):
        frame = con.execute(
            f"select * from {_schema(schema)}.care_after_diagnosis"
            " order by patient_id, index_date, care_category"
        ).df()
        tables["care_after_diagnosis_summary"] = care.care_summary(frame, settings.confidence_level)
    if table_exists(con, schema, "prognosis"):
        frame = con.execute(
            f"select * from {_schema(schema)}.prognosis order by patient_id, index_date"
        ).df()
        level = settings.confidence_level
        tables["presentation_by_interval"] = prognosis.sre_by_third(frame, level)
        tables["survival_after_diagnosis"] = prognosis.survival_curve(frame, level)
        tables["prognosis_summary"] = prognosis.prognosis_summary(frame, level)
    return tables


def run_clinical_tables(
    con: duckdb.DuckDBPyConnection, settings: StudySettings, run_id: str, schema: str = "mart"
) -> dict[str, int]:
    tables = clinical_tables(con, settings, schema)
    return {name: write_table(con, schema, name, f, run_id) for name, f in tables.items()}
