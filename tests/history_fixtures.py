"""Two consecutive study runs over a growing generated export (issue 15 item 2), built once
per test session and shared by tests/integration/test_run_history.py and tests/integration/test_dashboard.py.

The generator seeds each chunk of patients on its own, so the same seed and chunk size with
more patients writes the same first patients plus new ones: a nested, growing population.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.settings import StudySettings

SEED = 20261207
CHUNK = 100
FIRST, SECOND = 1500, 1540  # the export grows by 40 patients: about ten new episodes
SETTINGS = StudySettings(sensitivity_analyses=())  # the sensitivity rebuilds add nothing here


@dataclass(frozen=True)
class TwoRuns:
    export: Path  # the export as the second run read it
    first: Path  # a copy of the warehouse right after the first run
    warehouse: Path  # the warehouse after both runs
    run_ids: tuple[str, str]


def two_runs(tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "two-runs"
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be building it
        if not (folder / "done").exists():
            _build(folder)
            (folder / "done").touch()
    ids = (folder / "run_ids").read_text().split()
    return TwoRuns(folder / "export", folder / "first.duckdb", folder / "w.duckdb", tuple(ids))


def _build(folder: Path) -> None:
    from pipelines import study
    from pipelines.generator import generate

    export, warehouse = folder / "export", folder / "w.duckdb"
    shutil.rmtree(export, ignore_errors=True)
    warehouse.unlink(missing_ok=True)
    generate(export, patients=FIRST, seed=SEED, chunk_size=CHUNK)
    first = study.run_study(export, warehouse, SETTINGS, say=lambda _: None)
    shutil.copy(warehouse, folder / "first.duckdb")
    generate(export, patients=SECOND, seed=SEED, chunk_size=CHUNK)
    second = study.run_study(export, warehouse, SETTINGS, say=lambda _: None)
    (folder / "run_ids").write_text(f"{first.run_id} {second.run_id}")
