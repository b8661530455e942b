"""The Spark engine builds the same study as DuckDB (pipelines/engines/spark/, docs/spark.md).

Without Spark: every model transpiles to Spark SQL with its parameters bound as typed
literals, and no model uses a construct sqlglot translates wrongly (the guard itself is
tested on the known pitfalls).

With Spark (`make test-spark`, marker `spark`): one generated export (planted scenarios,
split and gzipped files) runs through both engines and every mart table agrees row by
row, under the default settings and under settings that bind every parameter type
differently; a hand-made messy export is loaded and quarantined the same way.
"""

from __future__ import annotations

import datetime as dt
import textwrap

import duckdb
import pytest
import sqlglot
from spark_compare import compare_table, compare_with_duckdb

from pipelines import schema
from pipelines import warehouse as wh
from pipelines.engines.spark import execution as se
from pipelines.errors import ModelError
from pipelines.ingest import ingest_export
from pipelines.models import build_models, model_graph, parameter_values
from pipelines.settings import StudySettings

PATIENTS, SEED = 300, 20261124
# Every parameter type bound differently from the defaults: a set date, true, a one-element
# list, a zero landmark (persistent pain becomes not ascertainable) and other numbers.
OTHER_SETTINGS = StudySettings(
    data_extract_date=dt.date(2024, 6, 30),
    allow_repeat_episodes=True,
    sexes=("F",),
    landmark_days=0,
    persistence_days=28,
    early_repeat_days=14,
    washout_days=180,
    weight_loss_fraction=0.04,
    alp_upper_limit=120.5,
)


# ---------------------------------------------------------------- transpiling (no Spark)


@pytest.mark.parametrize("settings", [StudySettings(), OTHER_SETTINGS], ids=["default", "other"])
def test_every_model_transpiles_to_spark(settings):
    values = parameter_values(settings)
    for model in model_graph():
        spark_sql = se.to_spark_sql(model, values)
        tree = sqlglot.parse_one(spark_sql, read="spark")
        assert not list(tree.find_all(sqlglot.exp.Placeholder)), model.path
        assert all(not t.db for t in tree.find_all(sqlglot.exp.Table)), model.path


def test_no_model_uses_a_construct_that_is_wrong_on_spark():
    problems = {
        m.qualified_name: se.portability_problems(sqlglot.parse_one(m.sql, read="duckdb"))
        for m in model_graph()
    }
    assert {name: p for name, p in problems.items() if p} == {}


def test_parameters_become_typed_literals():
    tree = sqlglot.parse_one(
        "select $n, $x, $yes, $day, $nothing, $name, $sexes from t where d >= $day", read="duckdb"
    )
    values = {
        "n": 365,
        "x": 0.05,
        "yes": True,
        "day": dt.date(2015, 1, 1),
        "nothing": None,
        "name": "O'Brien \\ x",
        "sexes": ["F", "M"],
    }
    spark_sql = se.bind_parameters(tree, values).sql(dialect="spark")
    assert spark_sql == (
        "SELECT 365, CAST(0.05 AS DOUBLE), TRUE, CAST('2015-01-01' AS DATE), NULL,"
        " 'O\\'Brien \\\\ x', ARRAY('F', 'M') FROM t WHERE d >= CAST('2015-01-01' AS DATE)"
    )
    literal = sqlglot.parse_one(spark_sql, read="spark").expressions[5]
    assert literal.this == "O'Brien \\ x"  # the string survives Spark's escaping


def test_unknown_or_positional_parameters_are_errors():
    with pytest.raises(ModelError, match=r"\$missing"):
        se.bind_parameters(sqlglot.parse_one("select $missing", read="duckdb"), {})
    with pytest.raises(ModelError, match="positional"):
        se.bind_parameters(sqlglot.parse_one("select ?", read="duckdb"), {})
    with pytest.raises(ModelError, match="no SQL literal"):
        se.sql_literal(object())


def test_models_read_their_tables_through_temp_views():
    model = next(m for m in model_graph() if m.qualified_name == "staging.stg_synthea__patients")
    spark_sql = se.to_spark_sql(model, {})
    assert "FROM raw__patients AS patients" in spark_sql


