"""Parquet export of the release tables, and the data dictionary that documents every output."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from report_fixtures import study_warehouse

from pipelines.errors import UserFacingError
from pipelines.export import MANIFEST, export_release
from pipelines.report import figures, write_report
from pipelines.report.figures import FIGURE_FILES

DICTIONARY = Path(__file__).resolve().parents[2] / "docs" / "data-dictionary.md"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return study_warehouse("generated", tmp_path_factory)


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory) -> list[Path]:
    return export_release(built, tmp_path_factory.mktemp("parquet"))


def release_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'release' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def test_every_release_table_round_trips(built, exported):
    parquet = {p.stem: p for p in exported if p.suffix == ".parquet"}
    with duckdb.connect(str(built), read_only=True) as con:
        tables = release_tables(con)
        assert sorted(parquet) == tables
        for table in tables:
            expected = con.execute(f"SELECT * FROM release.{table}").df()
            actual = pd.read_parquet(parquet[table])
            pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
            types = con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE release.{table})"
            ).fetchall()
            read_back = con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{parquet[table]}')"
            ).fetchall()
            assert read_back == types, f"{table}: column types changed in Parquet"


def test_manifest_lists_tables_rows_and_columns(built, exported):
    manifest_path = exported[-1]
    assert manifest_path.name == MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest = [m for m in manifest if "table" in m]  # the figures follow the tables
    with duckdb.connect(str(built), read_only=True) as con:
        assert [m["table"] for m in manifest] == release_tables(con)
        for entry in manifest:
            rows = con.execute(f"SELECT count(*) FROM release.{entry['table']}").fetchone()[0]
            columns = con.execute(f"DESCRIBE release.{entry['table']}").fetchall()
            assert entry["rows"] == rows
            assert entry["columns"] == [{"name": c[0], "type": c[1]} for c in columns]
            assert (manifest_path.parent / entry["file"]).exists()


def test_export_never_writes_row_level_tables(exported):
    names = {p.stem for p in exported}
    assert not names & {"cohort", "red_flags", "red_flag_evidence", "episode_pathway"}


def test_export_errors_are_user_errors(tmp_path):
    with pytest.raises(UserFacingError, match="not found"):
        export_release(tmp_path / "absent.duckdb", tmp_path / "out")
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(UserFacingError, match="no release tables"):
        export_release(empty, tmp_path / "out")


# --- the data dictionary ----------------------------------------------------------------


def dictionary_tables() -> dict[str, set[str]]:
    """`schema.table` -> documented columns, from docs/data-dictionary.md.

    A section heading names one or more tables in backticks (`mart.x` / `release.x`); the
    first column of the section's markdown table lists the column names in backticks.
    """
    tables: dict[str, set[str]] = {}
    current: list[str] = []
    for line in DICTIONARY.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            current = re.findall(r"`((?:mart|release)\.[a-z_]+)`", line)
            for name in current:
                tables.setdefault(name, set())
        elif current and line.startswith("| `"):
            column = re.match(r"\| `([a-z0-9_]+)`", line)
            if column:
                for name in current:
                    tables[name].add(column.group(1))
    return tables


def warehouse_tables(path: Path) -> dict[str, set[str]]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT schema_name || '.' || table_name, column_name FROM duckdb_columns()"
            " WHERE schema_name IN ('mart', 'release')"
        ).fetchall()
    tables: dict[str, set[str]] = {}
    for table, column in rows:
        tables.setdefault(table, set()).add(column)
    return tables


def test_data_dictionary_matches_the_warehouse(built):
    documented, actual = dictionary_tables(), warehouse_tables(built)
    assert sorted(actual) == sorted(documented), "tables differ from docs/data-dictionary.md"
    for table, columns in actual.items():
        assert columns - documented[table] == set(), f"{table}: columns not in the dictionary"
        assert documented[table] - columns == set(), f"{table}: dictionary columns not in the table"


def test_the_export_refuses_to_replace_a_folder_holding_other_files(built, tmp_path):
    """The release folder is swapped as a whole: `--out` on a folder with other files (the
    warehouse's own, the repository root) is refused, and nothing in it is touched."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "study.duckdb").write_bytes(b"precious")
    with pytest.raises(UserFacingError, match="holds other files"):
        export_release(built, busy)
    assert [p.name for p in busy.iterdir()] == ["study.duckdb"]
    again = export_release(built, tmp_path / "fresh")  # a previous export is replaced
    assert export_release(built, tmp_path / "fresh") == again


# --- the report's figures as files (issue 15 item 5) ---------------------------------------


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> tuple[Path, Path]:
    """The release with min_cell = 1 (every figure has data), exported."""
    warehouse = study_warehouse("unsuppressed", tmp_path_factory)
    out = tmp_path_factory.mktemp("figures") / "release"
    export_release(warehouse, out)
    return warehouse, out


def figure_entries(folder: Path) -> list[dict]:
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return [m for m in manifest if "figure" in m]


def test_every_report_figure_is_a_png_and_an_svg_listed_with_its_sha256(drawn):
    from PIL import Image

    _, out = drawn
    entries = figure_entries(out)
    assert [m["figure"] for m in entries] == list(FIGURE_FILES.values())
    names = set()
    for m in entries:
        assert m["file"] == f"figures/{m['figure']}.png", m
        assert m["svg"] == f"figures/{m['figure']}.svg", m
        png, svg = (out / m["file"]).read_bytes(), (out / m["svg"]).read_bytes()
        assert m["sha256"] == hashlib.sha256(png).hexdigest()
        assert m["svg_sha256"] == hashlib.sha256(svg).hexdigest()
        image = Image.open(io.BytesIO(png))
        image.load()
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
        assert image.size[0] > 300 and len(colours) > 1, f"{m['file']} is blank"
        assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
        names |= {Path(m["file"]).name, Path(m["svg"]).name}
    assert {p.name for p in (out / "figures").iterdir()} == names


class Images(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.png: list[bytes] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        src = dict(attrs).get("src") or ""
        if tag == "img" and src.startswith("data:image/png;base64,"):
            self.png.append(base64.b64decode(src.split(",", 1)[1]))


def test_the_report_embeds_the_files_and_another_export_writes_the_same_bytes(drawn, tmp_path):
    """Drawn afresh (another process, an empty cache): the same bytes, so the report's
    images are the files and two exports of one warehouse have identical figures."""
    warehouse, out = drawn
    again = tmp_path / "again"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "export", "--warehouse", warehouse, "--out", again],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(FIGURE_FILES)} figures (PNG and SVG)" in done.stdout
    files = sorted((out / "figures").iterdir())
    assert len(files) == 2 * len(FIGURE_FILES)
    for path in files:
        assert (again / "figures" / path.name).read_bytes() == path.read_bytes(), path.name
    assert figure_entries(again) == figure_entries(out)

    figures.clear_cache()  # the report draws its own figures, not the export's
    page = Images(write_report(warehouse, tmp_path / "r.html").read_text(encoding="utf-8"))
    pngs = [(out / m["file"]).read_bytes() for m in figure_entries(out)]
    assert page.png == pngs  # same figures, same order, same bytes


def test_a_figure_the_report_cannot_draw_writes_no_file_and_says_why(built, tmp_path):
    """The suppressed release of a small cohort: some figures are notices in words."""
    out = tmp_path / "release"
    export_release(built, out)
    entries = figure_entries(out)
    notices = [m for m in entries if m["file"] is None]
    assert notices, "expected at least one figure withheld by disclosure control"
    for m in notices:
        assert m["notice"] and m["svg"] is None
        assert not (out / "figures" / f"{m['figure']}.png").exists()
        assert not (out / "figures" / f"{m['figure']}.svg").exists()


def test_a_previous_release_with_figures_is_replaced_but_not_one_holding_other_files(
    drawn, tmp_path
):
    warehouse, out = drawn
    folder = shutil.copytree(out, tmp_path / "release")
    export_release(warehouse, folder)  # a previous export, its figures/ included: replaced
    assert (folder / "figures" / "roc_curve.svg").exists()
    (folder / "figures" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UserFacingError, match="holds other files"):
        export_release(warehouse, folder)
    assert (folder / "figures" / "notes.txt").read_text(encoding="utf-8") == "mine"
