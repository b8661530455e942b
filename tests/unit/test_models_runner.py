"""The SQL runner: build order, parameter binding, errors, schema suffix; and every model's form.

Form rules (STYLE.md): one SELECT per file with a three-line header (purpose, grain,
parameters) whose parameter list matches the parameters used; SQL that sqlglot
transpiles to Spark SQL, avoiding the constructs that are silently wrong there.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import duckdb
import pytest
import sqlglot
from model_spec import build_study, create_raw_tables, query_text
from sqlglot.errors import ErrorLevel

from pipelines.errors import ModelError
from pipelines.models import SQL_DIR, build_models, model_graph, parameter_values, render_sql
from pipelines.settings import StudySettings

MODELS = model_graph()

HEADER = "-- purpose: x\n-- grain: x\n-- parameters: none\n"


def write_models(root: Path, files: dict[str, str]) -> Path:
    for name, sql in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + sql)
    return root


def raw_warehouse() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_raw_tables(con)
    return con


# ---------------------------------------------------------------- runner


def test_build_order_is_derived_from_the_tables_each_model_reads(tmp_path):
    sql_dir = write_models(
        tmp_path,
        {
            "marts/a_final.sql": "select n + 1 as n from intermediate.int_b",
            "intermediate/int_b.sql": "select n * 2 as n from staging.stg_z",
            "staging/stg_z.sql": "select count(*) as n from raw.patients",
        },
    )
    assert [m.qualified_name for m in model_graph(sql_dir)] == [
        "staging.stg_z",
        "intermediate.int_b",
        "mart.a_final",
    ]
    con = raw_warehouse()
    assert build_models(con, StudySettings(), sql_dir=sql_dir) == [
        "staging.stg_z",
        "intermediate.int_b",
        "mart.a_final",
    ]
    assert con.execute("select n from mart.a_final").fetchone() == (1,)


def test_the_project_models_build_in_layer_order_with_their_inputs_first():
    order = [m.qualified_name for m in MODELS]
    for position, model in enumerate(MODELS):
        assert all(order.index(d) < position for d in model.depends_on), model.qualified_name
    # every mart after every other layer (marts may read marts: baseline_characteristics)
    marts = [name for name in order if name.startswith("mart.")]
    assert len(marts) >= 5 and order[-len(marts) :] == marts


def test_each_model_is_bound_with_only_the_parameters_it_uses(tmp_path):
    sql_dir = write_models(
        tmp_path,
        {
            "staging/stg_one.sql": "select $washout_days as washout_days",
            "staging/stg_two.sql": "select $min_age as min_age, list_contains($sexes, 'F') as has_f",
        },
    )
    con = raw_warehouse()
    build_models(
        con, StudySettings(washout_days=180), sql_dir=sql_dir
    )  # DuckDB rejects unused parameters
    assert con.execute("select * from staging.stg_one").fetchall() == [(180,)]
    assert con.execute("select * from staging.stg_two").fetchall() == [(18, True)]


def test_an_unknown_parameter_is_a_model_error(tmp_path):
    sql_dir = write_models(tmp_path, {"staging/stg_one.sql": "select $no_such_setting as x"})
    with pytest.raises(ModelError, match=r"stg_one.sql: unknown parameter\(s\) \$no_such_setting"):
        build_models(raw_warehouse(), StudySettings(), sql_dir=sql_dir)


def test_a_dependency_cycle_is_a_model_error_naming_the_cycle(tmp_path):
    sql_dir = write_models(
        tmp_path,
        {
            "intermediate/int_a.sql": "select * from intermediate.int_b",
            "intermediate/int_b.sql": "select * from intermediate.int_a",
            "staging/stg_ok.sql": "select 1 as x",
        },
    )
    with pytest.raises(
        ModelError, match=r"cycle.*intermediate.int_a -> intermediate.int_b -> intermediate.int_a"
    ):
        model_graph(sql_dir)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "select * from intermediate.int_missing",
            "reads intermediate.int_missing, which no model in sql/ builds",
        ),
        ("select * from raw.allergies", "reads unknown table raw.allergies"),
        ("select * from patients", "must be schema-qualified"),
        ("select 1 as x; select 2 as y", "exactly one SELECT"),
        ("create table x as select 1", "exactly one SELECT"),
    ],
)
def test_a_bad_reference_or_statement_is_a_clear_model_error(tmp_path, sql, message):
    sql_dir = write_models(tmp_path, {"staging/stg_bad.sql": sql})
    with pytest.raises(ModelError, match=re.escape(message)):
        model_graph(sql_dir)


def test_an_sql_error_names_the_model_file(tmp_path):
    sql_dir = write_models(
        tmp_path, {"staging/stg_bad.sql": "select no_such_column from raw.patients"}
    )
    with pytest.raises(ModelError, match="stg_bad.sql"):
        build_models(raw_warehouse(), StudySettings(), sql_dir=sql_dir)


def test_building_needs_an_ingested_warehouse():
    with pytest.raises(ModelError, match="ingest the export first"):
        build_models(duckdb.connect(), StudySettings())


def test_a_schema_suffix_builds_every_model_beside_the_published_tables_with_other_settings():
    con = build_study(
        patients="patient_id | birth_date | sex\n p1 | 1960-05-01 | F",
        encounters="encounter_id | patient_id | start_at\n e0 | p1 | 2014-01-10 09:00:00\n e9 | p1 | 2017-06-01 09:00:00",
        conditions="patient_id | start_date | code\n p1 | 2015-06-01 | 279039007\n p1 | 2016-03-01 | 279039007",
    )
    variant = StudySettings(study_start_date=dt.date(2016, 1, 1), washout_days=180)
    built = build_models(con, variant, schema_suffix="__next")
    assert built == [f"{m.schema}__next.{m.name}" for m in MODELS]
    assert query_text(con, "select index_date from mart.cohort") == [["2015-06-01"]]
    assert query_text(con, "select index_date from mart__next.cohort") == [["2016-03-01"]]
    # the suffixed build reads only suffixed models: its attrition matches its own cohort
    for schema in ("mart", "mart__next"):
        cohort = con.execute(f"select count(*) from {schema}.cohort").fetchone()[0]
        step8 = con.execute(
            f"select n_remaining from {schema}.attrition where step_order = 8"
        ).fetchone()[0]
        assert cohort == step8 == 1


def test_the_suffixed_build_gives_the_same_tables_as_the_plain_build():
    con = build_study(
        patients="patient_id | birth_date | sex\n p1 | 1960-05-01 | F",
        encounters="encounter_id | patient_id | start_at | reason_code\n e0 | p1 | 2014-01-10 09:00:00 |\n"
        " e1 | p1 | 2016-04-01 09:00:00 | 279039007\n e9 | p1 | 2017-06-01 09:00:00 |",
        conditions="patient_id | start_date | code\n p1 | 2016-03-01 | 279039007\n p1 | 2010-03-01 | 254837009",
    )
    build_models(con, StudySettings(), schema_suffix="__same")
    for m in MODELS:
        plain = f"select * from {m.qualified_name} order by all"
        assert query_text(con, plain) == query_text(
            con, plain.replace(f"{m.schema}.", f"{m.schema}__same.", 1)
        ), m.name


@pytest.fixture(scope="module")
def generated_warehouse(tmp_path_factory) -> Path:
    """A small generated export, ingested, with the primary build (`__build`)."""
    from pipelines import study
    from pipelines.generator import generate

    root = tmp_path_factory.mktemp("generated")
    generate(root / "export", patients=300, seed=5)
    warehouse = root / "warehouse.duckdb"
    study.step_ingest(root / "export", warehouse, say=lambda _m: None)
    study.step_models(warehouse, StudySettings())
    return warehouse


def _model_rows(con: duckdb.DuckDBPyConnection, suffix: str) -> dict[str, list]:
    return {
        m.qualified_name: con.execute(
            f"select * from {m.schema}{suffix}.{m.name} order by all"
        ).fetchall()
        for m in MODELS
    }


@pytest.mark.parametrize("variant", ["landmark_0", "persistence_28", "washout_180"])
def test_a_variant_reusing_the_primary_build_equals_a_full_rebuild(generated_warehouse, variant):
    from pipelines.study import BUILD_SUFFIX, SENSITIVITY_VARIANTS

    settings = StudySettings().replace(**SENSITIVITY_VARIANTS[variant])
    with duckdb.connect(str(generated_warehouse)) as con:
        build_models(con, settings, schema_suffix="__full")
        built = build_models(con, settings, schema_suffix="__reuse", reuse_suffix=BUILD_SUFFIX)
        assert built == [f"{m.schema}__reuse.{m.name}" for m in MODELS]
        kinds = dict(
            con.execute(
                "select table_schema || '.' || table_name, table_type"
                " from information_schema.tables where table_schema like '%__reuse'"
            ).fetchall()
        )
        full, reused = _model_rows(con, "__full"), _model_rows(con, "__reuse")
        assert full["mart.cohort"], "the generated export has a cohort"
        for name in full:
            assert reused[name] == full[name], name
        # staging and the models upstream of the changed parameter are not computed again
        changed = set(SENSITIVITY_VARIANTS[variant])
        for m in MODELS:
            if m.schema == "staging" or m.name == "int_concept_records":
                assert kinds[f"{m.schema}__reuse.{m.name}"] == "VIEW", m.name
            if changed & set(m.parameters):
                assert kinds[f"{m.schema}__reuse.{m.name}"] == "BASE TABLE", m.name
        for schema in ("staging", "intermediate", "mart"):
            for suffix in ("__full", "__reuse"):
                con.execute(f"drop schema {schema}{suffix} cascade")


def test_each_model_is_parsed_once_per_process_however_many_builds_render_it(
    generated_warehouse, monkeypatch
):
    """The primary build and every sensitivity variant render each model under their own
    schema suffix (issue 16): from the one parse of its file, each render on its own copy,
    so a second suffix never sees the first one's names and both builds hold the same rows."""
    from pipelines.docsite import model_docs
    from pipelines.engines.spark.execution import to_spark_sql

    parsed: list[str] = []

    def counting(real):
        def parse(sql, *args, **kwargs):
            parsed.append(sql)
            return real(sql, *args, **kwargs)

        return parse

    monkeypatch.setattr(sqlglot, "parse", counting(sqlglot.parse))
    monkeypatch.setattr(sqlglot, "parse_one", counting(sqlglot.parse_one))
    models = model_graph()  # MODELS: every model file already parsed in this process
    settings = StudySettings().replace(washout_days=180)
    with duckdb.connect(str(generated_warehouse)) as con:
        for suffix in ("__once_a", "__once_b"):
            build_models(con, settings, schema_suffix=suffix)
        assert _model_rows(con, "__once_a") == _model_rows(con, "__once_b")
        for schema in ("staging", "intermediate", "mart"):
            for suffix in ("__once_a", "__once_b"):
                con.execute(f"drop schema {schema}{suffix} cascade")
    first = [render_sql(m, schema_suffix="__once_a") for m in models]
    second = [render_sql(m, schema_suffix="__once_b") for m in models]
    assert [render_sql(m, schema_suffix="__once_a") for m in models] == first
    assert first != second and not any("__once_a" in sql for sql in second)
    values = parameter_values(settings)
    assert all(to_spark_sql(m, values) for m in models)
    assert {d.name for d in model_docs()} == {m.qualified_name for m in models}
    again = [m.qualified_name for m in models if m.sql in parsed]
    assert again == [], f"parsed again: {again}"


