"""The contracts' SQL fast path (pipelines/contracts_sql.py) agrees with Great Expectations on
every expectation type the suites use, on passing data and on planted failures: the same
check, the same rows checked and failed, the same status. What SQL does not decide is left
to GX, and a run's report is the same either way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from pipelines import contracts, contracts_sql
from pipelines.contracts import (
    MART_SUITES,
    RAW_SUITES,
    default_parameters,
    read_suite,
    validate_tables,
)
from pipelines.ingest import ingest_export
from pipelines.settings import StudySettings


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def loaded(real_exports, tmp_path_factory) -> Path:
    ohdsi = next(p for p in real_exports if p.name.startswith("OHDSI"))
    warehouse = tmp_path_factory.mktemp("fast") / "w.duckdb"
    ingest_export(ohdsi, warehouse, log=quiet)
    return warehouse


def suite_types(folder: Path) -> set[str]:
    return {e["type"] for p in folder.glob("*.json") for e in read_suite(p)["expectations"]}


def compare(con, schema: str, folder: Path, parameters: dict, substitutions: dict) -> dict:
    """Every expectation through SQL and through GX: equal wherever SQL decides; returns,
    per expectation type, how many SQL decided and how many of those did not pass."""
    gx = validate_tables(con, schema, folder, parameters=parameters,
                         substitutions=substitutions, raise_on_failure=False, fast=False)  # fmt: skip
    fast = validate_tables(con, schema, folder, parameters=parameters,
                           substitutions=substitutions, raise_on_failure=False)  # fmt: skip
    assert fast.checks == gx.checks  # the report a run writes is the same either way
    decided: dict[str, list[int]] = {}
    position = 0
    for path in sorted(folder.glob("*.json")):
        expectations = read_suite(path, substitutions)["expectations"]
        table = f"{schema}.{path.stem}"
        rows = con.execute(f'SELECT count(*) FROM {schema}."{path.stem}"').fetchone()[0]
        results = contracts_sql.evaluate(con, schema, path.stem, expectations, parameters)
        for expectation, result in zip(expectations, results, strict=True):
            reference = gx.checks[position]
            position += 1
            assert reference.table == table
            if result is None:
                continue
            mine = contracts._check(table, result, rows)
            assert mine == reference, (expectation, mine, reference)
            counts = decided.setdefault(expectation["type"], [0, 0])
            counts[0] += 1
            counts[1] += mine.status != "pass" or bool(mine.rows_failed)
    return decided


def test_sql_and_gx_agree_on_passing_raw_tables_and_sql_decides_every_type(loaded):
    with duckdb.connect(str(loaded)) as con:
        decided = compare(con, "raw", RAW_SUITES, default_parameters(), {"raw": "raw"})
    # every expectation type of the raw suites is decided in SQL on passing data
    assert set(decided) == suite_types(RAW_SUITES)


def test_sql_and_gx_agree_on_planted_failures(loaded, tmp_path):
    warehouse = tmp_path / "broken.duckdb"
    shutil.copy(loaded, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        # within the 1% threshold (1 of 438 conditions) and beyond it (patients)
        con.execute("UPDATE raw.conditions SET stop_date = start_date - 3 WHERE source_line = 2")
        con.execute("UPDATE raw.patients SET birth_date = DATE '1850-01-01' WHERE source_line = 2")
        con.execute("UPDATE raw.patients SET death_date = birth_date - 1 WHERE source_line = 3")
        con.execute(
            "UPDATE raw.encounters SET start_at = TIMESTAMP '2999-01-01' WHERE source_line = 5"
        )
        # not null, value set, unique, code format (SQL), referential (SQL)
        con.execute("UPDATE raw.conditions SET code = NULL WHERE source_line = 5")
        con.execute("UPDATE raw.patients SET sex = 'X' WHERE source_line = 4")
        con.execute(
            "UPDATE raw.patients SET patient_id = (SELECT patient_id FROM raw.patients"
            " WHERE source_line = 6) WHERE source_line = 7"
        )
        con.execute("UPDATE raw.conditions SET code = 'not-a-code' WHERE source_line IN (3, 4)")
        con.execute("UPDATE raw.encounters SET patient_id = 'ghost' WHERE source_line = 2")
        decided = compare(con, "raw", RAW_SUITES, default_parameters(), {"raw": "raw"})
        planted = {t for t, (_, failing) in decided.items() if failing}
        assert planted >= {
            "expect_column_values_to_be_between",
            "expect_column_pair_values_a_to_be_greater_than_b",
            "expect_column_values_to_not_be_null",
            "expect_column_values_to_be_in_set",
            "expect_column_values_to_be_unique",
            "unexpected_rows_expectation",
        }
        # a wrong type and an extra column: SQL leaves them to GX, which words the failure
        con.execute("ALTER TABLE raw.procedures ALTER source_line TYPE INTEGER")
        con.execute("ALTER TABLE raw.imaging_studies ADD COLUMN extra VARCHAR")
        compare(con, "raw", RAW_SUITES, default_parameters(), {"raw": "raw"})
        report = validate_tables(con, "raw", RAW_SUITES, parameters=default_parameters(),
                                 substitutions={"raw": "raw"}, raise_on_failure=False)  # fmt: skip
    failed = {(f.table, f.expectation) for f in report.failures}
    assert ("raw.procedures", "expect_column_values_to_be_of_type") in failed
    assert ("raw.imaging_studies", "expect_table_columns_to_match_set") in failed


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    from pipelines.generator import generate
    from pipelines.study import run_study

    folder = tmp_path_factory.mktemp("study")
    export = folder / "export"
    generate(export, patients=300, seed=7)
    warehouse = folder / "w.duckdb"
    run_study(export, warehouse, StudySettings(), say=quiet)
    return warehouse


def _mart_arguments(settings: StudySettings) -> tuple[dict, dict]:
    scalars = {k: str(v) for k, v in settings.sql_parameters().items()}
    parameters = {"min_age": settings.min_age, "sexes": list(settings.sexes)}
    return parameters, {**scalars, "mart": "mart"}


def test_sql_and_gx_agree_on_the_output_contracts(study, tmp_path):
    parameters, substitutions = _mart_arguments(StudySettings())
    warehouse = tmp_path / "w.duckdb"
    shutil.copy(study, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        decided = compare(con, "mart", MART_SUITES, parameters, substitutions)
        assert set(decided) == suite_types(MART_SUITES)
        # compound key, between a parameter, value set from a parameter, SQL expectation
        con.execute(
            "INSERT INTO mart.cohort SELECT * FROM mart.cohort WHERE rowid = (SELECT min(rowid)"
            " FROM mart.cohort)"
        )
        con.execute("UPDATE mart.cohort SET age_at_index = 1 WHERE rowid = 3")
        con.execute("UPDATE mart.cohort SET sex = 'U' WHERE rowid = 4")
        con.execute("UPDATE mart.attrition SET n_excluded = -1 WHERE step_order = 2")
        con.execute("ALTER TABLE mart.attrition DROP COLUMN step")
        decided = compare(con, "mart", MART_SUITES, parameters, substitutions)
    planted = {t for t, (_, failing) in decided.items() if failing}
    assert planted >= {
        "expect_compound_columns_to_be_unique",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
    }


def test_passing_contracts_never_import_gx_and_gx_is_set_up_once(loaded, tmp_path):
    """On passing data SQL decides everything; when GX is needed, the process's one context
    serves every validation (input and output contracts alike)."""
    contracts._gx_context.cache_clear()
    with duckdb.connect(str(loaded)) as con:
        report = validate_tables(con, "raw", RAW_SUITES, parameters=default_parameters(),
                                 substitutions={"raw": "raw"})  # fmt: skip
    assert report.success
    assert contracts._gx_context.cache_info().currsize == 0  # GX never set up
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "patients.json").write_text(json.dumps({"name": "raw.patients", "expectations": [
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "sex", "value_set": ["F"]}},
    ]}))  # fmt: skip
    with duckdb.connect(str(loaded)) as con:
        for _ in range(2):
            report = validate_tables(con, "raw", suites, raise_on_failure=False)
            assert len(report.failures) == 1
    info = contracts._gx_context.cache_info()
    assert (info.misses, info.currsize) == (1, 1)
