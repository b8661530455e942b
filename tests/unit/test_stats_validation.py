"""Model validation (stats/validation.py): Harrell's bootstrap optimism correction with the
penalty chosen by nested CV, EPV rule, reproducibility, release; on generator output too."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold

from pipelines import analysis
from pipelines.settings import SettingsError, StudySettings
from pipelines.stats import validation
from pipelines.stats.model import calibration_intercept_slope

SETTINGS = StudySettings(validation_bootstraps=30)
PARAMETERS = validation.ValidationParameters.from_settings(SETTINGS)


def simulated_flags(seed: int, n: int, k: int = 6, prevalence: float = 0.15):
    """Binary flags independent given the outcome (so a logistic model on them is right)."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prevalence
    sensitivity = np.linspace(0.3, 0.7, k)
    specificity = np.linspace(0.95, 0.75, k)
    p = np.where(y[:, None], sensitivity, 1 - specificity)
    flags = pd.DataFrame(rng.random((n, k)) < p, columns=[f"flag_{i}" for i in range(k)])
    return flags, pd.Series(y)


# ---- the fast fit is scikit-learn's fit --------------------------------------------------


def test_pattern_fit_equals_sklearn_logistic_regression():
    flags, y = simulated_flags(1, 800)
    x = flags.to_numpy(float)
    patterns = validation.Patterns.of(x)
    rows = np.arange(len(y))
    for c in (0.01, 1.0, 100.0):
        beta = validation.fit_penalised(*validation.pattern_counts(patterns, rows, y.to_numpy()), c)
        reference = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(x, y)
        np.testing.assert_allclose(beta[0], reference.intercept_[0], atol=1e-6)
        np.testing.assert_allclose(beta[1:], reference.coef_[0], atol=1e-6)


def test_penalty_choice_is_logistic_regression_cv_choice():
    flags, y = simulated_flags(2, 400, prevalence=0.1)
    x, yy = flags.to_numpy(float), y.to_numpy()
    grid = (0.001, 0.01, 0.1, 1.0, 10.0)
    p = PARAMETERS.__class__(**{**PARAMETERS.__dict__, "penalty_grid": grid})
    _, chosen = validation.tuned_coefficients(
        validation.Patterns.of(x), np.arange(yy.size), yy, p, seed=7
    )
    folds = StratifiedKFold(n_splits=p.inner_folds, shuffle=True, random_state=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = LogisticRegressionCV(
            Cs=list(grid), cv=folds, scoring="neg_log_loss", tol=1e-10, max_iter=10_000
        ).fit(x, yy)
    assert chosen == pytest.approx(reference.C_[0])


def test_stratified_folds_are_scikit_learns():
    rng = np.random.default_rng(3)
    for n, prevalence in ((60, 0.5), (297, 0.1), (2000, 0.03), (5001, 0.6)):
        for seed in (0, 7, 2**31 - 1):
            y = rng.random(n) < prevalence
            y[:2] = [seed % 2 == 0, True]  # the first label is either class
            folds = validation.stratified_folds(y, 5, seed)
            splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
            for fold, (_, test) in enumerate(splitter.split(np.zeros(n), y)):
                np.testing.assert_array_equal(np.flatnonzero(folds == fold), test)


def test_calibration_equals_the_statsmodels_fit():
    flags, y = simulated_flags(3, 600)
    x = flags.to_numpy(float)
    prob = LogisticRegression(C=0.05).fit(x, y).predict_proba(x)[:, 1]
    np.testing.assert_allclose(
        validation.calibration(y.to_numpy(), prob), calibration_intercept_slope(y, prob), atol=1e-6
    )


def episode_measures(y: np.ndarray, prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """validation.measures by its definition, on the episodes (the code before issue 16 moved
    it onto flag patterns): the reference its numbers must equal to the bit."""
    if y.size == 0 or y.all() or not y.any():
        return np.full(len(validation.SCALAR_MEASURES) + thresholds.size, np.nan)
    intercept, slope = validation.calibration(y, prob)
    ranks = rankdata(prob)
    n1 = int(y.sum())
    auroc = float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * (y.size - n1)))
    treated = prob[None, :] >= thresholds[:, None]
    tp, fp = (treated & y[None, :]).sum(axis=1), (treated & ~y[None, :]).sum(axis=1)
    net_benefit = tp / y.size - fp / y.size * thresholds / (1 - thresholds)
    scalars = [auroc, intercept, slope, float(np.mean((prob - y) ** 2))]
    return np.concatenate([scalars, net_benefit])


