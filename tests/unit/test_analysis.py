"""run_statistics, sensitivity rows and the release, end to end on simulated episode marts."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipelines import analysis
from pipelines.settings import StudySettings
from pipelines.stats import accuracy, roc, survival
from pipelines.stats.release_tables import release_specs

SETTINGS = StudySettings()
SEED_FLAGS = [f"flag_{f}" for f in analysis.SEED_FLAGS]

# docs/architecture.md: the contract columns of every analysis table (extra columns allowed)
MEASURE_COLUMNS = [c for m in accuracy.MEASURES for c in (m, f"{m}_lower", f"{m}_upper")]
CIF_COLUMNS = [
    c
    for d in (30, 90, 180, 365)
    for c in (f"cif_{d}", f"cif_{d}_lower", f"cif_{d}_upper", f"at_risk_{d}")
]
CONTRACT = {
    "time_to_diagnosis": ["stratum_variable", "stratum", "n_episodes", "n_diagnosed", "n_died",
                          "n_censored", "median_days", "q1_days", "q3_days", *CIF_COLUMNS],
    "cumulative_incidence": ["stratum_variable", "stratum", "day", "estimate", "lower", "upper", "at_risk"],
    "diagnostic_pathway": ["measure", "category", "n", "median_days", "q1_days", "q3_days"],
    "flag_accuracy": ["subgroup", "rule", "tp", "fp", "fn", "tn", *MEASURE_COLUMNS],
    "roc_points": ["subgroup", "threshold", "tp", "fp", "fn", "tn", "sensitivity", "false_positive_rate"],
    "score_performance": ["subgroup", "score", "n", "n_events", "auroc", "auroc_lower", "auroc_upper"],
    "model_performance": ["subgroup", "n", "n_events", "cv_folds", "auroc", "auroc_lower", "auroc_upper",
                          "calibration_intercept", "calibration_slope", "brier_score"],
    "calibration": ["subgroup", "bin", "n", "mean_predicted", "observed_rate"],
    "calibration_smoothed": ["subgroup", "bin", "mean_predicted", "observed_smoothed"],
    "decision_curve": ["subgroup", "threshold", "net_benefit_model", "net_benefit_treat_all",
                       "net_benefit_treat_none"],
    "model_validation": ["subgroup", "measure", "threshold", "n", "n_events", "n_predictors",
                         "events_per_variable", "apparent", "optimism", "corrected", "lower",
                         "upper", "status", "note"],
    "reference_interval": ["subgroup", "n", "median_days", "q1_days", "q3_days"],
}  # fmt: skip
SENSITIVITY_CONTRACT = ["analysis", "subgroup", "rule", "measure", "estimate", "lower", "upper",
                        "n_episodes", "n_events"]  # fmt: skip


def simulate_marts(
    seed: int, n: int = 1500, *, outcome_risk: float = 0.02, signal: float = 0.4
) -> dict[str, pd.DataFrame]:
    """mart.cohort, mart.red_flags, mart.episode_pathway with the architecture.md columns."""
    rng = np.random.default_rng(seed)
    index_date = pd.Timestamp("2018-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D")
    history = rng.random(n) < 0.1
    risk = np.clip(outcome_risk * (1 + 9 * history), 0, 1)
    has_outcome = rng.random(n) < risk
    t_outcome = np.ceil(rng.lognormal(np.log(90), 0.6, n))
    t_death = np.where(rng.random(n) < 0.03, rng.integers(0, 365, n), 10_000)
    t_censor = np.where(rng.random(n) < 0.2, rng.integers(0, 365, n), 365)
    t_outcome = np.where(has_outcome & (t_outcome <= 365), t_outcome, 10_000)
    end = np.minimum.reduce([t_outcome, t_death, t_censor])
    reason = np.select(
        [end == t_outcome, end == t_death, end == 365],
        ["bone_metastasis", "death", "horizon"],
        "end_of_observation",
    )
    diagnosed = reason == "bone_metastasis"
    in_landmark = end > SETTINGS.landmark_days
    reference = pd.array(np.where(reason == "end_of_observation", None, diagnosed), dtype="boolean")
    reference[~in_landmark] = pd.NA
    days = pd.to_timedelta(end, unit="D")
    cohort = pd.DataFrame({
        "patient_id": [f"p{i:05d}" for i in range(n)], "index_date": index_date,
        "age_at_index": rng.integers(18, 95, n), "sex": np.where(rng.random(n) < 0.6, "F", "M"),
        "has_breast_cancer_history": history,
        "observation_end_date": index_date + days, "follow_up_end_date": index_date + days,
        "end_reason": reason,
        "outcome_date": pd.Series(index_date + days).where(diagnosed),
        "days_to_outcome": pd.array(np.where(diagnosed, end, None), dtype="Int64"),
        "is_in_landmark_population": in_landmark, "reference_standard": reference,
        "death_date": pd.Series(index_date + days).where(reason == "death"),
        "days_to_follow_up_end": end,
    })  # fmt: skip
    flags = pd.DataFrame({"patient_id": cohort["patient_id"], "index_date": index_date})
    for name in analysis.FLAG_COLUMNS:
        flags[name] = rng.random(n) < 0.15 + signal * diagnosed
    flags["flag_breast_cancer_history"] = history
    flags["flag_elevated_alp"] = pd.array([pd.NA] * n, dtype="boolean")  # not ascertainable
    flags["red_flag_count"] = flags[SEED_FLAGS].sum(axis=1).astype(int)
    flags["not_ascertainable_flags"] = "elevated_alp"
    imaging = index_date + pd.to_timedelta(rng.integers(0, 200, n), unit="D")
    imaged = rng.random(n) < 0.3 + 0.6 * diagnosed
    pathway = pd.DataFrame({
        "patient_id": cohort["patient_id"], "index_date": index_date,
        "first_spine_imaging_date": pd.Series(imaging).where(imaged & (imaging <= index_date + days)),
        "first_spine_imaging_modality": np.where(imaged, rng.choice(["xray", "ct", "mri", "bone_scan"], n), None),
        "is_imaging_ascertainable": True,
    })  # fmt: skip
    pathway.loc[pathway["first_spine_imaging_date"].isna(), "first_spine_imaging_modality"] = None
    attrition = pd.DataFrame({
        "step_order": [1, 2, 3], "step": ["patients_in_export", "incident_episode", "in_landmark"],
        "n_remaining": [n + 200, n, int(in_landmark.sum())],
        "n_excluded": [0, 200, n - int(in_landmark.sum())],
    })  # fmt: skip
    return {
        "cohort": cohort,
        "red_flags": flags,
        "episode_pathway": pathway,
        "attrition": attrition,
    }


def warehouse(marts: dict[str, pd.DataFrame], schema: str = "mart") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"create schema {schema}")
    for name, frame in marts.items():
        con.register("frame", frame)
        con.execute(f"create table {schema}.{name} as select * from frame")
        con.unregister("frame")
    return con


@pytest.fixture(scope="module")
def built():
    marts = simulate_marts(1)
    con = warehouse(marts)
    counts = analysis.run_statistics(con, SETTINGS, "run-1")
    yield con, marts, counts
    con.close()


def read(con, table: str, schema: str = "mart") -> pd.DataFrame:
    return con.execute(f"select * from {schema}.{table}").df()


def landmark(marts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    episodes = marts["cohort"].merge(marts["red_flags"], on=["patient_id", "index_date"])
    keep = episodes["is_in_landmark_population"] & episodes["reference_standard"].notna()
    return episodes[keep.to_numpy(bool)]


def test_every_table_has_the_contract_columns_and_the_run_id(built):
    con, _, counts = built
    assert set(counts) == set(CONTRACT)
    for table, columns in CONTRACT.items():
        frame = read(con, table)
        assert len(frame) == counts[table] > 0
        assert set(columns) <= set(frame.columns), (table, set(columns) - set(frame.columns))
        assert (frame["run_id"] == "run-1").all()


def test_flag_accuracy_equals_the_functions_on_the_episodes(built):
    con, marts, _ = built
    population = landmark(marts)
    table = accuracy.two_by_two(
        population["flag_breast_cancer_history"], population["reference_standard"]
    )
    expected = accuracy.accuracy_row(table, SETTINGS.confidence_level)
    row = read(con, "flag_accuracy").query(
        "subgroup == 'all' and rule == 'flag_breast_cancer_history'"
    )
    for key, value in expected.items():
        assert row[key].iloc[0] == pytest.approx(value, nan_ok=True), key
    female = population[population["sex"] == "F"]
    any_flag = read(con, "flag_accuracy").query("subgroup == 'female' and rule == 'any_seed_flag'")
    cells = accuracy.two_by_two(female["red_flag_count"] >= 1, female["reference_standard"])
    assert any_flag[["tp", "fp", "fn", "tn"]].iloc[0].tolist() == [
        cells.tp,
        cells.fp,
        cells.fn,
        cells.tn,
    ]
    alp = read(con, "flag_accuracy").query("rule == 'flag_elevated_alp'")
    assert alp["note"].str.contains("not ascertainable").all() and alp["sensitivity"].isna().all()


def test_rules_containing_the_subgroups_defining_flag_are_not_applicable_there(built):
    # issue 14 item 6: in the breast_cancer_history subgroup that flag and "any seed flag" are
    # positive for everyone: a tautology, marked not applicable and not published as a result
    con, _, _ = built
    acc = read(con, "flag_accuracy").set_index(["subgroup", "rule"])
    for rule in ("flag_breast_cancer_history", "any_seed_flag"):
        row = acc.loc[("breast_cancer_history", rule)]
        assert row["status"] == "not_applicable", rule
        assert "defining flag" in row["note"] and np.isnan(row["sensitivity"])
        assert row["fn"] + row["tn"] == 0  # the tautology: no test negatives
        assert acc.loc[("all", rule), "status"] == "estimated"
        assert not np.isnan(acc.loc[("all", rule), "sensitivity"])
    others = acc.loc["breast_cancer_history"].drop(["flag_breast_cancer_history", "any_seed_flag"])
    assert (others["status"] == "estimated").all()
    assert (acc.loc["female", "status"] == "estimated").all()


def test_time_to_diagnosis_equals_the_functions_on_the_episodes(built):
    con, marts, _ = built
    cohort = marts["cohort"]
    event = np.select(
        [cohort["end_reason"] == "bone_metastasis", cohort["end_reason"] == "death"], [1, 2], 0
    )
    days = np.array([30, 90, 180, 365])
    expected = survival.cumulative_incidence_at(cohort["days_to_follow_up_end"], event, days)
    row = read(con, "time_to_diagnosis").query("stratum_variable == 'overall'").iloc[0]
    for d, est in zip(days, expected.itertuples(), strict=True):
        assert row[f"cif_{d}"] == pytest.approx(est.estimate)
        assert row[f"cif_{d}_lower"] == pytest.approx(est.lower)
        assert row[f"at_risk_{d}"] == est.at_risk
    assert row["n_diagnosed"] == (event == 1).sum() and row["n_died"] == (event == 2).sum()
    q1, median, q3 = survival.quartiles(cohort["days_to_outcome"].dropna().astype(float))
    assert (row["q1_days"], row["median_days"], row["q3_days"]) == pytest.approx((q1, median, q3))
    strata = read(con, "time_to_diagnosis").set_index(["stratum_variable", "stratum"])["n_episodes"]
    assert strata[("overall", "all")] == len(cohort)
    assert strata["red_flag_count"].sum() == cohort["is_in_landmark_population"].sum()
    assert strata["breast_cancer_history"].sum() == len(cohort)
    curve = read(con, "cumulative_incidence").query("stratum_variable == 'overall' and day == 90")
    assert curve["estimate"].iloc[0] == pytest.approx(row["cif_90"])


def tiny_episodes() -> pd.DataFrame:
    """Five episodes: one diagnosed on day 10 (before the landmark, no flags by then)."""
    return pd.DataFrame({
        "end_reason": ["bone_metastasis", "bone_metastasis", "horizon", "death", "horizon"],
        "days_to_follow_up_end": [10.0, 100.0, 365.0, 200.0, 365.0],
        "days_to_outcome": pd.array([10, 100, None, None, None], dtype="Float64"),
        "has_breast_cancer_history": pd.array([False, True, False, False, True], dtype="boolean"),
        "is_in_landmark_population": pd.array([False, True, True, True, True], dtype="boolean"),
        analysis.SCORE: pd.array([0, 2, 0, 1, 2], dtype="Float64"),
    })  # fmt: skip


def test_landmark_strata_start_at_the_landmark_without_early_diagnoses():
    # PROTOCOL 6.5: red_flag_count is assessed up to the landmark, so its strata are analysed
    # from the landmark on, in the landmark population; a day-10 diagnosis is in none of them
    table = analysis.time_to_diagnosis_table(tiny_episodes(), SETTINGS).set_index(
        ["stratum_variable", "stratum"]
    )
    flags = table.loc["red_flag_count"]
    assert flags["n_episodes"].sum() == 4 and flags.loc["0", "n_diagnosed"] == 0
    assert flags.loc["2+", ["n_diagnosed", "median_days"]].tolist() == [1, 100]
    assert (flags["time_zero"] == "landmark").all()
    assert (flags["time_zero_day"] == SETTINGS.landmark_days).all()
    # a day before the landmark has no conditional estimate; later ones are conditional on it
    assert flags[["cif_30", "at_risk_30"]].isna().all().all()
    assert flags.loc["2+", "cif_365"] == pytest.approx(0.5)
    assert flags.loc["2+", "at_risk_90"] == 2
    # strata known at index still start at the index date and keep every episode
    assert table.loc[("overall", "all"), "time_zero"] == "index_date"
    assert table.loc["breast_cancer_history", "n_episodes"].sum() == 5
    curve = analysis.cumulative_incidence_table(tiny_episodes(), SETTINGS)
    by_flags = curve[curve["stratum_variable"] == "red_flag_count"]
    assert by_flags["day"].min() == SETTINGS.landmark_days
    assert (by_flags.query("stratum == '0'")["estimate"] == 0).all()
    overall = curve[curve["stratum_variable"] == "overall"]
    assert overall["day"].min() == 0 and overall.query("day == 10")["estimate"].iloc[0] == 0.2


def test_score_and_model_rows(built):
    con, marts, _ = built
    population = landmark(marts)
    y = population["reference_standard"].astype(bool).to_numpy()
    expected = roc.delong_auroc(y, population["red_flag_count"].to_numpy(float))
    score = read(con, "score_performance").query("subgroup == 'all'").iloc[0]
    assert score["auroc"] == pytest.approx(expected.auroc)
    assert (score["auroc_lower"], score["auroc_upper"]) == pytest.approx(
        (expected.lower, expected.upper)
    )
    assert score["auroc_lower"] > 0.5  # planted signal
    points = read(con, "roc_points").query("subgroup == 'all' and threshold == 2").iloc[0]
    two = (
        read(con, "flag_accuracy")
        .query("subgroup == 'all' and rule == 'two_or_more_seed_flags'")
        .iloc[0]
    )
    assert points[["tp", "fp", "fn", "tn"]].tolist() == two[["tp", "fp", "fn", "tn"]].tolist()
    model = read(con, "model_performance").query("subgroup == 'all'").iloc[0]
    assert model["n"] == len(population) and model["n_events"] == y.sum()
    assert "elevated_alp" not in model["features"] and model["auroc_lower"] > 0.5
    calibration = read(con, "calibration").query("subgroup == 'all'")
    assert calibration["n"].sum() == len(population)
    curve = read(con, "decision_curve").query("subgroup == 'all'")
    prevalence = y.mean()
    pt = curve["threshold"].to_numpy()
    np.testing.assert_allclose(
        curve["net_benefit_treat_all"], prevalence - (1 - prevalence) * pt / (1 - pt)
    )


def test_diagnostic_pathway_counts(built):
    con, marts, _ = built
    pathway = read(con, "diagnostic_pathway").set_index(["measure", "category"])["n"]
    imaged = marts["episode_pathway"]["first_spine_imaging_date"].notna().sum()
    assert pathway[("days_onset_to_first_imaging", "all")] == imaged
    first = pathway["first_modality"]
    assert (
        first.drop("all").sum()
        == first["all"]
        == (marts["cohort"]["end_reason"] == "bone_metastasis").sum()
    )


def test_no_events_like_real_synthea_claims_no_signal():
    marts = simulate_marts(2, n=600, outcome_risk=0.0)
    con = warehouse(marts)
    counts = analysis.run_statistics(con, SETTINGS, "run-0")
    assert counts["time_to_diagnosis"] == 6
    score = read(con, "score_performance")
    model = read(con, "model_performance")
    assert score["auroc"].isna().all() and model["auroc"].isna().all()
    assert (model["note"] == "no events").all() and score["note"].str.contains("no events").all()
    accuracy_rows = read(con, "flag_accuracy")
    assert accuracy_rows["sensitivity"].isna().all() and accuracy_rows["lr_positive"].isna().all()
    ttd = read(con, "time_to_diagnosis")
    assert (ttd["n_diagnosed"] == 0).all() and (ttd["cif_365"] == 0).all()
    assert read(con, "calibration").empty
    assert read(con, "decision_curve")["net_benefit_model"].isna().all()
    analysis.build_release(con, SETTINGS, "run-0")
    assert read(con, "score_performance", "release")["auroc"].isna().all()


def test_sensitivity_rows_from_other_schemas(built):
    con, marts, _ = built
    con.execute("create schema if not exists mart__sens_landmark_0")
    variant = marts["red_flags"].assign(
        flag_persistent_pain=pd.array([pd.NA] * len(marts["red_flags"]), dtype="boolean")
    )
    for name, frame in {**marts, "red_flags": variant}.items():
        con.register("frame", frame)
        con.execute(f"create or replace table mart__sens_landmark_0.{name} as select * from frame")
        con.unregister("frame")
    frames = [
        analysis.sensitivity_rows(con, SETTINGS, "primary", "mart"),
        analysis.sensitivity_rows(
            con, SETTINGS.replace(landmark_days=0), "landmark_0", "mart__sens_landmark_0"
        ),
    ]
    n = analysis.write_sensitivity_table(con, frames, "run-1")
    table = read(con, "sensitivity_analyses")
    assert len(table) == n and (table["run_id"] == "run-1").all()
    assert set(SENSITIVITY_CONTRACT) <= set(table.columns)
    assert set(table["analysis"]) == {"primary", "landmark_0"}
    primary = table.query(
        "analysis == 'primary' and subgroup == 'all' and rule == 'flag_night_pain' and measure == 'sensitivity'"
    ).iloc[0]
    direct = (
        read(con, "flag_accuracy").query("subgroup == 'all' and rule == 'flag_night_pain'").iloc[0]
    )
    assert primary["estimate"] == pytest.approx(direct["sensitivity"])
    assert primary["n_events"] == direct["tp"] + direct["fn"]
    persistence = table.query("analysis == 'landmark_0' and rule == 'flag_persistent_pain'")
    assert persistence["estimate"].isna().all()
    aurocs = table.query("measure == 'auroc' and subgroup == 'all'")
    assert set(aurocs["rule"]) == {"red_flag_count", "model"}


def test_release_holds_only_safe_aggregates(built):
    con, _, _ = built
    written = analysis.build_release(con, SETTINGS, "run-1")
    assert set(written) >= set(CONTRACT) | {"attrition"}
    released = {
        r[0]
        for r in con.execute(
            "select table_name from information_schema.tables where table_schema = 'release'"
        ).fetchall()
    }
    assert not released & {"cohort", "red_flags", "red_flag_evidence", "episode_pathway"}
    specs = release_specs(SETTINGS.cumulative_incidence_days)
    assert "disclosure_log" in released  # issue 10: the output checker's log
    assert "labels" in released  # issue 15: words for the codes, no values
    for table in released - {"disclosure_log", "labels"}:
        frame = read(con, table, "release")
        assert (frame["run_id"] == "run-1").all()
        # issue 10 (intended): the mart's columns (less the curve's daily n_outcome), the
        # coarsening's step_threshold / bin_to, a <column>_status per value, then run_id
        spec = specs[table]
        hidden = ("run_id", "n_outcome", *spec.internal)  # internal: never released (issue 10)
        mart_columns = [c for c in read(con, table).columns if c not in hidden]
        values = [c for c in frame.columns if not c.endswith("_status")]
        assert values[: len(mart_columns)] == mart_columns and values[-1] == "run_id"
        assert set(values[len(mart_columns) : -1]) <= {"step_threshold", "bin_to"}
        numeric = {*spec.counts, *spec.derived, *(c for cs in spec.curve.values() for c in cs)}
        numeric -= set(spec.internal)
        assert {c for c in frame.columns if c.endswith("_status")} == {
            f"{c}_status" for c in numeric
        }
        for col in (c for c in specs[table].counts if c not in spec.internal):
            values = frame[col].dropna()
            assert not ((values >= 1) & (values < SETTINGS.min_cell)).any(), (table, col)
    curve = read(con, "cumulative_incidence", "release")
    assert (curve["at_risk"] >= SETTINGS.min_cell).all()


def test_schema_names_are_checked():
    with pytest.raises(ValueError, match="schema"):
        analysis.load_episodes(duckdb.connect(), "mart; drop table x")


def test_nan_rows_do_not_crash_a_tiny_cohort():
    marts = simulate_marts(3, n=8)
    con = warehouse(marts)
    counts = analysis.run_statistics(con, SETTINGS, "tiny")
    assert counts["model_performance"] == 3
    assert all(isinstance(v, int) for v in counts.values())
    assert not math.isnan(read(con, "time_to_diagnosis")["n_episodes"].iloc[0])


# ---- the real pipeline on generator output and on the real Synthea exports ------------------

GENERATOR_SEEDS = (101, 102)
GENERATOR_PATIENTS = 2500
STAT_TABLES = ("flag_accuracy", "time_to_diagnosis", "score_performance", "model_performance")


def built_from_export(
    export, root, settings: StudySettings = SETTINGS, *, release: bool = False
) -> dict[str, pd.DataFrame]:
    """Ingest an export, build the SQL models, run the statistics (and the release)."""
    from pipelines import warehouse as wh
    from pipelines.ingest import ingest_export
    from pipelines.models import build_models

    ingest_export(export, root / "warehouse.duckdb", log=lambda message: None)
    con = wh.connect(root / "warehouse.duckdb")
    try:
        build_models(con, settings)
        analysis.run_statistics(con, settings, "run")
        tables = {name: read(con, name) for name in analysis.ANALYSIS_TABLES}
        if release:
            analysis.build_release(con, settings, "run")
            tables |= {f"release.{name}": read(con, name, "release") for name in STAT_TABLES}
    finally:
        con.close()
    return tables


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Per seed: (mart tables, truth_episodes.csv, truth.json) of one generated export."""
    import json

    from pipelines import generator
    from pipelines.generator.params import PlantedParameters

    planted = PlantedParameters(edge_case_fraction=0.0)  # the minimum: 2 per edge scenario
    out = []
    for seed in GENERATOR_SEEDS:
        root = tmp_path_factory.mktemp(f"generated_{seed}")
        generator.generate(root / "export", patients=GENERATOR_PATIENTS, seed=seed, planted=planted)
        truth = pd.read_csv(root / "export" / "truth_episodes.csv")
        summary = json.loads((root / "export" / "truth.json").read_text(encoding="utf-8"))
        out.append((built_from_export(root / "export", root), truth, summary))
    return out


