"""The pandas baseline of the benchmark computes the same study as the pipeline.

On one small generated export, the baseline's cohort, red flags, attrition and 2x2
counts must equal `mart.cohort`, `mart.red_flags`, `mart.attrition` and the counts of
`mart.flag_accuracy` built by the pipeline (ingest -> SQL models -> statistics). When
the pipeline's stages are missing, the generator's truth files stand in.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from bench.baseline_pandas import FLAGS, run_baseline

PATIENTS = 400
SEED = 11
KEY = ["patient_id", "index_date"]
COUNTS = ["tp", "fp", "fn", "tn"]


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    from pipelines.generator import generate

    out = tmp_path_factory.mktemp("export")
    generate(out, patients=PATIENTS, seed=SEED)
    return out


@pytest.fixture(scope="module")
def baseline(export):
    return run_baseline(export)


@pytest.fixture(scope="module")
def pipeline_marts(export, tmp_path_factory) -> dict[str, pd.DataFrame]:
    if not _has("pipelines.ingest", "pipelines.models", "pipelines.analysis"):
        pytest.skip("pipeline stages not available yet")
    from pipelines import study
    from pipelines.settings import StudySettings

    warehouse = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    settings = StudySettings()
    study.step_ingest(export, warehouse, say=lambda _: None)
    study.step_models(warehouse, settings)
    study.step_statistics(warehouse, settings, "test-baseline")
    study.step_publish(warehouse, "test-baseline")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            t: con.execute(f"select * from mart.{t}").df()
            for t in ("cohort", "red_flags", "attrition", "flag_accuracy")
        }
    finally:
        con.close()


def _same(frame: pd.DataFrame, left: str, right: str) -> pd.Series:
    a, b = frame[left], frame[right]
    return (a == b).fillna(False) | (a.isna() & b.isna())


def test_cohort_matches_the_pipeline(baseline, pipeline_marts):
    sql = pipeline_marts["cohort"]
    assert len(baseline.cohort) == len(sql) > 0
    both = sql.merge(baseline.cohort, on=KEY, how="outer", suffixes=("_sql", "_pd"), indicator=True)
    assert (both["_merge"] == "both").all(), "episodes differ"
    for column in (
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
    ):
        differ = both.loc[
            ~_same(both, f"{column}_sql", f"{column}_pd"), [*KEY, f"{column}_sql", f"{column}_pd"]
        ]
        assert differ.empty, f"{column} differs:\n{differ.head()}"


def test_red_flags_match_the_pipeline(baseline, pipeline_marts):
    both = pipeline_marts["red_flags"].merge(baseline.red_flags, on=KEY, suffixes=("_sql", "_pd"))
    assert len(both) == len(baseline.red_flags)
    for column in [f"flag_{f}" for f in FLAGS] + ["red_flag_count"]:
        differ = both.loc[
            ~_same(both, f"{column}_sql", f"{column}_pd"), [*KEY, f"{column}_sql", f"{column}_pd"]
        ]
        assert differ.empty, f"{column} differs:\n{differ.head()}"


def test_attrition_matches_the_pipeline(baseline, pipeline_marts):
    sql = pipeline_marts["attrition"][["step", "n_remaining"]].to_dict(orient="records")
    assert baseline.attrition[["step", "n_remaining"]].to_dict(orient="records") == sql


def test_two_by_two_counts_match_flag_accuracy(baseline, pipeline_marts):
    sql = pipeline_marts["flag_accuracy"][["subgroup", "rule", *COUNTS]]
    both = sql.merge(
        baseline.flag_counts, on=["subgroup", "rule"], how="outer", suffixes=("_sql", "_pd")
    )
    assert len(both) == len(sql) == len(baseline.flag_counts)
    for c in COUNTS:
        assert (both[f"{c}_sql"] == both[f"{c}_pd"]).all(), both.to_string()
    assert both.loc[both["rule"] == "any_seed_flag", "tp_pd"].sum() > 0  # the data hold events


def test_cohort_size_matches_the_generator_truth(baseline, export):
    truth = json.loads((export / "truth.json").read_text())
    assert len(baseline.cohort) == truth["cohort"]["episodes"]
    assert (
        int(baseline.cohort["is_in_landmark_population"].sum())
        == truth["cohort"]["landmark_population"]
    )


def test_missing_optional_file_makes_its_flags_not_ascertainable(export, tmp_path):
    for path in export.iterdir():
        if path.name.endswith(".csv") and not path.name.startswith("observations"):
            (tmp_path / path.name).symlink_to(path)
    result = run_baseline(tmp_path)
    assert result.red_flags["flag_weight_loss"].isna().all()
    assert result.red_flags["flag_elevated_alp"].isna().all()
    assert result.red_flags["flag_night_pain"].notna().all()


def test_bench_harness_measures_baselines_in_subprocesses(export, tmp_path):
    """Smoke test of `python -m bench.bench` plumbing (no timing is asserted)."""
    from bench import bench

    (tmp_path / f"p{PATIENTS}").mkdir()
    (tmp_path / f"p{PATIENTS}" / "export").symlink_to(export)
    argv = ["--patients", str(PATIENTS), "--out", str(tmp_path), "--reuse-exports"]
    assert bench.main([*argv, "--stages", "generate,plain_scan,pandas"]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    (size,) = report["sizes"]
    status = {m["stage"]: m["status"] for m in size["measurements"]}
    assert status == {"plain_scan": "ok", "pandas": "ok"}
    assert all(m["peak_rss_mb"] > 0 for m in size["measurements"])
    assert size["measurements"][1]["info"]["cohort_size"] > 0
    assert (tmp_path / "results.csv").exists() and (tmp_path / "summary.md").exists()
