"""Warehouses built by the real pipeline, for the report, export and notebook tests.

- `generated`: a synthetic export from `pipelines.generator` (planted bone metastases),
  through ingest, SQL models, statistics, disclosure control and publish.
- `unsuppressed`: a copy of `generated` whose release tables are rebuilt with min_cell = 1,
  so every figure of the report has data (the real release suppresses most 2x2 cells of a
  small cohort).
- `synthea`: a real Synthea sample export (../shared/synthea), which has no bone
  metastasis at all: the no-events case.

Each is built once per test run, in pytest's temporary folder for the run (shared by the
pytest-xdist workers, with a lock file so one builds and the others wait; pytest removes
old runs' folders). Treat them as read-only; copy one before changing it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest

from pipelines.settings import StudySettings

GENERATED_PATIENTS = 2000
GENERATED_SEED = 42
SYNTHEA_EXPORT = "Evinett_synthea_AUC"  # Synthea 3.3+, one incident back-pain episode
# Sensitivity analyses re-run the whole study per variant and their release table is slow
# to suppress; the primary analysis alone still fills release.sensitivity_analyses.
SETTINGS = StudySettings(sensitivity_analyses=())
KINDS = ("generated", "unsuppressed", "synthea")

_built: dict[str, Path] = {}


def study_warehouse(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the `kind` warehouse (see the module docstring), built on first use."""
    if kind not in KINDS:
        raise ValueError(f"unknown warehouse {kind!r}; known: {KINDS}")
    if kind not in _built:
        folder = _run_folder(tmp_path_factory)
        path = folder / f"{kind}.duckdb"
        with open(folder / f"{kind}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be building it
            if not (folder / f"{kind}.done").exists():
                _BUILDERS[kind](folder, path, tmp_path_factory)
                (folder / f"{kind}.done").touch()
        _built[kind] = path
    return _built[kind]


def _run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "warehouses"
    folder.mkdir(exist_ok=True)
    return folder


def _synthea_export() -> Path:
    shared = Path(__file__).resolve().parents[2] / "shared"
    if not shared.exists():
        shared = Path(os.environ.get("REDFLAGS_SHARED", "/work/shared"))
    return shared / "synthea" / SYNTHEA_EXPORT


def run_pipeline(source: Path, warehouse: Path, settings: StudySettings = SETTINGS) -> str:
    """The whole study (`pipelines.study.run_study`, what the flow runs); returns the run id."""
    from pipelines import study

    return study.run_study(source, warehouse, settings, say=lambda _: None).run_id


def _build_generated(folder: Path, path: Path, _) -> None:
    from pipelines.generator import generate

    export = folder / "generated-export"
    generate(export, patients=GENERATED_PATIENTS, seed=GENERATED_SEED)
    run_pipeline(export, path)


def _build_unsuppressed(folder: Path, path: Path, tmp_path_factory) -> None:
    from pipelines.analysis import build_release
    from pipelines.warehouse import open_warehouse

    shutil.copy(study_warehouse("generated", tmp_path_factory), path)
    settings = SETTINGS.replace(min_cell=1)
    with open_warehouse(path) as con:
        run_id = con.execute("SELECT run_id FROM meta.runs").fetchone()[0]
        build_release(con, settings, run_id, source_schema="mart", target_schema="release")
        con.execute(
            "UPDATE meta.runs SET parameters = ? WHERE run_id = ?",
            [json.dumps(settings.as_dict()), run_id],
        )


def _build_synthea(folder: Path, path: Path, _) -> None:
    run_pipeline(_synthea_export(), path)


_BUILDERS = {
    "generated": _build_generated,
    "unsuppressed": _build_unsuppressed,
    "synthea": _build_synthea,
}
