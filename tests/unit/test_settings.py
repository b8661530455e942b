"""Study parameters: protocol defaults, TOML overrides, clear errors."""

import dataclasses
import datetime as dt

import pytest

from pipelines.settings import SettingsError, StudySettings, load_settings


def test_defaults_are_the_protocols():
    s = StudySettings()
    assert (s.washout_days, s.lookback_days, s.min_age, s.horizon_days) == (365, 365, 18, 365)
    assert (s.landmark_days, s.persistence_days, s.flag_lookback_days) == (42, 42, 365)
    assert (s.weight_loss_fraction, s.alp_upper_limit, s.min_cell) == (0.05, 147.0, 11)
    assert s.sexes == ("F", "M") and s.allow_repeat_episodes is False


def test_toml_overrides_by_protocol_name(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text('washout_days = 180\nstudy_start_date = 2018-06-01\nsexes = ["F"]\n')
    s = load_settings(cfg)
    assert s.washout_days == 180
    assert s.study_start_date == dt.date(2018, 6, 1)
    assert s.sexes == ("F",)
    assert s.lookback_days == 365


def test_a_study_table_is_read_like_top_level_keys(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text("[study]\nwashout_days = 180\ndecision_thresholds = [0.05, 1]\n")
    with pytest.raises(
        SettingsError, match="decision_thresholds must lie strictly between 0 and 1"
    ):
        load_settings(cfg)
    cfg.write_text("[study]\nwashout_days = 180\ndecision_thresholds = [0.05, 0.1]\n")
    s = load_settings(cfg)
    assert s.washout_days == 180 and s.decision_thresholds == (0.05, 0.1)


def test_example_config_in_repo_loads():
    from pathlib import Path

    s = load_settings(Path(__file__).resolve().parents[2] / "study.example.toml")
    assert s == StudySettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("washout_dayz = 10\n", "unknown parameter(s) washout_dayz"),
        ("landmark_days = 400\n", "landmark_days (400) must not be longer than horizon_days (365)"),
        ("lookback_days = -1\n", "lookback_days must not be negative"),
        ('study_start_date = "yesterday"\n', "study_start_date: not a date"),
        ("min_cell = 2.5\n", "min_cell: expected a whole number"),
        ('sexes = ["X"]\n', "sexes must be"),
        ("washout_days = \n", "not valid TOML"),
        ("washout_days = -180\n", "washout_days must not be negative"),
        ("flag_lookback_days = -1\n", "flag_lookback_days must not be negative"),
        ("weight_loss_fraction = 1.5\n", "weight_loss_fraction must be between 0 and 1"),
        ("alp_upper_limit = 0\n", "alp_upper_limit must be positive"),
        ("horizon_days = 30\n", "landmark_days (42) must not be longer than horizon_days (30)"),
        ("allow_repeat_episodes = 1\n", "allow_repeat_episodes: expected true or false"),
        ("data_extract_date = 2010-01-01\n", "data_extract_date is before study_start_date"),
        ('sexes = ["F", 1]\n', "sexes[1]: expected a string"),
        (
            'cumulative_incidence_days = [30, "x"]\n',
            "cumulative_incidence_days[1]: expected a whole number",
        ),
        (
            "cumulative_incidence_days = [30, 400]\n",
            "cumulative_incidence_days must lie between 1 and horizon_days",
        ),
        ('decision_thresholds = ["a"]\n', "decision_thresholds[0]: expected a number"),
        ("[study]\nlandmark_days = 400\n", "landmark_days (400) must not be longer"),
        ("[other]\nwashout_days = 1\n", "unknown parameter(s) other"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    cfg = tmp_path / "study.toml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=None) as info:
        load_settings(cfg)
    assert message in str(info.value)
    assert str(cfg) in str(info.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        StudySettings().washout_days = 1  # type: ignore[misc]
