"""Input contracts: the raw suites match schema.py, pass on the real exports, and a broken
table gives a ContractError that names table, column and how many rows broke it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from pipelines import contracts, schema
from pipelines.contracts import RAW_SUITES, load_suite, validate_raw, validate_tables
from pipelines.errors import ContractError
from pipelines.ingest import ingest_export


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def ohdsi(real_exports) -> Path:
    return next(p for p in real_exports if p.name.startswith("OHDSI"))


@pytest.fixture(scope="module")
def loaded(ohdsi, tmp_path_factory) -> Path:
    warehouse = tmp_path_factory.mktemp("contracts") / "w.duckdb"
    ingest_export(ohdsi, warehouse, log=quiet)
    return warehouse


def test_one_suite_per_raw_table_with_its_columns():
    assert sorted(p.stem for p in RAW_SUITES.glob("*.json")) == sorted(schema.TABLES)
    for table, t in schema.TABLES.items():
        data = json.loads((RAW_SUITES / f"{table}.json").read_text())
        suite = load_suite(RAW_SUITES / f"{table}.json")
        assert len(suite.expectations) == len(data["expectations"])
        column_set = next(
            e["kwargs"]["column_set"]
            for e in data["expectations"]
            if e["type"] == "expect_table_columns_to_match_set"
        )
        assert column_set == [c.name for c in (*t.columns, *schema.LINEAGE_COLUMNS)]
        typed = {
            e["kwargs"]["column"]
            for e in data["expectations"]
            if e["type"] == "expect_column_values_to_be_of_type"
        }
        assert typed == set(column_set)


def test_a_malformed_expectation_is_an_error_not_skipped(tmp_path):
    data = json.loads((RAW_SUITES / "conditions.json").read_text())
    data["expectations"].append({"type": "expect_column_values_to_be_purple", "kwargs": {}})
    path = tmp_path / "conditions.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ContractError, match=r"only \d+ of \d+ expectations could be loaded"):
        load_suite(path)


def test_real_exports_pass(real_exports, tmp_path):
    for export in real_exports:
        warehouse = tmp_path / f"{export.name}.duckdb"
        ingest_export(export, warehouse, log=quiet)
        report = validate_raw(warehouse)
        assert report.success, report.format()
        assert sum(report.expectations.values()) == sum(
            len(json.loads(p.read_text())["expectations"]) for p in RAW_SUITES.glob("*.json")
        )


def test_broken_tables_give_a_readable_contract_error(loaded, tmp_path):
    warehouse = tmp_path / "broken.duckdb"
    shutil.copy(loaded, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE raw.conditions SET stop_date = start_date - 3 WHERE source_line = 2")
        con.execute("UPDATE raw.conditions SET code = 'not-a-code' WHERE source_line IN (3, 4)")
        con.execute("UPDATE raw.encounters SET patient_id = 'ghost' WHERE source_line = 2")
        con.execute("UPDATE raw.patients SET birth_date = DATE '1850-01-01' WHERE source_line = 2")
    with pytest.raises(ContractError) as error:
        validate_raw(warehouse)
    message = str(error.value)
    assert "4 failed" in message
    assert (
        "raw.conditions.start_date/stop_date: start_date <= stop_date: 1 unexpected rows" in message
    )
    assert "raw.conditions.code: code is SNOMED CT or ICD-10: 2 unexpected rows" in message
    assert (
        "raw.encounters.patient_id: patient_id refers to raw.patients: 1 unexpected rows" in message
    )
    assert (
        "raw.patients.birth_date: expect_column_values_to_be_between: 1 unexpected rows" in message
    )
    assert "ghost" not in message and "not-a-code" not in message  # counts, never values


def test_validate_tables_serves_any_schema_and_reports_missing_tables(loaded, tmp_path):
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "summary.json").write_text(
        json.dumps(
            {
                "name": "mart.summary",
                "expectations": [
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "n"}},
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "n", "min_value": 11},
                    },
                ],
            }
        )
    )
    (suites / "absent.json").write_text(json.dumps({"name": "mart.absent", "expectations": []}))
    warehouse = tmp_path / "w.duckdb"
    shutil.copy(loaded, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE mart.summary AS SELECT * FROM (VALUES (5), (20), (NULL)) t(n)")
        report = validate_tables(con, "mart", suites, raise_on_failure=False)
    assert sorted(f.format() for f in report.failures) == [
        "mart.absent: table exists",
        "mart.summary.n: expect_column_values_to_be_between: 1 unexpected rows",
        "mart.summary.n: expect_column_values_to_not_be_null: 1 unexpected rows",
    ]


def test_a_sql_expectation_that_cannot_run_says_why_instead_of_counting_zero_rows(tmp_path):
    suites = tmp_path / "suites"
    suites.mkdir()
    query = "SELECT * FROM {batch} WHERE n NOT IN (SELECT n FROM nowhere.reference)"
    (suites / "summary.json").write_text(
        json.dumps(
            {
                "name": "s.summary",
                "expectations": [
                    {
                        "type": "unexpected_rows_expectation",
                        "kwargs": {"unexpected_rows_query": query},
                        "description": "n refers to nowhere.reference",
                    }
                ],
            }
        )
    )
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE SCHEMA s; CREATE TABLE s.summary AS SELECT 1 AS n")
        report = validate_tables(con, "s", suites, raise_on_failure=False)
    (failure,) = report.failures
    assert failure.format().startswith(
        "s.summary: n refers to nowhere.reference (could not run: (_duckdb.CatalogException)"
    )
    assert "nowhere.reference" in failure.format().split("could not run")[1]


def test_plausible_dates_end_tomorrow():
    import datetime as dt

    params = contracts.default_parameters(dt.date(2026, 11, 23))
    assert params == {"min_date": "1900-01-01", "max_date": "2026-11-24"}


def test_ingest_flow_runs_contracts(prefect_harness, ohdsi, tmp_path):
    from pipelines.flows import ingest_flow

    summary = ingest_flow(source=str(ohdsi), warehouse=str(tmp_path / "w.duckdb"))
    assert summary.table_rows["patients"] == 27
    assert "0 failed" in summary.contracts
    assert "contracts raw" in summary.format()


def test_ingest_flow_stops_on_a_broken_contract(prefect_harness, ohdsi, tmp_path):
    from pipelines.flows import ingest_flow

    export = tmp_path / "export"
    shutil.copytree(ohdsi, export)
    lines = (export / "conditions.csv").read_text().split("\n")
    start, _stop, *rest = lines[1].split(",")
    lines[1] = ",".join([start, "1999-01-01", *rest])  # STOP before START
    (export / "conditions.csv").write_text("\n".join(lines))
    with pytest.raises(ContractError, match="start_date <= stop_date: 1 unexpected rows"):
        ingest_flow(source=str(export), warehouse=str(tmp_path / "w.duckdb"))


def test_cli_prints_the_summary(prefect_harness, ohdsi, tmp_path, capsys):
    import argparse

    from pipelines.ingest import configure_cli, run_cli

    parser = argparse.ArgumentParser()
    configure_cli(parser)
    args = parser.parse_args(["--source", str(ohdsi), "--warehouse", str(tmp_path / "w.duckdb")])
    assert run_cli(args) == 0
    out = capsys.readouterr().out
    assert "patients" in out and "0 failed" in out