def test_a_build_with_other_inputs_is_not_reused(generated_warehouse, tmp_path):
    from pipelines.study import BUILD_SUFFIX

    copy = tmp_path / "w.duckdb"
    copy.write_bytes(generated_warehouse.read_bytes())
    with duckdb.connect(str(copy)) as con:
        con.execute("delete from raw.observations where rowid % 7 = 0")
        build_models(con, StudySettings(), schema_suffix="__reuse", reuse_suffix=BUILD_SUFFIX)
        tables = con.execute(
            "select count(*) from information_schema.tables"
            " where table_schema like '%__reuse' and table_type = 'BASE TABLE'"
        ).fetchone()[0]
        assert tables == sum(not m.is_view for m in MODELS)


def test_parameter_free_staging_models_are_views_and_the_rest_tables():
    con = build_study(
        patients="patient_id | birth_date | sex\n p1 | 1960-05-01 | F",
        encounters="encounter_id | patient_id | start_at\n e0 | p1 | 2014-01-10 09:00:00",
        conditions="patient_id | start_date | code\n p1 | 2015-06-01 | 279039007",
    )
    kinds = dict(
        con.execute(
            "select table_schema || '.' || table_name, table_type from information_schema.tables"
            " where table_schema in ('staging', 'intermediate', 'mart')"
        ).fetchall()
    )
    for m in MODELS:
        expected = "VIEW" if m.schema == "staging" and not m.parameters else "BASE TABLE"
        assert kinds[m.qualified_name] == expected, m.name