def test_generator_flag_intervals_cover_the_planted_accuracy(generated):
    """The generator plants exact counts (round(rate x n) flagged among the landmark cases and
    non-cases), so each Wilson interval should cover the planted rate essentially always; 95%
    is the floor (nominal coverage under random sampling is tested in test_stats_accuracy)."""
    covered, total = 0, 0
    for tables, _, summary in generated:
        rows = tables["flag_accuracy"].query("subgroup == 'all'").set_index("rule")
        for flag, rates in summary["planted"]["flags"].items():
            row = rows.loc[f"flag_{flag}"]
            assert row["tp"] + row["fn"] >= 15 and row["fp"] + row["tn"] >= 400
            for measure in ("sensitivity", "specificity"):
                total += 1
                covered += row[f"{measure}_lower"] <= rates[measure] <= row[f"{measure}_upper"]
    assert total == len(GENERATOR_SEEDS) * 9 * 2
    assert covered / total >= 0.95, (covered, total)


def planted_median_days(median: float, sigma: float) -> float:
    """Median of the planted time to diagnosis: rint(lognormal), redrawn outside 1..360 and
    on 40..44 (docs/generator.md), i.e. the lognormal restricted to those whole days."""
    from scipy.stats import norm

    days = np.array([d for d in range(1, 361) if not 40 <= d <= 44], dtype=float)
    z = lambda x: (np.log(x) - np.log(median)) / sigma  # noqa: E731
    mass = norm.cdf(z(days + 0.5)) - norm.cdf(z(np.maximum(days - 0.5, 1e-9)))
    cumulative = np.cumsum(mass) / mass.sum()
    return float(days[np.searchsorted(cumulative, 0.5)])


