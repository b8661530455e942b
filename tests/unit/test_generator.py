"""The synthetic generator: deterministic, Synthea-shaped, and its planted truth matches its CSVs.

One default export (1,500 patients) is generated per module; layout, split and gzip
variants use a few hundred patients. Facts about the CSVs are recomputed here with
plain pandas, independently of the generator's own bookkeeping.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from pipelines.cli import main
from pipelines.generator import PlantedParameters, generate, load_planted
from pipelines.generator import catalog as cat
from pipelines.generator.layouts import LAYOUTS, TABLES
from pipelines.generator.params import EDGE_SCENARIOS, FLAGS, PlantedParameterError
from pipelines.generator.records import CODES

PATIENTS, SEED = 1500, 7
VOLUME_TABLES = ("encounters", "conditions", "observations", "procedures", "medications")
ICD10_CODES = {c.code for c in CODES if c.system == "ICD10"}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated") / "export"
    generate(out, patients=PATIENTS, seed=SEED)
    return out


@pytest.fixture(scope="module")
def truth(export) -> pd.DataFrame:
    return pd.read_csv(export / "truth_episodes.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def summary(export) -> dict:
    return json.loads((export / "truth.json").read_text(encoding="utf-8"))


def read(folder: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)


def header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return next(csv.reader(f))


def real_export(real_exports: list[Path], name: str) -> Path:
    return next(p for p in real_exports if p.name.startswith(name))


# ---------------------------------------------------------------- determinism and layout


def test_same_arguments_give_byte_identical_files_and_another_seed_does_not(tmp_path):
    for name in ("a", "b"):
        generate(tmp_path / name, patients=250, seed=11, split=2)
    generate(tmp_path / "c", patients=250, seed=12, split=2)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert len(files) == 2 * len(TABLES) + 2
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "patients-1.csv").read_bytes() != (
        tmp_path / "c" / "patients-1.csv"
    ).read_bytes()


@pytest.mark.parametrize(("layout", "real"), [("3.3", "Evinett"), ("3.0", "OHDSI")])
def test_headers_are_those_of_the_real_export_of_that_version(tmp_path, real_exports, layout, real):
    generate(tmp_path, patients=200, seed=3, layout=layout)
    source = real_export(real_exports, real)
    for table in TABLES:
        assert header(tmp_path / f"{table}.csv") == header(source / f"{table}.csv"), table


def test_the_2x_layout_has_the_older_columns_and_no_icd10_codes(tmp_path):
    generate(tmp_path, patients=300, seed=3, layout="2.x")
    assert header(tmp_path / "procedures.csv")[:3] == ["DATE", "PATIENT", "ENCOUNTER"]
    imaging = header(tmp_path / "imaging_studies.csv")
    assert not {"SERIES_UID", "INSTANCE_UID", "PROCEDURE_CODE"} & set(imaging)
    assert "SYSTEM" not in header(tmp_path / "conditions.csv")
    assert "CATEGORY" not in header(tmp_path / "observations.csv")
    assert not set(read(tmp_path, "conditions")["CODE"]) & ICD10_CODES


def test_icd10_study_codes_carry_the_icd10_system_in_the_3_3_layout(export):
    conditions = read(export, "conditions")
    icd = conditions[conditions["CODE"].isin(ICD10_CODES)]
    assert len(icd) > 0
    assert set(icd["SYSTEM"]) == {cat.ICD10_URL}
    assert set(conditions.loc[~conditions.index.isin(icd.index), "SYSTEM"]) == {cat.SNOMED_URL}


def gunzip_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()


def test_split_parts_concatenate_to_the_unsplit_files_and_gzip_round_trips(tmp_path):
    generate(tmp_path / "one", patients=240, seed=5)
    generate(tmp_path / "parts", patients=240, seed=5, split=3, gzip=True)
    for table in TABLES:
        whole = (tmp_path / "one" / f"{table}.csv").read_text(encoding="utf-8").splitlines()
        parts = [gunzip_lines(tmp_path / "parts" / f"{table}-{k}.csv.gz") for k in (1, 2, 3)]
        assert all(lines[0] == whole[0] for lines in parts), table
        assert [row for lines in parts for row in lines[1:]] == whole[1:], table
    patients = [gunzip_lines(tmp_path / "parts" / f"patients-{k}.csv.gz") for k in (1, 2, 3)]
    assert [len(lines) - 1 for lines in patients] == [80, 80, 80]


def test_text_is_never_quoted_and_dates_use_synthea_formats(export):
    for table in TABLES:
        assert '"' not in (export / f"{table}.csv").read_text(encoding="utf-8"), table
    assert read(export, "conditions")["START"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert read(export, "patients")["BIRTHDATE"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    for table, column in (
        ("encounters", "START"),
        ("observations", "DATE"),
        ("medications", "START"),
    ):
        assert (
            read(export, table)[column].str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").all()
        ), table


def test_rows_per_patient_are_within_half_and_double_the_real_exports(export, real_exports):
    def rows(path: Path) -> int:
        with path.open(encoding="utf-8") as f:
            return sum(1 for _ in f) - 1

    real_patients = sum(rows(p / "patients.csv") for p in real_exports)
    for table in VOLUME_TABLES:
        real = sum(rows(p / f"{table}.csv") for p in real_exports) / real_patients
        ours = rows(export / f"{table}.csv") / PATIENTS
        assert 0.5 * real <= ours <= 2 * real, (table, ours, real)


def test_the_latest_date_in_the_export_is_the_planted_extract_date(export):
    latest = max(
        read(export, "encounters")["STOP"].str[:10].max(), read(export, "conditions")["START"].max()
    )
    assert latest == PlantedParameters().extract_date.isoformat()


# ---------------------------------------------------------------- truth against the CSVs


def test_outcome_records_are_exactly_the_planted_ones(export, truth, summary):
    conditions = read(export, "conditions")
    outcome = conditions[conditions["CODE"].isin(cat.BONE_METASTASIS_CODES)]
    assert (
        len(outcome)
        == summary["outcome"]["outcome_condition_rows"]
        == truth["outcome_record_count"].astype(int).sum()
    )
    allowed = set(
        truth.loc[
            truth["scenario"].isin(
                ["case", "leakage", "outcome_after_horizon", "prevalent_metastasis"]
            ),
            "patient_id",
        ]
    )
    assert set(outcome["PATIENT"]) <= allowed
    diagnosed = truth[truth["end_reason"] == "bone_metastasis"]
    assert len(diagnosed) == summary["cohort"]["outcomes_within_follow_up"] > 0
    first = outcome.groupby("PATIENT")["START"].min()
    assert (
        first.loc[diagnosed["patient_id"]].to_numpy() == diagnosed["outcome_date"].to_numpy()
    ).all()


def test_study_signal_appears_only_where_a_scenario_plants_it(export, truth):
    planted = set(truth["patient_id"])
    conditions, encounters = read(export, "conditions"), read(export, "encounters")
    back_pain = set(conditions.loc[conditions["CODE"].isin(cat.BACK_PAIN_CODES), "PATIENT"])
    back_pain |= set(encounters.loc[encounters["REASONCODE"].isin(cat.BACK_PAIN_CODES), "PATIENT"])
    assert back_pain == planted
    study_codes = cat.STUDY_CONDITION_CODES
    assert set(conditions.loc[conditions["CODE"].isin(study_codes), "PATIENT"]) <= planted
    medications = read(export, "medications")
    assert set(medications.loc[medications["CODE"].isin(cat.ANALGESIC_CODES), "PATIENT"]) <= planted
    spine = {k.procedure.code for k in cat.SPINE_IMAGING.values()}
    procedures = read(export, "procedures")
    assert set(procedures.loc[procedures["CODE"].isin(spine), "PATIENT"]) <= planted
    observations = read(export, "observations")
    alp = observations[observations["CODE"] == cat.ALP.code]
    assert set(alp.loc[alp["VALUE"].astype(float) > 147, "PATIENT"]) <= planted


def test_background_weights_drift_under_two_percent(export, truth):
    observations = read(export, "observations")
    weight = observations[observations["CODE"] == cat.WEIGHT.code].assign(
        kg=lambda d: d["VALUE"].astype(float)
    )
    dropped = truth.loc[
        (truth["weight_loss_measured"] == "true") | (truth["scenario"] == "leakage"), "patient_id"
    ]
    weight = weight[~weight["PATIENT"].isin(dropped)]
    spread = weight.groupby("PATIENT")["kg"].agg(lambda kg: kg.max() / kg.min() - 1)
    assert len(spread) > PATIENTS * 0.9
    assert spread.max() < 0.02


def test_measured_weight_loss_recomputed_from_observations_matches_the_truth(export, truth):
    observations = read(export, "observations")
    weight = observations[observations["CODE"] == cat.WEIGHT.code]
    weight = pd.DataFrame(
        {
            "patient_id": weight["PATIENT"],
            "day": pd.to_datetime(weight["DATE"].str[:10]),
            "kg": weight["VALUE"].astype(float),
        }
    )
    cohort = truth[truth["expected_step"] == "included"].copy()
    cohort["index"] = pd.to_datetime(cohort["index_date"])
    cohort["outcome"] = pd.to_datetime(cohort["outcome_date"].replace("", None))
    joined = weight.merge(cohort[["patient_id", "index", "outcome"]], on="patient_id")
    rel = (joined["day"] - joined["index"]).dt.days
    before_outcome = joined["outcome"].isna() | (joined["day"] < joined["outcome"])
    baseline = joined[(rel >= -365) & (rel < 0)].groupby("patient_id")["kg"].max()
    window = joined[(rel >= -365) & (rel <= 42) & before_outcome].sort_values(
        ["patient_id", "day", "kg"]
    )
    latest = window.groupby("patient_id")["kg"].last()
    both = pd.concat([baseline.rename("baseline"), latest.rename("latest")], axis=1).dropna()
    measured = set(both.index[both["latest"] <= 0.95 * both["baseline"]])
    assert measured == set(cohort.loc[cohort["weight_loss_measured"] == "true", "patient_id"])
    assert len(measured) > 0


def test_index_age_lookback_and_prevalence_recomputed_from_the_csvs_match_the_truth(export, truth):
    """An independent, minimal cohort derivation (PROTOCOL.md section 3) agrees with the truth."""
    start = pd.Timestamp(PlantedParameters().study_start_date)
    conditions, encounters = read(export, "conditions"), read(export, "encounters")
    back_pain = (
        pd.concat(
            [
                conditions.loc[conditions["CODE"].isin(cat.BACK_PAIN_CODES), ["PATIENT", "START"]],
                encounters.loc[
                    encounters["REASONCODE"].isin(cat.BACK_PAIN_CODES), ["PATIENT", "START"]
                ].assign(START=lambda d: d["START"].str[:10]),
            ]
        )
        .drop_duplicates()
        .assign(day=lambda d: pd.to_datetime(d["START"]))
        .sort_values(["PATIENT", "day"])
    )
    gap = back_pain.groupby("PATIENT")["day"].diff().dt.days
    incident = (
        back_pain[(back_pain["day"] >= start) & (gap.isna() | (gap > 365))]
        .groupby("PATIENT")["day"]
        .min()
    )
    expected = truth.set_index("patient_id")
    has_index = expected["expected_step"] != "incident_episode"
    assert set(incident.index) == set(expected.index[has_index])
    assert (incident.dt.strftime("%Y-%m-%d") == expected.loc[incident.index, "index_date"]).all()
    patients = read(export, "patients").set_index("Id")
    birth = pd.to_datetime(patients.loc[incident.index, "BIRTHDATE"])
    age = (
        incident.dt.year
        - birth.dt.year
        - (
            (incident.dt.month < birth.dt.month)
            | ((incident.dt.month == birth.dt.month) & (incident.dt.day < birth.dt.day))
        ).astype(int)
    )
    assert (age.astype(str) == expected.loc[incident.index, "age_at_index"]).all()
    first = pd.to_datetime(encounters.groupby("PATIENT")["START"].min().str[:10])
    short = (incident - first.loc[incident.index]).dt.days < 365
    assert set(short.index[short]) == set(expected.index[expected["expected_step"] == "lookback"])
    mets = conditions[conditions["CODE"].isin(cat.BONE_METASTASIS_CODES)].assign(
        day=lambda d: pd.to_datetime(d["START"])
    )
    mets = mets.merge(incident.rename("index").reset_index(), on="PATIENT")
    prevalent = set(mets.loc[mets["day"] <= mets["index"], "PATIENT"])
    assert prevalent == set(expected.index[expected["expected_step"] == "no_prevalent_outcome"])


def test_attrition_and_scenario_counts_add_up(truth, summary):
    counts = summary["scenario_counts"]
    assert sum(counts.values()) == PATIENTS
    steps = {s["step"]: s for s in summary["attrition"]}
    assert (
        steps["no_prevalent_outcome"]["n_remaining"] == (truth["expected_step"] == "included").sum()
    )
    assert steps["back_pain_record"]["n_remaining"] == len(truth)
    for step, expected in (
        ("incident_episode", "incident_episode"),
        ("age", "age"),
        ("lookback", "lookback"),
    ):
        assert steps[step]["n_excluded"] == (truth["expected_step"] == expected).sum() > 0


@pytest.mark.parametrize("scenario", EDGE_SCENARIOS)
def test_every_edge_case_is_planted_with_its_expected_result(truth, scenario):
    rows = truth[truth["scenario"] == scenario]
    assert len(rows) >= 2
    expected_step = {
        "washout_not_incident": "incident_episode",
        "pre_study_only": "incident_episode",
        "minor": "age",
        "short_lookback": "lookback",
        "prevalent_metastasis": "no_prevalent_outcome",
    }
    assert set(rows["expected_step"]) == {expected_step.get(scenario, "included")}
    checks = {
        "turns_18_on_index": lambda r: (r["age_at_index"] == "18").all(),
        "minor": lambda r: (r["age_at_index"].astype(int) < 18).all(),
        "repeat_on_day_28": lambda r: (r["flag_persistent_pain"] == "true").all(),
        "early_repeat_visits": lambda r: (r["flag_persistent_pain"] == "false").all(),
        "leakage": lambda r: (
            (r[[f"flag_{f}" for f in FLAGS if f != "age_50_plus"]] == "false").all().all()
            and (r["end_reason"] == "bone_metastasis").all()
        ),
        "outcome_after_horizon": lambda r: (
            (r["end_reason"] == "horizon").all() and (r["reference_standard"] == "false").all()
        ),
    }
    assert checks.get(scenario, lambda r: True)(rows)


def test_flags_match_planted_sensitivity_and_specificity(truth, summary):
    population = truth[
        (truth["is_in_landmark_population"] == "true")
        & truth["reference_standard"].isin(["true", "false"])
    ]
    cases = population["reference_standard"] == "true"
    assert cases.sum() >= 10
    for flag in FLAGS:
        positive = population[f"flag_{flag}"] == "true"
        rate = summary["planted"]["flags"][flag]
        low, high = stats.binom.interval(0.95, cases.sum(), rate["sensitivity"])
        assert low <= (positive & cases).sum() <= high, flag
        low, high = stats.binom.interval(0.95, (~cases).sum(), rate["specificity"])
        assert low <= (~positive & ~cases).sum() <= high, flag
        counts = summary["flag_accuracy"]["all"][f"flag_{flag}"]
        assert (
            counts["tp"] == (positive & cases).sum() and counts["tn"] == (~positive & ~cases).sum()
        )


def test_planted_parameters_change_what_is_planted(tmp_path):
    planted = load_planted(
        None,
        [
            "case_fraction=0.4",
            "flags.night_pain.sensitivity=1.0",
            "flags.night_pain.specificity=1.0",
        ],
    )
    result = generate(tmp_path, patients=400, seed=9, planted=planted)
    population = result.episodes[
        result.episodes["is_in_landmark_population"].eq(True)
        & result.episodes["reference_standard"].isin(["true", "false"])
    ]
    night = population["flag_night_pain"].eq(True)
    assert (night == (population["reference_standard"] == "true")).all()
    assert result.summary["cohort"]["outcomes_within_follow_up"] > 20


# ---------------------------------------------------------------- parameters and command line


def test_planted_file_and_set_overrides_nest_and_validate(tmp_path):
    path = tmp_path / "planted.toml"
    path.write_text(
        "[planted]\ncase_fraction = 0.2\nextract_date = 2024-06-30\n[planted.flags.elevated_alp]\nsensitivity = 0.9\n"
    )
    planted = load_planted(path, ["flags.elevated_alp.specificity=0.5", "decoy_fraction=0"])
    assert planted.case_fraction == 0.2 and planted.decoy_fraction == 0.0
    assert planted.extract_date.isoformat() == "2024-06-30"
    assert (
        planted.flags["elevated_alp"].sensitivity,
        planted.flags["elevated_alp"].specificity,
    ) == (0.9, 0.5)
    assert planted.flags["night_pain"] == PlantedParameters().flags["night_pain"]
    for bad in (
        ["nope=1"],
        ["case_fraction=2"],
        ["flags.unknown.sensitivity=0.1"],
        ["case_fraction"],
    ):
        with pytest.raises(PlantedParameterError):
            load_planted(None, bad)


def test_cli_generates_an_export_and_reports_bad_arguments(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "generate",
            "--patients",
            "120",
            "--seed",
            "4",
            "--out",
            str(out),
            "--layout",
            "3.0",
            "--split",
            "2",
            "--set",
            "case_fraction=0.3",
            "--quiet",
        ]
    )
    assert code == 0
    assert (out / "conditions-2.csv").exists() and (out / "truth.json").exists()
    summary = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    assert summary["planted"]["case_fraction"] == 0.3 and summary["generator"]["layout"] == "3.0"
    assert "Wrote 120 patients" in capsys.readouterr().out
    assert main(["generate", "--patients", "10", "--out", str(out), "--set", "bogus=1"]) == 2
    assert "unknown planted parameter" in capsys.readouterr().err
    assert set(LAYOUTS) == {"3.3", "3.0", "2.x"}
