"""Parquet export of the release tables, and the data dictionary that documents every output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from report_fixtures import study_warehouse

from pipelines.errors import UserFacingError
from pipelines.export import MANIFEST, export_release

DICTIONARY = Path(__file__).resolve().parents[1] / "docs" / "data-dictionary.md"


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
