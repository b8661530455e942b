"""An unreviewed value set (no row in versions.csv) is warned about once per run.

A run loads the value sets for every build (the primary and each sensitivity variant); the
warning is about the files, which do not change within a run, so one line per value set.
"""

from __future__ import annotations

import logging
import shutil

import pytest

from pipelines import valuesets
from pipelines.generator import generate
from pipelines.settings import StudySettings
from pipelines.study import run_study

WARNING = "value set example has no row in versions.csv"


@pytest.fixture
def unreviewed_value_set(tmp_path, monkeypatch):
    """The value sets with one more, `example`, that versions.csv does not list."""
    folder = tmp_path / "valuesets"
    folder.mkdir()
    for path in [*valuesets.value_set_files(), valuesets.VERSIONS_FILE]:
        shutil.copy(path, folder / path.name)
    (folder / "example.csv").write_text(
        "concept,code_system,code,match,description\nexample,SNOMED,386661006,exact,Fever\n"
    )
    monkeypatch.setattr(valuesets, "FOLDER", folder)
    monkeypatch.setattr(valuesets, "VERSIONS_FILE", folder / "versions.csv")
    return folder


def test_a_run_warns_once_about_an_unreviewed_value_set(unreviewed_value_set, tmp_path, caplog):
    generate(tmp_path / "export", patients=200, seed=5)
    settings = StudySettings()
    assert settings.sensitivity_analyses  # several builds, each loading the value sets
    with caplog.at_level(logging.WARNING, logger="pipelines.valuesets"):
        result = run_study(tmp_path / "export", tmp_path / "w.duckdb", settings, say=lambda m: None)
    assert result.status == "succeeded"
    assert [r.getMessage() for r in caplog.records].count(WARNING + ": loaded as unreviewed") == 1
