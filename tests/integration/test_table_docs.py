"""One source (pipelines/table_docs.toml) for docs/data-dictionary.md and the DuckDB catalog
comments of every published `mart` and `release` table."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from report_fixtures import study_warehouse

from pipelines import table_docs
from pipelines.table_docs import Column, Section, SourceError, Table

DICTIONARY = Path(__file__).resolve().parents[2] / "docs" / "data-dictionary.md"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return study_warehouse("generated", tmp_path_factory)


def published_columns(path: Path) -> dict[str, list[str]]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT schema_name || '.' || table_name, column_name FROM duckdb_columns()"
            " WHERE schema_name IN ('mart', 'release') ORDER BY schema_name, table_name, column_index"  # fmt: skip
        ).fetchall()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    return tables


def test_the_committed_dictionary_is_what_the_source_renders():
    page = DICTIONARY.read_text(encoding="utf-8")
    assert table_docs.BEGIN in page and table_docs.END in page
    assert table_docs.page_with(table_docs.render(), page) == page, (
        "docs/data-dictionary.md differs from pipelines/table_docs.toml:"
        " run `python -m pipelines.table_docs --write` (and edit the TOML, not the page)"
    )


def test_every_published_table_and_column_has_an_entry_and_every_entry_exists(built):
    documented = {t: set(c) for t, c in table_docs.documented().items()}
    actual = {t: set(c) for t, c in published_columns(built).items()}
    assert sorted(set(actual) - set(documented)) == [], "tables without an entry in table_docs.toml"
    assert sorted(set(documented) - set(actual)) == [], "entries for tables that do not exist"
    for table, columns in actual.items():
        assert sorted(columns - documented[table]) == [], f"{table}: columns without an entry"
        assert sorted(documented[table] - columns) == [], f"{table}: entries for absent columns"


def test_every_published_table_and_column_carries_its_comment(built):
    with duckdb.connect(str(built), read_only=True) as con:
        table_comments = dict(
            con.execute(
                "SELECT schema_name || '.' || table_name, comment FROM duckdb_tables()"
                " WHERE schema_name IN ('mart', 'release')"
            ).fetchall()
        )
        column_comments = {
            (t, c): comment
            for t, c, comment in con.execute(
                "SELECT schema_name || '.' || table_name, column_name, comment FROM duckdb_columns()"
                " WHERE schema_name IN ('mart', 'release')"
            ).fetchall()
        }
    assert any(name.startswith("release.") for name in table_comments)
    for t in table_docs.tables():
        for schema in t.schemas:
            name = f"{schema}.{t.name}"
            assert table_comments[name] == table_docs.one_line(t.description), name
            for c in t.columns_in(schema):
                assert column_comments[(name, c.name)] == table_docs.one_line(c.meaning), (name, c.name)  # fmt: skip
    assert column_comments[("release.flag_accuracy", "tp_status")].startswith("status of `tp`:")


# --- the COMMENT ON helpers: comments are text, never SQL -------------------------------

HOSTILE = [
    "it's",
    "'; DROP TABLE release.t; --",
    "'' OR 1=1 --",
    "back\\slash \\' and a quote",
    'double "quotes" and $1 ? $name',
    "line\nbreak",
    "é — ≥ unicode",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_comment_is_stored_exactly_as_written_and_runs_nothing(text):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA release")
    con.execute('CREATE TABLE release.t (a INTEGER, "we""ird col" INTEGER)')
    con.execute(f"COMMENT ON TABLE release.t IS {table_docs.sql_literal(text)}")
    column = "release.t." + table_docs.sql_identifier('we"ird col')
    con.execute(f"COMMENT ON COLUMN {column} IS {table_docs.sql_literal(text)}")
    assert con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 't'").fetchone() == (text,)  # fmt: skip
    assert con.execute(
        "SELECT comment FROM duckdb_columns() WHERE table_name = 't' AND column_name = 'we\"ird col'"
    ).fetchone() == (text,)
    assert con.execute("SELECT count(*) FROM release.t").fetchone() == (0,)  # still there


def test_a_nul_character_is_refused():
    with pytest.raises(ValueError):
        table_docs.sql_literal("a\x00b")
    with pytest.raises(ValueError):
        table_docs.sql_identifier("a\x00b")


def test_comment_tables_quotes_names_and_comments_only_what_exists():
    weird = Table(
        name='odd"name',
        schemas=("release",),
        description="it's a table; DROP SCHEMA release",
        columns=(Column("x'y", "BIGINT", "a 'quoted' column"), Column("gone", "BIGINT", "absent")),
        status_of=("x'y",),
    )
    absent = Table(name="absent", schemas=("mart",), description="never built", columns=())
    con = duckdb.connect()
    con.execute("CREATE SCHEMA release")
    con.execute('CREATE TABLE release."odd""name" ("x\'y" BIGINT, "x\'y_status" VARCHAR)')
    n = table_docs.comment_tables(con, (Section("s", "", (weird, absent)),))
    assert n == 3  # the table, its column, the status column; not `gone`, not `absent`
    assert con.execute("SELECT comment FROM duckdb_tables() WHERE NOT internal").fetchall() == [("it's a table; DROP SCHEMA release",)]  # fmt: skip
    comments = dict(
        con.execute(
            "SELECT column_name, comment FROM duckdb_columns() WHERE schema_name = 'release'"
        ).fetchall()
    )
    assert comments == {"x'y": "a 'quoted' column", "x'y_status": table_docs.STATUS_MEANING.format(column="x'y")}  # fmt: skip


# --- the source and the renderer ---------------------------------------------------------


def test_a_malformed_source_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[[section]]\nheading = 'x'\n[[section.table]]\nname = 't'\nschemas = ['mart']\n"
    )
    with pytest.raises(SourceError, match="table t has no description"):
        table_docs.load(bad)
    bad.write_text(
        "[[section]]\nheading = 'x'\n[[section.table]]\nname = 't'\nschemas = ['mart']\n"
        "description = 'd'\ncolumns = [{ name = 'a', type = 'INT', meaning = 'm' },"
        " { name = 'a', type = 'INT', meaning = 'm' }]\n"
    )
    with pytest.raises(SourceError, match="columns listed twice: a"):
        table_docs.load(bad)
    bad.write_text("[[section]]\ntext = 'no heading'\n")
    with pytest.raises(SourceError, match="lacks or misspells 'heading'"):
        table_docs.load(bad)
    bad.write_text("[[section]\n")
    with pytest.raises(SourceError, match="bad.toml"):
        table_docs.load(bad)


def test_the_check_command_fails_on_a_hand_edited_page_and_write_repairs_it(tmp_path, capsys):
    page = tmp_path / "data-dictionary.md"
    original = DICTIONARY.read_text(encoding="utf-8")
    page.write_text(original.replace("| `n_events` |", "| `n_events_renamed` |", 1))
    assert table_docs.main(["--check", "--page", str(page)]) == 1
    assert "differs from pipelines/table_docs.toml" in capsys.readouterr().err
    assert table_docs.main(["--write", "--page", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == original
    assert table_docs.main(["--check", "--page", str(page)]) == 0


def test_release_tables_with_both_schemas_list_their_release_only_columns_apart():
    text = table_docs.render()
    assert "### `mart.flag_accuracy` / `release.flag_accuracy`" in text
    assert "#### Release-only columns of `release.flag_accuracy`" in text
    assert "| `tp_status` | VARCHAR | status of `tp`: shown," in text
    assert "#### Mart-only column of `mart.cumulative_incidence`" in text


def test_missing_lists_undocumented_columns_as_toml_and_absent_entries(tmp_path, capsys):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA release")
        con.execute("CREATE TABLE release.labels (kind VARCHAR, code VARCHAR, run_id VARCHAR, added BIGINT)")  # fmt: skip
    lines = table_docs.missing(path)
    assert "# release.labels: no entry" in lines
    assert "  { name = 'added', type = 'BIGINT', meaning = '' }," in lines
    assert "# release.labels: documented columns not in the warehouse: label" in lines
    assert "# mart.cohort: documented, not in the warehouse" in lines
    assert table_docs.main(["--missing", str(path)]) == 1
    assert table_docs.main(["--missing", str(tmp_path / "absent.duckdb")]) == 2
    assert "warehouse not found" in capsys.readouterr().err


def test_missing_finds_nothing_on_a_built_warehouse(built):
    assert table_docs.missing(built) == []


def test_a_flag_added_to_the_registry_is_documented_without_an_edit_here():
    """`for_each_flag` entries follow the registry: a new flag's column in mart.red_flags and
    Table 1's source gets its line from flags.csv (docs/adding-a-flag.md: five files)."""
    import dataclasses

    from pipelines.flags import REGISTRY

    fever = dataclasses.replace(
        REGISTRY[-1], name="fever", order=len(REGISTRY) + 1, label="Fever", value_sets=("fever",)
    )
    entries = [
        {"name": "patient_id", "type": "VARCHAR", "meaning": "patient identifier"},
        {"for_each_flag": True, "type": "BOOLEAN", "meaning": "{label} ({value_sets})"},
    ]
    columns = table_docs._columns(entries, "red_flags", (*REGISTRY, fever))
    assert [c.name for c in columns] == ["patient_id", *(f.column for f in REGISTRY), "flag_fever"]
    assert columns[-1] == Column("flag_fever", "BOOLEAN", "Fever (`fever`)")
    documented = table_docs.documented()
    for table in ("mart.red_flags", "mart.baseline_characteristics"):
        assert [c for c in documented[table] if c.startswith("flag_")] == [
            f.column for f in REGISTRY
        ]
