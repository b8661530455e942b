"""What every successful `redflags run` leaves for its readers (issue 15, items 3 and 7).

The release as Parquet and CSV with a manifest, swapped in atomically beside the warehouse
(a failed run leaves the previous folder as it was), and the run's own report showing its
final status and provenance. Real command line, real DuckDB file, generated export.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipelines.generator import generate
from pipelines.report.figures import FIGURE_FILES
from pipelines.settings import StudySettings
from pipelines.study import default_parquet_dir, run_study

REPO = Path(__file__).resolve().parents[2]
FAST_CONFIG = "sensitivity_analyses = []\n"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "export"
    generate(out, patients=300, seed=5)
    return out


def redflags(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )


def folder_state(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_every_run_writes_the_release_as_parquet_and_csv_and_a_failed_run_keeps_it(
    export, tmp_path
):
    config = tmp_path / "study.toml"
    config.write_text(FAST_CONFIG)
    warehouse = tmp_path / "wh.duckdb"
    ok = redflags("run", "--source", export, "--warehouse", warehouse, "--config", config)
    assert ok.returncode == 0, ok.stderr[-3000:]

    folder = tmp_path / "wh.release"
    assert default_parquet_dir(warehouse) == folder
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'release' ORDER BY 1"
            ).fetchall()
        ]
        (run_id,) = con.execute("SELECT run_id FROM meta.runs").fetchone()
    figures = [m for m in manifest if "figure" in m]  # after the tables
    manifest = [m for m in manifest if "table" in m]
    assert [m["table"] for m in manifest] == tables
    assert [m["run_id"] for m in figures] == [run_id] * len(FIGURE_FILES)
    for entry in manifest:
        assert entry["run_id"] == run_id
        parquet, csv = folder / entry["file"], folder / entry["csv"]
        assert entry["sha256"] == hashlib.sha256(parquet.read_bytes()).hexdigest()
        assert entry["csv_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
        assert len(pd.read_parquet(parquet)) == entry["rows"]
        assert len(pd.read_csv(csv)) == entry["rows"] if entry["rows"] else True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".wh.release")]

    before = folder_state(folder)
    broken = shutil.copytree(export, tmp_path / "broken")
    (broken / "conditions.csv").unlink()
    failed = redflags("run", "--source", broken, "--warehouse", warehouse, "--config", config)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert folder_state(folder) == before

    elsewhere = tmp_path / "bi"
    again = redflags(
        "run", "--source", export, "--warehouse", warehouse, "--config", config,
        "--parquet-dir", elsewhere, "--force",  # a new run, not a reuse of the first
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert (elsewhere / "manifest.json").exists()
    assert folder_state(folder) == before  # the default folder is not written with --parquet-dir
    new = json.loads((elsewhere / "manifest.json").read_text(encoding="utf-8"))
    assert {m["run_id"] for m in new} != {run_id}

    skipped = tmp_path / "skip.duckdb"
    off = redflags(
        "run", "--source", export, "--warehouse", skipped, "--config", config, "--no-parquet"
    )
    assert off.returncode == 0, off.stderr[-3000:]
    assert not default_parquet_dir(skipped).exists()


def test_the_runs_own_report_shows_its_final_status_and_provenance(export, tmp_path):
    warehouse, report = tmp_path / "wh.duckdb", tmp_path / "report.html"
    settings = StudySettings().replace(sensitivity_analyses=())
    result = run_study(export, warehouse, settings, report=report, say=lambda _: None)
    assert result.status == "succeeded"
    text = report.read_text(encoding="utf-8")
    assert "report written before the run record was closed" not in text
    with duckdb.connect(str(warehouse), read_only=True) as con:
        hashes, manifest = con.execute(
            "SELECT value_set_hashes, input_manifest FROM meta.runs"
        ).fetchone()
    value_set, digest = next(iter(json.loads(hashes).items()))
    assert value_set in text and digest in text
    patients = next(m for m in json.loads(manifest) if m["file"] == "patients.csv")
    assert patients["sha256"] in text


def test_the_runs_report_and_release_folder_show_the_same_figures(export, tmp_path, monkeypatch):
    """One rendering per run: each figure the run's report draws is in the release folder as
    PNG (the very bytes the page embeds) and SVG; each notice in words writes no file."""
    from pipelines.report import plots

    drawings, draw = [], plots.charts
    monkeypatch.setattr(plots, "charts", lambda data: drawings.append(1) or draw(data))
    warehouse, report = tmp_path / "wh.duckdb", tmp_path / "report.html"
    settings = StudySettings().replace(sensitivity_analyses=(), min_cell=1)  # draw them all
    folder = tmp_path / "release"
    run_study(export, warehouse, settings, report=report, parquet_dir=folder, say=lambda _: None)
    assert len(drawings) == 1  # the report and the release folder share one rendering
    html = report.read_text(encoding="utf-8")
    embedded = [
        base64.b64decode(src)
        for src in re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    ]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    entries = [m for m in manifest if "figure" in m]
    drawn = [m for m in entries if m["file"]]
    assert drawn and [(folder / m["file"]).read_bytes() for m in drawn] == embedded
    for m in drawn:
        assert (folder / m["svg"]).read_text(encoding="utf-8").lstrip().startswith("<?xml")
    for m in entries:
        if not m["file"]:
            assert m["notice"] and " ".join(m["notice"].split()) in " ".join(html.split())
    on_disk = sorted(p.name for p in (folder / "figures").iterdir())
    assert on_disk == sorted(f"{m['figure']}.{ext}" for m in drawn for ext in ("png", "svg"))


def test_stage_lines_count_in_proper_english():
    from pipelines.study import describe

    assert describe({"release.a": 1}) == "1 table, 1 row"
    assert describe({"release.a": 1, "release.b": 1233}) == "2 tables, 1,234 rows"
    assert describe([Path("out/a.parquet")]) == "1 file in out"


@pytest.mark.parametrize("command", ["run", "serve"])
def test_run_and_serve_write_the_release_beside_the_warehouse_unless_told(command, tmp_path):
    from pipelines.cli import build_parser
    from pipelines.cli.study import _parquet_dir

    base = [command, "--source", "x", "--warehouse", str(tmp_path / "wh.duckdb")]
    parse = build_parser().parse_args
    assert _parquet_dir(parse(base)) == str(tmp_path / "wh.release")
    assert _parquet_dir(parse([*base, "--parquet-dir", "bi"])) == "bi"
    assert _parquet_dir(parse([*base, "--no-parquet"])) is None