def test_generator_median_time_to_diagnosis_is_the_planted_one(generated):
    for tables, truth, summary in generated:
        params = summary["planted"]
        overall = tables["time_to_diagnosis"].query("stratum_variable == 'overall'").iloc[0]
        diagnosed = truth.query("expected_step == 'included' and end_reason == 'bone_metastasis'")
        assert overall["n_diagnosed"] == len(diagnosed)
        # exactly the median of the planted days of this sample
        assert overall["median_days"] == pytest.approx(diagnosed["days_to_outcome"].median())
        # and within sampling error of the planted distribution's median
        median = planted_median_days(params["diagnosis_median_days"], params["diagnosis_sigma"])
        density = 1 / (median * params["diagnosis_sigma"] * math.sqrt(2 * math.pi))
        se = 1 / (2 * density * math.sqrt(len(diagnosed)))
        assert abs(overall["median_days"] - median) < 4 * se, (overall["median_days"], median, se)


def planted_score_auroc(flags: dict[str, dict[str, float]]) -> float:
    """AUROC of the seed-flag count when flags are independent given the reference standard."""
    case, control = np.array([1.0]), np.array([1.0])
    for flag in analysis.SEED_FLAGS:
        case = np.convolve(case, [1 - flags[flag]["sensitivity"], flags[flag]["sensitivity"]])
        control = np.convolve(control, [flags[flag]["specificity"], 1 - flags[flag]["specificity"]])
    wins = np.sign(np.subtract.outer(np.arange(case.size), np.arange(control.size)))
    return float(case @ ((wins + 1) / 2) @ control)