def test_a_schema_suffix_must_be_a_plain_name():
    with pytest.raises(ModelError, match="schema_suffix"):
        build_models(raw_warehouse(), StudySettings(), schema_suffix="; drop table x")


# ---------------------------------------------------------------- form of every model


def test_every_model_file_lives_in_a_layer_folder_and_is_named_by_convention():
    prefixes = {"staging": "stg_synthea__", "intermediate": "int_", "mart": ""}
    for m in MODELS:
        assert m.name.startswith(prefixes[m.schema]), m.path
        assert m.path.parent.parent == SQL_DIR
        assert m.name == m.name.lower()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_model_has_a_header_naming_purpose_grain_and_exactly_its_parameters(model):
    lines = model.sql.splitlines()
    assert lines[0].startswith("-- purpose: ") and lines[1].startswith("-- grain: ")
    assert lines[2].startswith("-- parameters: ")
    declared = re.findall(r"\$(\w+)", lines[2])
    assert sorted(declared) == sorted(model.parameters) and (
        declared or lines[2] == "-- parameters: none"
    )


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_model_transpiles_to_spark_sql(model):
    (spark,) = sqlglot.transpile(
        model.sql, read="duckdb", write="spark", unsupported_level=ErrorLevel.RAISE
    )
    assert spark
    assert render_sql(model, schema_suffix="__x", dialect="spark")