@pytest.mark.parametrize(
    "sql",
    [
        "select date_diff('month', index_date, outcome_date)",
        "select date_diff('year', birth_date, index_date)",
        "select date_diff('day', started_at, stopped_at)",
        "select date_diff('day', cast(a as timestamp), b_date)",
        "select index_date - birth_date",
        "select cast(x / 2 as integer)",
        "select cast(5.5 as integer)",
        "select dayofweek(index_date)",
        "select isodow(index_date)",
        "select percentile_cont(0.5) within group (order by days)",
        "select quantile_cont(days, 0.5)",
        "select list(code order by record_date) from t",
        "select * from a asof join b on a.t >= b.t",
    ],
)
def test_portability_guard_catches_known_pitfalls(sql):
    assert se.portability_problems(sqlglot.parse_one(sql, read="duckdb"))


@pytest.mark.parametrize(
    "sql",
    [
        "select date_diff('day', index_date, outcome_date)",
        "select index_date + 42, index_date - 365",
        "select cast(round(x / 2) as integer), cast(n as bigint)",
        "select try_cast(value as decimal(18, 4))",
    ],
)
def test_portability_guard_accepts_portable_sql(sql):
    assert se.portability_problems(sqlglot.parse_one(sql, read="duckdb")) == []


@pytest.mark.spark
def test_spark_connect_without_its_client_libraries_is_a_clear_error():
    pytest.importorskip("pyspark")
    try:
        import grpc  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="Spark Connect"):
            se.spark_session("sc://localhost:15002")
    else:
        pytest.skip("the Spark Connect client libraries are installed")


# ---------------------------------------------------------------- both engines (Spark)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A generated export (split in two gzipped parts) and its DuckDB build."""
    from pipelines.generator import generate

    root = tmp_path_factory.mktemp("spark_generated")
    generate(root / "export", patients=PATIENTS, seed=SEED, split=2, gzip=True)
    ingest_export(root / "export", root / "warehouse.duckdb", log=lambda message: None)
    con = wh.connect(root / "warehouse.duckdb")
    build_models(con, StudySettings())
    build_models(con, OTHER_SETTINGS, schema_suffix="__other")
    yield root, con
    con.close()


@pytest.fixture(scope="module")
def spark_run(spark, generated):
    """The Spark engine's run on the same export: out_dir and mart table -> folder."""
    root, _ = generated
    marts = se.run_models_on_spark(root / "export", root / "spark", StudySettings(), spark=spark)
    return root / "spark", marts


@pytest.mark.spark
def test_every_mart_table_agrees_with_duckdb(spark_run, generated):
    _, con = generated
    out_dir, marts = spark_run
    assert set(marts) == {m.name for m in model_graph() if m.schema == "mart"}
    assert compare_with_duckdb(out_dir / "mart", con) == {}
    # not vacuous: the planted cases made a cohort with outcomes, flags and imaging
    counts = con.execute(
        "SELECT count(*), count(outcome_date), count(DISTINCT end_reason) FROM mart.cohort"
    ).fetchall()[0]
    assert counts[0] > 50 and counts[1] > 0 and counts[2] >= 3
    assert (
        con.execute("SELECT count(DISTINCT flag) FROM mart.red_flag_evidence").fetchall()[0][0] >= 6
    )


@pytest.mark.spark
def test_other_settings_agree_with_duckdb(spark, generated, spark_run, tmp_path):
    _, con = generated
    se.build_models_on_spark(spark, OTHER_SETTINGS, tmp_path)  # reads the run's raw/meta views
    assert compare_with_duckdb(tmp_path / "mart", con, duckdb_schema="mart__other") == {}
    ascertainable = con.execute("SELECT count(flag_persistent_pain) FROM mart__other.red_flags")
    assert ascertainable.fetchall()[0][0] == 0  # landmark 0: persistence is not ascertainable


@pytest.mark.spark
def test_raw_and_meta_tables_agree_with_duckdb(spark_run, generated):
    _, con = generated
    out_dir, _ = spark_run
    for table in schema.TABLES:
        assert compare_table(con, f"raw.{table}", out_dir / "raw" / table) == [], table
    assert compare_table(con, "meta.source_tables", out_dir / "meta" / "source_tables") == []


@pytest.mark.spark
def test_statistics_from_spark_marts_match_duckdb(spark_run, generated):
    """The statistics read the Spark marts, loaded back into DuckDB, as they read DuckDB's."""
    import pandas as pd

    from pipelines.analysis import analysis_tables, load_episodes

    _, con = generated
    _, marts = spark_run
    with duckdb.connect() as other:
        se.load_into_duckdb(other, marts)
        for table in marts:
            count = "SELECT count(*) FROM mart.{}"
            assert (
                other.execute(count.format(table)).fetchall()
                == con.execute(count.format(table)).fetchall()
            )
        from_spark, from_duckdb = load_episodes(other), load_episodes(con)
    pd.testing.assert_frame_equal(from_spark, from_duckdb, check_dtype=False)
    spark_tables = analysis_tables(from_spark, StudySettings())
    duckdb_tables = analysis_tables(from_duckdb, StudySettings())
    assert set(spark_tables) == set(duckdb_tables) and spark_tables
    for name, frame in duckdb_tables.items():
        pd.testing.assert_frame_equal(spark_tables[name], frame, check_dtype=False, obj=name)