def test_generator_auroc_is_well_above_half_and_near_the_planted_one(generated):
    covered = 0
    for tables, _, summary in generated:
        truth = planted_score_auroc(summary["planted"]["flags"])
        score = tables["score_performance"].query("subgroup == 'all'").iloc[0]
        assert score["auroc_lower"] > 0.75, score.to_dict()
        covered += score["auroc_lower"] <= truth <= score["auroc_upper"]
        model = tables["model_performance"].query("subgroup == 'all'").iloc[0]
        assert model["note"] == "" and model["auroc_lower"] > 0.75
        assert 0 < model["brier_score"] < 0.1 and model["calibration_slope"] > 0
    assert covered >= len(GENERATOR_SEEDS) - 1  # a 95% interval: all but one at worst


def test_real_synthea_exports_have_no_events_and_claim_no_signal(real_exports, tmp_path):
    # an early study start keeps an episode or two in every export (one has none by default)
    settings = SETTINGS.replace(study_start_date=pd.Timestamp("2010-01-01").date())
    for k, export in enumerate(real_exports):
        root = tmp_path / str(k)
        root.mkdir()
        tables = built_from_export(export, root, settings, release=True)
        assert tables["time_to_diagnosis"]["n_episodes"].iloc[0] >= 1
        ttd = tables["time_to_diagnosis"]
        assert (ttd["n_diagnosed"] == 0).all()
        assert ttd["median_days"].isna().all()
        cif = ttd[[f"cif_{d}" for d in settings.cumulative_incidence_days]]
        assert ((cif == 0) | cif.isna()).all(axis=None)
        accuracy_rows = tables["flag_accuracy"]
        assert (accuracy_rows["tp"] + accuracy_rows["fn"] == 0).all()
        for measure in ("sensitivity", "lr_positive", "lr_negative", "diagnostic_odds_ratio"):
            assert accuracy_rows[measure].isna().all(), measure
        assert ((accuracy_rows["ppv"] == 0) | accuracy_rows["ppv"].isna()).all()
        for name in ("score_performance", "model_performance"):
            frame = tables[name]
            assert frame["auroc"].isna().all() and frame["auroc_lower"].isna().all()
            assert frame["note"].str.contains("no events|no episodes").all(), frame["note"]
            assert tables[f"release.{name}"]["auroc"].isna().all()
        model = tables["model_performance"]
        assert (
            model[["calibration_intercept", "calibration_slope", "brier_score"]]
            .isna()
            .all(axis=None)
        )
        assert tables["calibration"].empty
        assert tables["decision_curve"]["net_benefit_model"].isna().all()
        assert tables["roc_points"]["sensitivity"].isna().all()


def test_reference_interval_is_the_days_to_diagnosis_of_the_reference_positives(built):
    """STARD item 22: index to reference standard, among the landmark reference positives."""
    con, marts, _ = built
    table = read(con, "reference_interval").set_index("subgroup")
    population = landmark(marts)
    positive = population[population["reference_standard"].astype(bool).to_numpy()]
    days = positive["days_to_outcome"].astype(float)
    assert (
        table.loc["all", "n"] == len(positive) == read(con, "model_performance").loc[0, "n_events"]
    )
    assert table.loc["all", "median_days"] == pytest.approx(days.median())
    assert table.loc["all", "q1_days"] == pytest.approx(days.quantile(0.25))
    assert (days > SETTINGS.landmark_days).all()  # diagnosed after the landmark, by design