def test_measures_on_pattern_counts_equal_the_measures_on_episodes_to_the_bit():
    thresholds = np.asarray(SETTINGS.decision_thresholds)
    rng = np.random.default_rng(12)
    for k, n in ((4, 50), (40, 3000), (300, 20_000)):
        # patterns with tied probabilities (two patterns, one risk), clipped ones, and
        # patterns no episode of the sample has
        prob = np.concatenate([rng.random(k - 3), [0.25, 1e-14, 1 - 1e-14]])[rng.permutation(k)]
        prob[: k // 4] = prob[k // 4 : 2 * (k // 4)]
        of_episode = rng.integers(0, k, n)
        y = rng.random(n) < prob[of_episode] * 0.5 + 0.02
        for rows in (np.arange(n), rng.integers(0, n, n), np.arange(n // 3), np.arange(0)):
            of, yy = of_episode[rows], y[rows]
            assert np.array_equal(
                validation.measures(prob, of, yy, thresholds),
                episode_measures(yy, prob[of], thresholds),
                equal_nan=True,
            )


# ---- optimism, EPV, seeds --------------------------------------------------------------


def by_measure(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["measure"] != "net_benefit"].set_index("measure")


def test_corrected_auroc_is_below_the_apparent_one_and_calibration_slope_shrinks():
    flags, y = simulated_flags(4, 500, k=8, prevalence=0.2)
    table = by_measure(validation.validate_flag_model(flags, y, "all", PARAMETERS))
    auroc = table.loc["auroc"]
    assert auroc["status"] == "estimated" and auroc["bootstraps"] == 30
    assert auroc["optimism"] > 0 and auroc["corrected"] < auroc["apparent"]
    assert auroc["lower"] <= auroc["corrected"] <= auroc["upper"]
    # an overfitted model predicts too extreme risks in new data: slope below the apparent
    assert table.loc["calibration_slope", "corrected"] < table.loc["calibration_slope", "apparent"]
    assert table.loc["brier_score", "corrected"] > table.loc["brier_score", "apparent"]


def test_epv_below_the_refusal_threshold_refuses_the_model_and_says_why():
    flags, y = simulated_flags(5, 60, k=6, prevalence=0.3)
    y[:] = False
    y.iloc[:20] = True  # 20 events / 6 predictors = 3.3 < 5
    table = validation.validate_flag_model(flags, y, "breast_cancer_history", PARAMETERS)
    assert (table["status"] == "refused_low_epv").all()
    assert table[list(validation.VALUES)].isna().all(axis=None)
    assert (table["bootstraps"] == 0).all() and table["penalty_c"].isna().all()
    assert table["events_per_variable"].iloc[0] == pytest.approx(20 / 6)
    assert (table["note"] == "not fitted: fewer than 5 events (or non-events) per predictor").all()
    # between the thresholds: fitted, with a warning
    warned = validation.validate_flag_model(
        flags, y, "x", PARAMETERS.__class__(**{**PARAMETERS.__dict__, "epv_refuse": 3.0})
    )
    assert (warned["status"] == "low_epv_warning").all() and warned["apparent"].notna().any()


def test_constant_flags_are_not_predictors():
    flags, y = simulated_flags(6, 300)
    flags["flag_0"] = True  # the subgroup's defining flag
    assert "flag_0" not in validation.predictors(flags)
    assert validation.validate_flag_model(flags, y, "s", PARAMETERS)["n_predictors"].iloc[0] == 5


def test_same_seed_same_table_other_seed_other_table():
    flags, y = simulated_flags(7, 400)
    first = validation.validate_flag_model(flags, y, "all", PARAMETERS)
    again = validation.validate_flag_model(flags, y, "all", PARAMETERS)
    pd.testing.assert_frame_equal(first, again)
    other = validation.validate_flag_model(
        flags, y, "all", PARAMETERS.__class__(**{**PARAMETERS.__dict__, "seed": 8})
    )
    assert not np.allclose(first["optimism"], other["optimism"], equal_nan=True)


def test_settings_check_the_epv_thresholds_and_the_grid():
    with pytest.raises(SettingsError, match="epv_refuse"):
        StudySettings(epv_warn=5.0, epv_refuse=10.0)
    with pytest.raises(SettingsError, match="validation_penalty_grid"):
        StudySettings(validation_penalty_grid=(1.0, 0.0))
    with pytest.raises(SettingsError, match="validation_bootstraps"):
        StudySettings(validation_bootstraps=-1)


# ---- release ---------------------------------------------------------------------------


def test_release_hides_estimates_resting_on_few_events_and_the_apparent_net_benefit():
    frames = []
    for name, events in (("all", 40), ("female", 25), ("breast_cancer_history", 6)):
        flags, y = simulated_flags(9, 200, k=2)
        y[:] = False
        y.iloc[:events] = True
        p = PARAMETERS.__class__(**{**PARAMETERS.__dict__, "epv_refuse": 0.0, "epv_warn": 0.0})
        frames.append(validation.validate_flag_model(flags, y, name, p))
    table = pd.concat(frames, ignore_index=True)
    released, log = analysis.release_tables({"model_validation": table}, SETTINGS)
    out = released["model_validation"]
    small = out[out["subgroup"] == "breast_cancer_history"]
    assert small["n_events"].isna().all() and small["corrected"].isna().all()
    assert (small["corrected_status"] == "suppressed_small").all()
    shown = out[(out["subgroup"] == "all") & (out["measure"] == "auroc")].iloc[0]
    assert shown["corrected"] == pytest.approx(table.loc[0, "corrected"])
    nb = out[out["measure"] == "net_benefit"]
    assert nb["apparent"].isna().all() and nb["optimism"].isna().all()
    assert nb.loc[nb["subgroup"] == "all", "corrected"].notna().all()
    assert (log["table_name"] == "model_validation").any()


# ---- generator output: planted truth -----------------------------------------------------


def planted_model_auroc(flags: dict[str, dict[str, float]]) -> float:
    """AUROC of the true risk (sum of log likelihood ratios) when the flags are independent
    given the reference standard, by enumerating every flag pattern."""
    rates = list(flags.values())
    score, case, control = [], [], []
    for pattern in itertools.product((0, 1), repeat=len(rates)):
        lr, pc, pn = 0.0, 1.0, 1.0
        for on, r in zip(pattern, rates, strict=True):
            se, sp = r["sensitivity"], r["specificity"]
            pc *= se if on else 1 - se
            pn *= 1 - sp if on else sp
            lr += math.log(se / (1 - sp)) if on else math.log((1 - se) / sp)
        score.append(lr), case.append(pc), control.append(pn)
    score, case, control = map(np.array, (score, case, control))
    wins = np.sign(np.subtract.outer(score, score))
    return float(case @ ((wins + 1) / 2) @ control)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from pipelines import generator
    from pipelines import warehouse as wh
    from pipelines.generator.params import PlantedParameters
    from pipelines.ingest import ingest_export
    from pipelines.models import build_models

    root = tmp_path_factory.mktemp("validation")
    planted = PlantedParameters(edge_case_fraction=0.0, case_fraction=0.25)
    generator.generate(root / "export", patients=2000, seed=11, planted=planted)
    summary = json.loads((root / "export" / "truth.json").read_text(encoding="utf-8"))
    ingest_export(root / "export", root / "warehouse.duckdb", log=lambda message: None)
    con = wh.connect(root / "warehouse.duckdb")
    try:
        build_models(con, SETTINGS)
        analysis.run_statistics(con, SETTINGS, "run")
        analysis.build_release(con, SETTINGS, "run")
        table = con.execute("select * from mart.model_validation").df()
        released = con.execute("select * from release.model_validation").df()
    finally:
        con.close()
    return table, released, summary


def test_generator_corrected_auroc_at_most_apparent_and_cis_cover_the_planted_truth(generated):
    table, released, summary = generated
    everyone = by_measure(table[table["subgroup"] == "all"])
    auroc = everyone.loc["auroc"]
    assert auroc["status"] in ("estimated", "low_epv_warning") and auroc["bootstraps"] >= 25
    assert auroc["corrected"] <= auroc["apparent"]
    truth = planted_model_auroc(summary["planted"]["flags"])
    assert auroc["lower"] <= truth <= auroc["upper"], (truth, auroc.to_dict())
    # the flags are planted independent given the outcome, so the logistic model is right:
    # calibration intercept 0 and slope 1 in the population
    assert everyone.loc["calibration_intercept", "lower"] <= 0
    assert everyone.loc["calibration_intercept", "upper"] >= 0
    assert (
        everyone.loc["calibration_slope", "lower"]
        <= 1
        <= everyone.loc["calibration_slope", "upper"]
    )
    # the breast-history subgroup: its defining flag is no predictor
    history = table[table["subgroup"] == "breast_cancer_history"]
    assert (history["n_predictors"] == 8).all()
    assert set(released["subgroup"]) == {"all", "female", "breast_cancer_history"}
    assert released.loc[released["measure"] == "net_benefit", "apparent"].isna().all()
