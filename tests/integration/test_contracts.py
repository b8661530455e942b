"""Input contracts: the raw suites match schema.py, pass on the real exports, and a broken
table gives a one-line ContractError that names table, column and how many rows broke it.
Each expectation has a severity (error stops, warn records) and a threshold (fraction of
rows allowed to fail); the run's data-quality profile and flagged rows are written beside."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from pipelines import contracts, schema
from pipelines.contracts import (
    CATEGORIES,
    RAW_SUITES,
    ROW_CHECKS,
    SEVERITIES,
    check_raw,
    load_suite,
    validate_raw,
    validate_tables,
)
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
    assert "\n" not in message  # one line: the CLI prints it as is
    assert message.startswith("contracts raw: 7 tables, ")
    assert " 2 failed, 1 warned (" in message
    assert "raw.conditions.code: code is SNOMED CT or ICD-10: 2 unexpected rows" in message
    assert (
        "raw.encounters.patient_id: patient_id refers to raw.patients: 1 unexpected rows" in message
    )
    # STOP before START and a birth in 1850 are warn-severity plausibility checks: not fatal
    assert "stop_date" not in message and "birth_date" not in message
    assert "ghost" not in message and "not-a-code" not in message  # counts, never values
    report = validate_raw(warehouse, raise_on_failure=False)
    assert [w.format() for w in report.warnings] == [
        "raw.patients.birth_date: expect_column_values_to_be_between: 1 unexpected rows"
    ]  # 1 of 27 patients: beyond the 1% threshold; the 1 of 438 conditions is within it
    (order,) = [c for c in report.checks if c.check == "dates_in_order" and c.rows_failed]
    assert (order.table, order.status, order.rows_failed) == ("raw.conditions", "pass", 1)


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
    fields = lines[1].split(",")
    fields[lines[0].split(",").index("CODE")] = "not-a-code"  # parses; the contract refuses it
    lines[1] = ",".join(fields)
    (export / "conditions.csv").write_text("\n".join(lines))
    with pytest.raises(ContractError, match="code is SNOMED CT or ICD-10: 1 unexpected rows"):
        ingest_flow(source=str(export), warehouse=str(tmp_path / "w.duckdb"))


def test_cli_prints_the_summary(prefect_harness, ohdsi, tmp_path, capsys):
    import argparse

    from pipelines.cli.ingest import configure_cli, run_cli

    parser = argparse.ArgumentParser()
    configure_cli(parser)
    args = parser.parse_args(["--source", str(ohdsi), "--warehouse", str(tmp_path / "w.duckdb")])
    assert run_cli(args) == 0
    out = capsys.readouterr().out
    assert "patients" in out and "0 failed" in out


def test_every_raw_expectation_has_a_severity_a_threshold_and_a_dqd_category():
    for path in RAW_SUITES.glob("*.json"):
        for e in json.loads(path.read_text())["expectations"]:
            meta = e.get("meta", {})
            assert meta.get("severity", "error") in SEVERITIES, (path.name, e)
            assert meta.get("category", "conformance") in CATEGORIES, (path.name, e)
            assert 0 <= 1 - e["kwargs"].get("mostly", 1) <= 1
            assert 0 <= meta.get("threshold", 0) <= 1
            if meta.get("check") in ROW_CHECKS:  # the quirks real exports carry: never fatal
                assert meta["severity"] == "warn", (path.name, e)


def _suite(folder: Path, expectations: list[dict]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "t.json").write_text(json.dumps({"name": "s.t", "expectations": expectations}))
    return folder


def test_severity_and_threshold_decide_pass_warn_or_fail(tmp_path):
    bad = {"unexpected_rows_query": "SELECT * FROM {batch} WHERE n < 0"}
    suites = _suite(
        tmp_path / "suites",
        [
            # 3 of 100 NULL: within an error check's 5% threshold (GX's mostly = 0.95)
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "n", "mostly": 0.95}},
            # 5 of 97 above 10: beyond a warn check's 1% threshold: recorded, not fatal
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "n", "min_value": -1, "max_value": 10, "mostly": 0.99},
                "meta": {"severity": "warn", "check": "date_in_range"},
            },
            # 1 of 100 negative: within a SQL check's threshold (meta.threshold; no mostly there)
            {"type": "unexpected_rows_expectation", "kwargs": bad, "description": "n >= 0 (2%)",
             "meta": {"threshold": 0.02, "column": "n"}},
            # the same with the default threshold 0 and severity error: the run stops
            {"type": "unexpected_rows_expectation", "kwargs": bad, "description": "n >= 0",
             "meta": {"column": "n"}},
        ],
    )  # fmt: skip
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute(
            "CREATE SCHEMA s; CREATE TABLE s.t AS SELECT CASE WHEN i < 3 THEN NULL"
            " WHEN i < 8 THEN 50 WHEN i = 8 THEN -1 ELSE 1 END AS n FROM range(100) r(i)"
        )
        report = validate_tables(con, "s", suites, raise_on_failure=False)
        with pytest.raises(ContractError) as error:
            validate_tables(con, "s", suites)
    got = [
        (c.check, c.severity, c.threshold, c.rows_checked, c.rows_failed, c.status)
        for c in report.checks
    ]
    assert got == [
        ("not_null", "error", 0.05, 100, 3, "pass"),
        ("date_in_range", "warn", 0.01, 97, 5, "warn"),
        ("sql", "error", 0.02, 100, 1, "pass"),
        ("sql", "error", 0.0, 100, 1, "fail"),
    ]
    assert [f.format() for f in report.failures] == ["s.t.n: n >= 0: 1 unexpected rows"]
    assert [f.format() for f in report.warnings] == [
        "s.t.n: expect_column_values_to_be_between: 5 unexpected rows"
    ]
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("contracts s: 1 tables, 4 expectations, 1 failed, 1 warned (")
    assert message.endswith("; s.t.n: n >= 0: 1 unexpected rows")


def test_check_raw_writes_the_profile_and_lists_flagged_rows_by_file_and_line(loaded, tmp_path):
    warehouse = tmp_path / "quirks.duckdb"
    shutil.copy(loaded, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "UPDATE raw.medications SET stop_at = start_at - INTERVAL 6 DAY"
            " WHERE source_line IN (SELECT source_line FROM raw.medications"
            " WHERE stop_at IS NOT NULL ORDER BY source_line LIMIT 2)"
        )
        con.execute(
            "UPDATE raw.conditions SET start_date = DATE '2999-01-01', stop_date = NULL"
            " WHERE source_line = 4"
        )
        con.execute(
            "UPDATE raw.encounters SET start_at = TIMESTAMP '1850-01-01' WHERE source_line = 5"
        )
        flagged_meds = [
            r[0]
            for r in con.execute(
                "SELECT source_line FROM raw.medications WHERE stop_at < start_at ORDER BY 1"
            ).fetchall()
        ]
    assert len(flagged_meds) == 2
    report = check_raw(warehouse, target_schema="dq__build")  # no ContractError: warnings only
    assert report.success
    assert (
        str(report)
        .splitlines()[0]
        .endswith(f"; {len(flagged_meds) + 3} rows flagged (data_quality_issues)")
    )
    with duckdb.connect(str(warehouse), read_only=True) as con:
        issues = con.execute(
            "SELECT table_name, source_file, source_line, column_name, check_name, severity, detail"
            " FROM dq__build.data_quality_issues ORDER BY ALL"
        ).fetchall()
        profile = con.execute(
            "SELECT table_name, column_name, check_name, category, rows_failed, status"
            " FROM dq__build.data_quality_profile WHERE rows_failed > 0 ORDER BY ALL"
        ).fetchall()
        n_checks = con.execute("SELECT count(*) FROM dq__build.data_quality_profile").fetchone()[0]
        columns = [
            d[0] for d in con.execute("SELECT * FROM dq__build.data_quality_issues").description
        ]
    assert n_checks == sum(report.expectations.values())
    stop_before = "stop_at before start_at"
    assert issues == sorted(
        [
            ("conditions", "conditions.csv", 4, "start_date", "date_in_range", "warn",
             f"start_date after {contracts.default_parameters()['max_date']} (in the future)"),
            ("encounters", "encounters.csv", 5, "start_at", "after_birth", "warn",
             "start_at before the patient's birth_date"),
            ("encounters", "encounters.csv", 5, "start_at", "date_in_range", "warn",
             "start_at before 1900-01-01"),
            *[("medications", "medications.csv", line, "start_at/stop_at", "dates_in_order",
               "warn", stop_before) for line in flagged_meds],
        ]
    )  # fmt: skip
    counted = {(t, c, k): n for t, c, k, _, n, _ in profile}
    listed: dict[tuple, int] = {}
    for table, _, _, column, check, _, _ in issues:
        listed[table, column, check] = listed.get((table, column, check), 0) + 1
    assert {k: v for k, v in counted.items() if k[2] in ROW_CHECKS} == listed
    assert "patient_id" not in columns  # file and line lead to the record; no values copied
    assert all(p[3] == "plausibility" for p in profile)
