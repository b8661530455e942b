"""The red-flag registry (valuesets/flags.csv) is the one list of flags: the SQL pivot, the
evidence models, the contracts, the report and the generator follow it (docs/adding-a-flag.md)."""

from __future__ import annotations

import shutil

import duckdb
import pytest
import sqlglot
from model_spec import build_study, create_raw_tables, query_text
from sqlglot import exp

from pipelines import flags
from pipelines.clinical import TABLE_ONE_VARIABLES
from pipelines.contracts import MART_SUITES, load_suite
from pipelines.flags import FLAGS, REGISTRY, SEED_FLAGS, FlagRegistryError, read_registry
from pipelines.models import SQL_DIR, build_models, model_graph
from pipelines.report import RULES
from pipelines.settings import StudySettings
from pipelines.valuesets import read_value_sets

COLUMNS = [f"flag_{f}" for f in FLAGS]
# files in sql/intermediate named int_flag_* that are not a flag's evidence
NOT_EVIDENCE = {"int_flag_windows", "int_flag_ascertainability"}


def test_the_registry_names_the_protocol_flags_in_order():
    assert FLAGS[:6] == SEED_FLAGS == (
        "persistent_pain", "night_pain", "weight_loss", "neuro_symptoms", "spinal_tenderness",
        "breast_cancer_history",
    )  # fmt: skip
    # the literature's three follow (a flag added later comes after them)
    assert FLAGS[6:9] == ("age_50_plus", "failed_conservative_therapy", "elevated_alp")
    assert [f.needs_table for f in REGISTRY if f.needs_table] == [
        "observations", "medications", "observations"
    ]  # fmt: skip


def _red_flags_sql() -> exp.Expression:
    return sqlglot.parse_one((SQL_DIR / "marts" / "red_flags.sql").read_text(), read="duckdb")


def _cte(tree: exp.Expression, name: str) -> exp.Select:
    return next(c.this for c in tree.find_all(exp.CTE) if c.alias == name)


def _flag_literal(expression: exp.Expression) -> str:
    """The flag a pivot expression picks: the literal in its `flag = '...'`."""
    (eq,) = [e for e in expression.find_all(exp.EQ) if e.expression.is_string]
    return eq.expression.name


def test_the_pivot_in_red_flags_sql_has_one_column_per_registry_flag_in_order():
    pivot = _cte(_red_flags_sql(), "flags")
    names = [s.alias_or_name for s in pivot.selects]
    assert names == ["patient_id", "index_date", *COLUMNS, "red_flag_count"]
    for select in pivot.selects[2:-1]:  # each column picks its own flag
        assert f"flag_{_flag_literal(select)}" == select.alias
    listed = _cte(_red_flags_sql(), "ascertainability").find(exp.ConcatWs).expressions[1:]
    assert [_flag_literal(e) for e in listed] == list(FLAGS)


def test_table_one_follows_the_registry_without_a_list_of_its_own():
    # baseline_characteristics takes every flag column of mart.red_flags (whose pivot the test
    # above checks), so adding a flag needs no edit there (docs/adding-a-flag.md)
    sql = (SQL_DIR / "marts" / "baseline_characteristics.sql").read_text()
    named = {c.name for c in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Column)}
    assert not named & set(COLUMNS), "a flag named by hand in baseline_characteristics.sql"
    con = build_study(patients="patient_id | birth_date | sex\np1 | 1960-05-01 | F")
    built = [r[0] for r in con.execute("describe mart.baseline_characteristics").fetchall()]
    assert [c for c in built if c.startswith("flag_")] == COLUMNS
    assert (
        built[-1] == "red_flag_count" and built[-len(COLUMNS) - 2] == "has_prior_vertebral_fracture"
    )
    table_one = [v for v in TABLE_ONE_VARIABLES if v.startswith("flag_")]
    assert table_one == COLUMNS


def test_a_flag_added_to_the_pivot_reaches_table_one_with_no_other_edit(tmp_path):
    # the throwaway recipe in small: one more pivot column in red_flags.sql, nothing else
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    red_flags = sql_dir / "marts" / "red_flags.sql"
    # after the last flag column, whichever flag the registry ends with
    count = "        -- seed flags only;"
    assert red_flags.read_text().count(count) == 1
    example = "        max(case when flag = 'example' then is_set end) = 1 as flag_example,\n"
    red_flags.write_text(red_flags.read_text().replace(count, example + count))
    con = duckdb.connect()
    create_raw_tables(con, patients="patient_id | birth_date | sex\np1 | 1960-05-01 | F")
    build_models(con, StudySettings(), sql_dir=sql_dir)
    built = [r[0] for r in con.execute("describe mart.baseline_characteristics").fetchall()]
    assert [c for c in built if c.startswith("flag_")] == [*COLUMNS, "flag_example"]
    assert built[-2:] == ["flag_example", "red_flag_count"]