@pytest.mark.spark
def test_real_exports_load_like_duckdb(spark, real_exports, tmp_path):
    """Synthea 3.0 (no SYSTEM), 3.2 and 3.3+ (SYSTEM URLs, extra columns) headers."""
    for export in real_exports:
        out = tmp_path / export.name
        ingest_export(export, out / "w.duckdb", log=lambda message: None)
        se.ingest_to_spark(spark, export, out / "spark")
        with wh.open_warehouse(out / "w.duckdb") as con:
            for table in schema.TABLES:
                assert compare_table(con, f"raw.{table}", out / "spark" / "raw" / table) == [], (
                    export.name,
                    table,
                )


MESSY = {
    "patients.csv": """\
        Id,BIRTHDATE,DEATHDATE,GENDER,FIRST
        p1,1960-05-01,,F,Ann
        p2,1970-02-03,2020-01-01,M,"Bob, Jr"
        p1,1961-01-01,,F,second copy
        p3,notadate,,F,Cat
        p4,1980-01-01,,F
        ,1980-01-01,,M,no id
    """,
    "encounters-1.csv": """\
        id,start,stop,patient,encounterclass,code,reasoncode
        e1,2019-02-17T05:07:38Z,2019-02-17T05:22:38Z,p1,ambulatory,185349003,279039007
        e2,2019-13-17T05:07:38Z,,p1,ambulatory,185349003,
        e3,2019,,p1,ambulatory,185349003,
    """,
    "encounters-2.csv": """\
        Id,START,STOP,PATIENT,ENCOUNTERCLASS,CODE,REASONCODE
        e4,2020-03-01T10:00:00Z,,p2,ambulatory,185349003,
        e5,2020-03-01T10:00:00Z,,nobody,ambulatory,185349003,
        e6,2020-03-01 10:00:00,,p2,ambulatory,185349003,extra,field
    """,
    "conditions.csv": """\
        START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION
        2019-02-17,,p1,e1,279039007,Low back pain
        2019-02-17,,p1,e1,  ,blank code
        2019-02-17T00:00:00Z,,p2,e4,279039007,"a date with a time, quoted"
    """,
}


QUARANTINE = "SELECT table_name, source_file, source_line, column_name, reason FROM {}"
MANIFEST = "SELECT table_name, file_path, size_bytes, sha256, row_count, rows_quarantined FROM {}"


@pytest.mark.spark
def test_messy_export_is_loaded_and_quarantined_like_duckdb(spark, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    for name, text in MESSY.items():
        (export / name).write_text(textwrap.dedent(text), encoding="utf-8")
    with (export / "conditions.csv").open("ab") as f:  # a description that is not UTF-8
        f.write(b"2019-03-01,,p1,e1,279039007,caf\xe9\n")
    (export / "medications.csv").write_text("", encoding="utf-8")  # empty: treated as absent
    ingest_export(export, tmp_path / "w.duckdb", log=lambda message: None)
    se.ingest_to_spark(spark, export, tmp_path / "spark")
    spark_meta = f"read_parquet('{tmp_path}/spark/meta/{{}}/*.parquet')"
    with wh.open_warehouse(tmp_path / "w.duckdb") as con:
        for table in schema.TABLES:
            assert compare_table(con, f"raw.{table}", tmp_path / "spark" / "raw" / table) == []
        assert (
            compare_table(con, "meta.source_tables", tmp_path / "spark" / "meta" / "source_tables")
            == []
        )
        for query, table in ((QUARANTINE, "quarantine"), (MANIFEST, "ingest_manifest")):
            duck = con.execute(query.format(f"meta.{table}")).fetchall()
            spark_rows = con.execute(query.format(spark_meta.format(table))).fetchall()
            assert sorted(duck, key=str) == sorted(spark_rows, key=str), table
        reasons = {
            r for (r,) in con.execute("SELECT DISTINCT reason FROM meta.quarantine").fetchall()
        }
    assert reasons >= {
        "duplicate_patient_id", "unparseable_date", "wrong_field_count", "missing_value",
        "unknown_patient", "invalid_encoding",
    }  # fmt: skip
