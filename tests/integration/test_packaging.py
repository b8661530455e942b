"""The product is what ships (../shared/STYLE.md 13): the wheel carries the SQL models, the
data contracts, the value sets and the report template, and the installed package finds them
inside itself, not through a repository root; the benchmark and test helpers stay out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".tools" / "bin" / "uv"
# what a wheel is built from (a copy, so the build leaves nothing in the checkout)
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "pipelines", "sql", "data_contracts")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not UV.exists():
        pytest.skip("needs .tools/bin/uv (make install)")
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name)
    for cache in src.rglob("__pycache__"):
        shutil.rmtree(cache)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [str(UV), "build", "--wheel", "--quiet", "-o", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("redflags-*.whl")
    return built


def repo_files(folder: str, pattern: str) -> set[str]:
    return {p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob(pattern)}


def test_the_wheel_ships_the_sql_contracts_value_sets_and_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert repo_files("sql", "*.sql"), "the checkout has SQL models"
    for folder, pattern in (("sql", "*.sql"), ("data_contracts", "*.json")):
        shipped = {n.removeprefix(f"pipelines/{folder}/") for n in names}
        missing = repo_files(folder, pattern) - shipped
        assert not missing, f"{folder} files not in the wheel: {sorted(missing)}"
    valuesets = {p.name for p in (ROOT / "pipelines" / "valuesets").glob("*.csv")}
    assert {f"pipelines/valuesets/{n}" for n in valuesets} <= names
    assert "pipelines/templates/report.html.j2" in names


def test_the_wheel_leaves_out_the_tooling(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(("bench/", "tests/"))]
    assert not [n for n in names if n.endswith(("bench.py", "baseline_pandas.py"))]


def run_unpacked(wheel: Path, folder: Path, code: str) -> list[str]:
    """Run `code` in a fresh Python on the wheel unpacked in `folder` (not the checkout);
    its printed words."""
    zipfile.ZipFile(wheel).extractall(folder)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()


def test_the_unpacked_package_finds_its_data_inside_itself(wheel, tmp_path):
    code = (
        "from pipelines import resources as r; print(r.SQL_DIR); print(r.CONTRACTS_DIR);"
        " print(len(list(r.SQL_DIR.rglob('*.sql'))))"
    )
    lines = run_unpacked(wheel, tmp_path, code)
    sql_dir, contracts_dir, n_sql = Path(lines[0]), Path(lines[1]), int(lines[2])
    assert sql_dir == tmp_path.resolve() / "pipelines" / "sql"
    assert contracts_dir == tmp_path.resolve() / "pipelines" / "data_contracts"
    assert n_sql == len(repo_files("sql", "*.sql"))


def test_the_unpacked_report_package_renders_its_template(wheel, tmp_path):
    """The report is a package (pipelines/report/): the wheel carries it, and the installed
    page finds its template inside the package (an empty release renders notices only)."""
    code = (
        "from pipelines.report import Released, render_html, render;"
        " print(render.__file__); html = render_html(Released({}));"
        " print('<!doctype html>' in html.lower())"
    )
    lines = run_unpacked(wheel, tmp_path, code)
    assert Path(lines[0]) == tmp_path.resolve() / "pipelines" / "report" / "render.py"
    assert lines[1:] == ["True"]


def test_the_wheel_ships_every_module_of_the_package(wheel):
    """Every .py under pipelines/ is in the wheel: a folder without `__init__.py` (the
    dashboard's page files) is left out silently by find_packages unless it is package data."""
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"pipelines/{name}" for name in repo_files("pipelines", "*.py")}
    assert {"pipelines/ingest/run.py", "pipelines/dashboard/views/overview.py"} <= modules
    assert sorted(modules - names) == []
