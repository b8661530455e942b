"""Two consecutive study runs over a growing generated export (issue 15 item 2), built once
per test session and shared by tests/integration/test_run_history.py and tests/integration/test_dashboard.py.

The generator seeds each chunk of patients on its own, so the same seed and chunk size with
more patients writes the same first patients plus new ones: a nested, growing population.

`cases_added`: the same two runs where the export grows by a few chosen cases (12 with a
red-flag count of at most 1, 2 with at least 4) taken from another generated export: the
populations grow by >= min_cell cases and 0 non-cases, so the curves stay released, while
the cases at the high cut-offs grow by 2 (what a pooled curve could give away).
"""

from __future__ import annotations

import csv
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
    return _shared(tmp_path_factory, "two-runs", _build)


def cases_added(tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    return _shared(tmp_path_factory, "cases-added", _build_cases_added)


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> TwoRuns:
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be building it
        if not (folder / "done").exists():
            build(folder)
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


def _build_cases_added(folder: Path) -> None:
    from pipelines import study
    from pipelines.generator import generate
    from pipelines.generator.params import PlantedParameters

    export, warehouse, donor = folder / "export", folder / "w.duckdb", folder / "donor"
    for path in (export, donor):
        shutil.rmtree(path, ignore_errors=True)
    warehouse.unlink(missing_ok=True)
    planted = PlantedParameters(case_fraction=0.3)  # enough cases for curves with steps
    generate(export, patients=FIRST, seed=SEED, chunk_size=CHUNK, planted=planted)
    first = study.run_study(export, warehouse, SETTINGS, say=lambda _: None)
    shutil.copy(warehouse, folder / "first.duckdb")
    chosen = [
        *_donors(donor / "cases", 1.0, 1, lambda r: r["scenario"] == "case", 0, 1, 40),
        *_donors(donor / "cases", 1.0, 1, lambda r: r["scenario"] == "case", 4, 9, 2),
        *_donors(donor / "others", 0.0, 2, lambda r: r["scenario"] != "case", 0, 0, 40),
    ]
    for table in sorted(export.glob("*.csv")):
        if not table.name.startswith("truth"):
            with open(table, "a") as out:  # the export grows by the chosen patients' rows
                for part in ("cases", "others"):
                    rows = (donor / part / table.name).read_text().splitlines(keepends=True)
                    out.writelines(row for row in rows[1:] if any(p in row for p in chosen))
    second = study.run_study(export, warehouse, SETTINGS, say=lambda _: None)
    (folder / "run_ids").write_text(f"{first.run_id} {second.run_id}")


def _donors(folder: Path, case_fraction: float, seed: int, which, low: int, high: int, n: int):
    """Patient ids of `n` included episodes (`which` of truth_episodes.csv) with a planted
    red-flag count in low..high, from a generated export (written once)."""
    from pipelines.generator import generate
    from pipelines.generator.params import PlantedParameters

    if not (folder / "truth_episodes.csv").exists():
        planted = PlantedParameters(case_fraction=case_fraction, episode_fraction=0.4)
        generate(folder, patients=600, seed=SEED + seed, chunk_size=CHUNK, planted=planted)
    with open(folder / "truth_episodes.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["expected_step"] == "included" and which(r)]
    ids = sorted(r["patient_id"] for r in rows if low <= int(r["red_flag_count"]) <= high)
    assert len(ids) >= n, (folder, len(ids))
    return ids[:n]
