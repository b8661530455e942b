"""A run builds apart in `*__build` schemas; after a successful publish they are dropped (a
second copy of every output is no interface), and a failed run keeps them for diagnosis
(docs/operations.md, "Atomic outputs")."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import duckdb
import pytest
from snapshots import snapshot

from pipelines import study
from pipelines.generator import generate
from pipelines.settings import StudySettings

SETTINGS = StudySettings(sensitivity_analyses=())


def schemas(warehouse: Path) -> set[str]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
    finally:
        con.close()


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build_schemas") / "export"
    generate(out, patients=200, seed=12)
    return out


def test_a_successful_run_drops_its_build_schemas_and_a_failed_one_keeps_them(
    export, tmp_path, caplog
):
    warehouse = tmp_path / "wh.duckdb"
    lines: list[str] = []
    with caplog.at_level(logging.INFO, logger="redflags"):
        result = study.run_study(export, warehouse, SETTINGS, say=lines.append)
    assert result.status == "succeeded"
    present = schemas(warehouse)
    assert {"mart", "release", "dq"} <= present
    assert not {s for s in present if s.endswith("__build")}, present
    assert "publish: dropped the build schemas" in caplog.text
    assert "intermediate__build" in caplog.text and "release__build" in caplog.text
    con = duckdb.connect(str(warehouse), read_only=True)
    manifest = con.execute("SELECT input_manifest FROM meta.runs").fetchone()[0]
    con.close()
    assert json.loads(manifest), "the run's input manifest is recorded from the kept meta"
    before = snapshot(warehouse)

    def failing_release(*_args, **_kwargs):
        raise RuntimeError("release broke")

    lines.clear()
    with pytest.raises(RuntimeError, match="release broke"):
        study.run_study(
            export,
            warehouse,
            SETTINGS,
            say=lines.append,
            steps=study.StudySteps(release=failing_release),
            force=True,  # the export is unchanged: without force the run would be reused
        )
    kept = schemas(warehouse)
    assert {"staging__build", "intermediate__build", "mart__build", "dq__build"} <= kept
    assert any("build schemas (*__build) are kept for diagnosis" in line for line in lines)
    assert snapshot(warehouse) == before