# constructs the dependency notes list as silently wrong or rejected on Spark
SPARK_PITFALLS = {
    r"\bpercentile_cont\b|\bquantile": "approximate on Spark",
    r"\binterval\b": "INTERVAL arithmetic: add whole days to DATEs instead",
    r"date_diff\(\s*'(month|year|hour|minute|second)": "date_diff in months/years is off by one on Spark",
    r"\b(string_agg|list|array_agg)\s*\(": "ordered lists lose their order on Spark",
    r"\b(dayofweek|isodow|to_days|generate_series|range)\s*\(": "not portable to Spark",
    r"\basof\b": "ASOF JOIN is rejected by Spark",
    r"\bpivot\b": "DuckDB's short PIVOT is rejected by Spark",
    r"cast\([^)]*\bas\s+(integer|int|bigint)\b": "CAST to integer rounds on DuckDB and truncates on Spark",
    r"->": "lambda arrows are an error in DuckDB 2.0",
}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_no_model_uses_a_construct_that_differs_on_spark(model):
    body = "\n".join(line.split("--")[0] for line in model.sql.lower().splitlines())
    for pattern, why in SPARK_PITFALLS.items():
        assert not re.search(pattern, body), f"{model.path.name}: {why}"


@pytest.mark.parametrize("model", [m for m in MODELS if "date_diff" in m.sql], ids=lambda m: m.name)
def test_day_differences_are_taken_between_dates_not_timestamps(model):
    for args in re.findall(r"date_diff\('day', ([^)]*)\)", model.sql):
        assert all(a.strip().endswith("_date") for a in args.split(",")), args


def test_parameter_values_include_every_scalar_and_list_setting():
    values = parameter_values(StudySettings())
    assert values["washout_days"] == 365 and values["sexes"] == ["F", "M"]
    assert values["data_extract_date"] is None
    used = {p for m in MODELS for p in m.parameters}
    assert used <= set(values)
