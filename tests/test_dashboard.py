"""The results dashboard (pipelines/dashboard): every page renders from the release tables
alone, in Streamlit's headless AppTest and in a real browser, and hidden values say so."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from report_fixtures import study_warehouse
from streamlit.testing.v1 import AppTest

from pipelines.dashboard import data
from pipelines.dashboard.app import PAGES
from pipelines.dashboard.display import value_text, with_status

APP = Path(data.__file__).resolve().parent / "app.py"
# page -> element kinds it must show with content (`image` = a figure)
EXPECTED = {
    "overview": ("metric", "image", "dataframe"),
    "time_to_diagnosis": ("selectbox", "image", "dataframe"),
    "accuracy": ("selectbox", "image", "table", "dataframe"),
    "model": ("selectbox", "image", "dataframe"),
    "sensitivity": ("selectbox", "dataframe"),
    "data_quality": ("dataframe",),
    "run_history": ("table",),
}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    return study_warehouse("generated", tmp_path_factory)


@pytest.fixture(scope="module")
def release_only(warehouse, tmp_path_factory) -> Path:
    """A copy of the warehouse with every schema but `release` dropped (mart, meta, raw...)."""
    copy = tmp_path_factory.mktemp("release-only") / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    with duckdb.connect(str(copy)) as con:
        schemas = con.execute(
            "SELECT DISTINCT schema_name FROM duckdb_tables() WHERE database_name = current_database()"
            " UNION SELECT DISTINCT schema_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        for (schema,) in schemas:
            if schema not in ("release", "main"):
                con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return copy


@pytest.fixture(scope="module")
def parquet(warehouse, tmp_path_factory) -> Path:
    from pipelines.export import export_release

    out = tmp_path_factory.mktemp("parquet")
    export_release(warehouse, out)
    return out


def render(page: str, monkeypatch, warehouse: Path | None = None, parquet: Path | None = None):
    """The app after opening `page`, with the source given by the environment."""
    monkeypatch.delenv(data.WAREHOUSE_ENV, raising=False)
    monkeypatch.delenv(data.PARQUET_ENV, raising=False)
    if warehouse is not None:
        monkeypatch.setenv(data.WAREHOUSE_ENV, str(warehouse))
    if parquet is not None:
        monkeypatch.setenv(data.PARQUET_ENV, str(parquet))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    if page != PAGES[0][0]:
        at.switch_page(f"views/{page}.py").run()
    return at


def assert_page_shows(at, page: str) -> None:
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    assert not at.error, f"{page}: {[e.value for e in at.error]}"
    assert at.title and at.title[0].value, f"{page}: no title"
    for kind in EXPECTED[page]:
        elements = at.get(kind)
        assert elements, f"{page}: no {kind}"
        if kind in ("dataframe", "table"):
            assert any(len(e.value) for e in elements), f"{page}: every {kind} is empty"


@pytest.mark.parametrize("page", [name for name, _ in PAGES])
def test_every_page_renders_with_its_elements(page, warehouse, monkeypatch):
    assert set(EXPECTED) == {name for name, _ in PAGES}
    assert_page_shows(render(page, monkeypatch, warehouse=warehouse), page)


@pytest.mark.parametrize("page", [name for name, _ in PAGES])
def test_pages_need_only_the_release_schema(page, release_only, monkeypatch):
    """Never mart: the same pages render from a copy holding nothing but `release`."""
    assert_page_shows(render(page, monkeypatch, warehouse=release_only), page)


@pytest.mark.parametrize("page", ["overview", "accuracy", "model"])
def test_pages_render_from_the_parquet_export(page, parquet, monkeypatch):
    assert_page_shows(render(page, monkeypatch, parquet=parquet), page)


def test_suppressed_cells_say_so_in_the_2x2(warehouse, monkeypatch):
    """A hidden 2x2 cell reads "suppressed (<11 ...)", never 0 or blank."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rule = con.execute(
            "SELECT rule FROM release.flag_accuracy WHERE subgroup = 'all'"
            " AND tp_status LIKE 'suppressed%' ORDER BY rule LIMIT 1"
        ).fetchone()
    assert rule, "the generated study should hide at least one 2x2 cell"
    at = render("accuracy", monkeypatch, warehouse=warehouse)
    at.selectbox[1].select(rule[0]).run()
    cells = at.table[0].value.to_numpy().ravel().tolist()
    assert any(str(c).startswith("suppressed (<11") for c in cells), cells
    assert not any(str(c) in ("", "0", "nan", "None", "<NA>") for c in cells if c is not None)


def test_value_text_follows_the_status():
    assert value_text(None, "suppressed_small", min_cell=11) == "suppressed (<11)"
    assert value_text(5, "suppressed_small") == "suppressed (<11)"  # a status wins over a value
    assert value_text(float("nan"), "not_estimable") == "not estimable"
    assert value_text(None, None) == "not estimable"
    assert value_text(0, "shown") == "0"
    assert value_text(45, "rounded") == "45 (rounded)"
    assert value_text(0.12345, "shown") == "0.123"


def test_with_status_never_shows_a_blank_for_a_hidden_value():
    import pandas as pd

    frame = pd.DataFrame({"n": [pd.NA, 20, 0], "n_status": ["suppressed_complement", "shown", "shown"]})  # fmt: skip
    shown = with_status(frame, min_cell=11)
    assert list(shown.columns) == ["n"]
    assert shown["n"].tolist() == ["suppressed (<11 or complementary)", "20", "0"]


def test_missing_source_is_one_line_error(tmp_path, monkeypatch):
    at = render("overview", monkeypatch, warehouse=tmp_path / "none.duckdb")
    assert not at.exception
    assert at.error and at.error[0].value.startswith(
        "redflags dashboard: error: warehouse not found"
    )