def test_the_built_tables_follow_the_registry():
    con = build_study(patients="patient_id | birth_date | sex\np1 | 1960-05-01 | F")
    assert query_text(con, "select flag, flag_order, is_seed from meta.flags order by 2") == [
        [f.name, str(f.order), str(f.is_seed).lower()] for f in REGISTRY
    ]
    built = [r[0] for r in con.execute("describe mart.red_flags").fetchall()]
    assert built == [
        "patient_id",
        "index_date",
        *COLUMNS,
        "red_flag_count",
        "not_ascertainable_flags",
    ]


def test_each_flag_has_its_own_evidence_files_and_every_evidence_file_a_flag():
    files = {p.stem for p in (SQL_DIR / "intermediate").glob("int_flag_*.sql")} - NOT_EVIDENCE
    listed = {m: f.name for f in REGISTRY for m in f.evidence_models}
    assert files == set(listed)
    for model, flag in listed.items():
        assert f"'{flag}' as flag" in (SQL_DIR / "intermediate" / f"{model}.sql").read_text()
    for flag in ("night_pain", "neuro_symptoms", "spinal_tenderness"):  # no longer VALUES rows
        assert listed[f"int_flag_{flag}"] == flag
    concepts = {r.concept for r in read_value_sets()}
    assert {c for f in REGISTRY for c in f.value_sets} <= concepts


def test_the_evidence_union_is_generated_from_the_registry():
    models = {m.qualified_name: m for m in model_graph()}
    union = models["intermediate.int_flag_evidence"]
    assert not union.path.exists()  # generated, not a file
    assert set(union.depends_on) == {
        f"intermediate.{m}" for f in REGISTRY for m in f.evidence_models
    }
    assert "intermediate.int_flag_evidence" in models["mart.red_flag_evidence"].depends_on


def test_the_mart_contracts_name_every_registry_flag():
    suite = load_suite(MART_SUITES / "red_flags.json")
    exist = [e.column for e in suite.expectations if e.expectation_type == "expect_column_to_exist"]
    assert [c for c in exist if c.startswith("flag_")] == COLUMNS
    (count,) = [e for e in suite.expectations if e.expectation_type == "expect_column_values_to_be_between"]  # fmt: skip
    assert count.max_value == len(SEED_FLAGS)
    evidence = load_suite(MART_SUITES / "red_flag_evidence.json")
    (in_set,) = [e for e in evidence.expectations if e.expectation_type == "expect_column_values_to_be_in_set"]  # fmt: skip
    assert list(in_set.value_set) == list(FLAGS)


def test_the_report_rules_are_the_registry_flags_then_the_combinations():
    assert list(RULES) == [*COLUMNS, "any_seed_flag", "two_or_more_seed_flags"]
    assert RULES["flag_night_pain"] == ("Night pain", "seed")
    assert RULES["flag_elevated_alp"] == ("Raised alkaline phosphatase", "literature")


def test_the_generator_plants_registry_flags_only():
    from pipelines.generator.params import PlantedParameterError, PlantedParameters

    p = PlantedParameters()
    assert set(FLAGS[:9]) <= set(p.flags) <= set(FLAGS)  # the protocol's nine, at least
    with pytest.raises(PlantedParameterError, match=r"unknown \['no_such_flag'\]"):
        PlantedParameters(flags={**p.flags, "no_such_flag": p.flags["night_pain"]})


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.replace("night_pain,2,", "night_pain,3,"), "in order"),
        (lambda t: t.replace("night_pain,2,true", "night_pain,2,yes"), "is_seed"),
        (lambda t: t.replace(",int_flag_night_pain", ",int_flag_persistent_pain"), "twice"),
        (lambda t: t.replace(",evidence_models", ",models"), "columns"),
        (lambda t: t.replace("night_pain,2", "Night-Pain,2"), "plain lower-case name"),
    ],
)
def test_a_broken_registry_is_refused_with_its_line(tmp_path, change, message):
    path = tmp_path / "flags.csv"
    path.write_text(change(flags.REGISTRY_FILE.read_text()))
    with pytest.raises(FlagRegistryError, match=message):
        read_registry(path)


def test_meta_flags_is_loaded_with_the_value_sets():
    from pipelines.valuesets import load_value_sets

    con = duckdb.connect()
    load_value_sets(con)
    types = dict(
        con.execute("select column_name, column_type from (describe meta.flags)").fetchall()
    )
    assert types["flag_order"] == "INTEGER" and types["is_seed"] == "BOOLEAN"
    assert con.execute("select count(*) from meta.flags").fetchone()[0] == len(FLAGS)
