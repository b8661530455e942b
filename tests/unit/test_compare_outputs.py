"""tests/compare_outputs.py: equal published tables compare equal whatever their row order and
run id; one changed value, a missing table or another column type is reported."""

from __future__ import annotations

import duckdb
from compare_outputs import compare_warehouses, main


def warehouse(path, rows: str, run_id: str, *, extra_release: bool = True) -> None:
    con = duckdb.connect(str(path))
    con.execute("create schema mart; create schema release; create schema intermediate")
    con.execute(f"create table mart.t as select * from (values {rows}) v(id, x)")
    con.execute(f"alter table mart.t add column run_id varchar default '{run_id}'")
    con.execute("create table intermediate.ignored as select random() as r")
    if extra_release:
        con.execute("create table release.r as select 1 as n")
    con.close()


def test_identical_tables_in_another_order_and_run_compare_equal(tmp_path, capsys):
    warehouse(tmp_path / "a.duckdb", "(1, 'a'), (2, 'b'), (2, 'b')", "run-1")
    warehouse(tmp_path / "b.duckdb", "(2, 'b'), (1, 'a'), (2, 'b')", "run-2")
    results = compare_warehouses(tmp_path / "a.duckdb", tmp_path / "b.duckdb")
    assert [(r.table, r.identical) for r in results] == [("mart.t", True), ("release.r", True)]
    assert main([str(tmp_path / "a.duckdb"), str(tmp_path / "b.duckdb")]) == 0
    assert "2 of 2 tables identical" in capsys.readouterr().out


def test_a_changed_value_a_lost_duplicate_and_a_missing_table_are_reported(tmp_path, capsys):
    warehouse(tmp_path / "a.duckdb", "(1, 'a'), (2, 'b'), (2, 'b')", "run-1")
    warehouse(tmp_path / "b.duckdb", "(1, 'a'), (2, 'c')", "run-1", extra_release=False)
    by_table = {
        r.table: r for r in compare_warehouses(tmp_path / "a.duckdb", tmp_path / "b.duckdb")
    }
    assert (by_table["mart.t"].only_before, by_table["mart.t"].only_after) == (2, 1)
    assert by_table["release.r"].after is None
    assert main([str(tmp_path / "a.duckdb"), str(tmp_path / "b.duckdb")]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS  mart.t: 3 vs 2 rows, 2 only before, 1 only after" in out
    assert "DIFFERS  release.r: only before" in out
    assert "'b'" not in out  # counts only, never row values


def test_another_column_type_differs(tmp_path):
    warehouse(tmp_path / "a.duckdb", "(1, 'a')", "run-1")
    warehouse(tmp_path / "b.duckdb", "(1.0, 'a')", "run-1")
    (t, _) = compare_warehouses(tmp_path / "a.duckdb", tmp_path / "b.duckdb")
    assert not t.identical and "columns" in t.line()
