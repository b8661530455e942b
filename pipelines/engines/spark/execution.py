"""The Spark engine: ingest and the SQL models on Spark, from the same files in `sql/`.

`run_models_on_spark(source, out_dir, settings, master)` reads a Synthea export into Spark
with the DuckDB ingest's file discovery, header aliases and column types
(`pipelines.ingest`, `pipelines.schema`), loads the value sets, builds every model of
`pipelines.models` in its build order with `spark.sql` on the model transpiled by sqlglot
(DuckDB -> Spark SQL, study parameters bound as typed literals in the syntax tree), and
writes every table as Parquet under `out_dir/<schema>/<table>/`. `compare_with_duckdb`
checks the mart tables against a DuckDB build, row by row.

pyspark is an optional extra (`uv sync --extra spark`) and is imported only inside the
functions that need a session, so the transpiling half works without it. What differs
from the DuckDB engine: docs/spark.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from sqlglot import exp

from pipelines import ingest, schema
from pipelines.errors import ModelError
from pipelines.models import (
    Model,
    model_graph,
    model_signatures,
    model_tree,
    parameter_values,
)
from pipelines.settings import StudySettings
from pipelines.valuesets import load_value_sets

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"
# Session settings the SQL relies on: UTC wall clock (raw timestamps are naive UTC) and
# ANSI mode (errors rather than silent NULLs, as in DuckDB).
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
SPARK_TYPES = {
    "VARCHAR": "STRING",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP_NTZ",  # DuckDB TIMESTAMP is naive
    "BIGINT": "BIGINT",
    "INTEGER": "INT",
    "DOUBLE": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
}
# What DuckDB's CSV reader accepts as a DATE or TIMESTAMP; Spark's casts are looser
# ('2019' is 2019-01-01 there), so a value must match this before it is cast.
DATETIME_PATTERN = (
    r"^\s*\d{4}-\d{1,2}-\d{1,2}"
    r"([T ]\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*(Z|[+-]\d{2}(:?\d{2})?)?)?\s*$"
)
CORRUPT = "_corrupt_record"
# The ingest meta tables `ingest_to_spark` writes beside raw.* (out_dir/meta/<table>/), with
# the columns of the DuckDB ingest's (pipelines/ingest/tables.py META_DDL)
INGEST_META_TABLES = ("quarantine", "source_tables", "observation_periods", "ingest_manifest")
META_TABLES = (
    "value_sets",
    "unit_conversions",
    "code_system_aliases",
    "code_system_defaults",
    "flags",
)


# ---------------------------------------------------------------- transpiling


def sql_literal(value: Any) -> exp.Expression:
    """A typed SQL literal for a parameter value, of the type DuckDB binds it as."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ModelError(f"parameter value {value!r} has no SQL literal")
        return exp.cast(exp.Literal.number(repr(value)), exp.DataType.build("DOUBLE"))
    if isinstance(value, dt.datetime):
        return exp.cast(
            exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP")
        )
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("DATE"))
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, list | tuple):
        return exp.Array(expressions=[sql_literal(v) for v in value])
    raise ModelError(f"parameter value {value!r} ({type(value).__name__}) has no SQL literal")


def bind_parameters(
    tree: exp.Expression, values: dict[str, Any], where: str = "model"
) -> exp.Expression:
    """The tree with every named parameter ($name) replaced by a typed literal."""
    names = {p.name for p in tree.find_all(exp.Placeholder)}
    if names & {"", "?"}:
        raise ModelError(f"{where}: positional parameters (?) are not supported; use $name")
    unknown = sorted(names - set(values))
    if unknown:
        raise ModelError(f"{where}: unknown parameter(s) {', '.join('$' + p for p in unknown)}")
    return tree.transform(
        lambda node: sql_literal(values[node.name]) if isinstance(node, exp.Placeholder) else node
    )


def view_name(schema_name: str, table: str) -> str:
    """Spark temp view standing for `<schema>.<table>` (temp views have no schema)."""
    return f"{schema_name}__{table}"


def _rename_tables(tree: exp.Expression) -> exp.Expression:
    for table in tree.find_all(exp.Table):
        if table.db:
            if not table.alias:  # `raw.patients` stays addressable as `patients`
                table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
            table.set("this", exp.to_identifier(view_name(table.db, table.name)))
            table.set("db", None)
    return tree


def to_spark_sql(model: Model, values: dict[str, Any]) -> str:
    """The model as Spark SQL: parameters bound, tables renamed to their temp views."""
    tree = model_tree(model)  # the process' one parse of it: not changed here
    problems = portability_problems(tree)
    if problems:
        raise ModelError(f"{model.path}: not portable to Spark: " + "; ".join(problems))
    tree = bind_parameters(tree, values, str(model.path))  # a copy (`transform` copies)
    return _rename_tables(tree).sql(dialect="spark", pretty=True)


_INTEGER_TYPES = exp.DataType.INTEGER_TYPES
_UNPORTABLE = {
    exp.DayOfWeek: "dayofweek (0=Sunday in DuckDB, 1=Sunday in Spark): compare dates instead",
    exp.DayOfWeekIso: "isodow: not transpiled faithfully to Spark",
    exp.PercentileCont: "percentile_cont (approximate on Spark): compute quantiles in Python",
    exp.PercentileDisc: "percentile_disc: compute quantiles in Python",
    exp.Quantile: "quantile_*: rejected by Spark",
    exp.Pivot: "PIVOT: write CASE WHEN aggregates",
}


def portability_problems(tree: exp.Expression) -> list[str]:
    """DuckDB constructs that sqlglot turns into wrong or rejected Spark SQL."""
    problems = [text for node_type, text in _UNPORTABLE.items() if tree.find(node_type)]
    for node in tree.find_all(exp.DateDiff, exp.DateAdd, exp.DateSub, exp.TimestampDiff):
        unit = node.text("unit").upper()
        if unit not in ("", "DAY", "DAYS"):
            problems.append(
                f"{node.sql('duckdb')}: date arithmetic in {unit.lower()} differs on Spark; use days"
            )
        if isinstance(node, exp.DateDiff | exp.TimestampDiff) and any(
            map(_is_timestamp, node.args.values())
        ):
            problems.append(
                f"{node.sql('duckdb')}: date_diff on timestamps differs on Spark; cast to DATE first"
            )
    for node in tree.find_all(exp.Sub):
        if _is_date(node.this) and _is_date(node.expression):
            problems.append(
                f"{node.sql('duckdb')}: date - date is an interval on Spark; use date_diff('day', a, b)"
            )
    for node in tree.find_all(exp.Cast, exp.TryCast):
        if node.to.this in _INTEGER_TYPES and _may_be_fractional(node.this):
            problems.append(
                f"{node.sql('duckdb')}: DuckDB rounds, Spark truncates; use round() or floor()"
            )
    for node in tree.find_all(exp.ArrayAgg, exp.GroupConcat):
        if node.find(exp.Order):
            problems.append(f"{node.sql('duckdb')}: ordered aggregates lose their order on Spark")
    for node in tree.find_all(exp.Join):
        if "ASOF" in (node.text("kind") + node.text("side") + node.text("method")).upper():
            problems.append("ASOF JOIN: rejected by Spark")
    return problems


# Naming convention (STYLE.md): `<event>_date` is a DATE, `<event>_at` a TIMESTAMP.
def _is_date(node: Any) -> bool:
    if isinstance(node, exp.Cast):
        return node.to.this == exp.DataType.Type.DATE
    return isinstance(node, exp.Column) and node.name.endswith("_date")


def _is_timestamp(node: Any) -> bool:
    if isinstance(node, exp.Cast):
        return node.to.this in exp.DataType.TEMPORAL_TYPES - {exp.DataType.Type.DATE}
    return isinstance(node, exp.Column) and node.name.endswith("_at")


def _may_be_fractional(node: exp.Expression) -> bool:
    if isinstance(node, exp.Literal):
        return not node.is_string and not node.is_int
    if isinstance(node, exp.Round):  # round(x) is whole; round(x, 2) is not
        return node.args.get("decimals") is not None and node.args["decimals"].name != "0"
    return isinstance(node, exp.Div | exp.Avg) or (
        isinstance(node, exp.Column) and node.name.startswith("value")
    )


# ---------------------------------------------------------------- session


def spark_session(
    master: str = DEFAULT_MASTER, config: dict[str, str] | None = None
) -> SparkSession:
    """A Spark session: local (`local[*]`), a cluster master URL, or Spark Connect (`sc://...`)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ModelError(
            "the Spark engine needs pyspark, an optional extra: run `make install-spark`"
            " (uv sync --frozen --all-groups --inexact --extra spark)"
        ) from exc
    settings = {**SESSION_CONF, **(config or {})}
    if master.startswith("sc://"):
        try:
            import grpc  # noqa: F401  (Spark Connect's client transport)
        except ImportError as exc:
            raise ModelError(
                "Spark Connect (sc://...) needs pyspark's connect client libraries"
                " (grpcio, grpcio-status, googleapis-common-protos, zstandard), which the"
                " lock file does not include; use a master URL or install pyspark[connect]"
            ) from exc
        builder = SparkSession.builder.remote(master)
    else:
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.master(master).appName("redflags")
        settings.setdefault("spark.ui.showConsoleProgress", "false")
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


# ---------------------------------------------------------------- storage


def _check_typed(frame: DataFrame, qualified: str) -> None:
    untyped = [f.name for f in frame.schema.fields if f.dataType.typeName() == "void"]
    if untyped:
        raise ModelError(f"{qualified}: column(s) {', '.join(untyped)} have no type; cast the NULL")


def _write(
    frame: DataFrame, out_dir: Path, schema_name: str, table: str, *, append: bool = False
) -> DataFrame:
    """Write the frame as Parquet under out_dir/<schema>/<table>/ and register its view."""
    _check_typed(frame, f"{schema_name}.{table}")
    path = str(Path(out_dir).resolve() / schema_name / table)
    frame.write.mode("append" if append else "overwrite").parquet(path)
    stored = frame.sparkSession.read.parquet(path)
    stored.createOrReplaceTempView(view_name(schema_name, table))
    return stored


_ARROW_TYPES = {
    "STRING": "string",
    "BOOLEAN": "bool_",
    "INT": "int32",
    "BIGINT": "int64",
    "DOUBLE": "float64",
    "DATE": "date32",
}


def _local_frame(
    spark: SparkSession, rows: list[tuple], columns: list[tuple[str, str]]
) -> DataFrame:
    """A small DataFrame from Python rows, through Arrow (no Python worker), typed exactly."""
    import pyarrow as pa

    def arrow_type(spark_type: str) -> Any:
        if spark_type == "TIMESTAMP_NTZ":
            return pa.timestamp("us")
        return getattr(pa, _ARROW_TYPES[spark_type])()

    arrow_schema = pa.schema([(name, arrow_type(t)) for name, t in columns])
    table = pa.Table.from_pylist(
        [dict(zip(arrow_schema.names, r, strict=True)) for r in rows], arrow_schema
    )
    frame = spark.createDataFrame(table)
    return frame.selectExpr(*[f"CAST(`{name}` AS {t}) AS `{name}`" for name, t in columns])


def _from_duckdb(spark: SparkSession, con: duckdb.DuckDBPyConnection, qualified: str) -> DataFrame:
    """A small DuckDB table as a Spark DataFrame, with the same column types."""
    columns = [
        (name, SPARK_TYPES[str(t)])
        for name, t, *_ in con.execute(f"DESCRIBE {qualified}").fetchall()
    ]
    return _local_frame(spark, con.execute(f"SELECT * FROM {qualified}").fetchall(), columns)


def load_value_set_tables(spark: SparkSession) -> None:
    """meta.value_sets and the code-system tables, exactly as `load_value_sets` writes them."""
    with duckdb.connect() as con:
        load_value_sets(con)
        for table in META_TABLES:
            _from_duckdb(spark, con, f"meta.{table}").createOrReplaceTempView(
                view_name("meta", table)
            )


# ---------------------------------------------------------------- ingest


def _read_file(spark: SparkSession, f: ingest.SourceFile, rank: int) -> DataFrame:
    """One export file as canonical typed columns, with parse problems and raw text."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    fields = [StructField(f"c{i}", StringType()) for i in range(len(f.header))]
    text = F.concat_ws(",", *[F.coalesce(F.col(f"c{i}"), F.lit("")) for i in range(len(f.header))])
    frame = (
        spark.read.schema(StructType([*fields, StructField(CORRUPT, StringType())]))
        .options(header=True, enforceSchema=True, mode="PERMISSIVE")
        .options(columnNameOfCorruptRecord=CORRUPT, quote='"', escape='"', encoding="UTF-8")
        .options(multiLine=False)
        .csv(str(f.path.resolve()))
        .withColumns(_typed_columns(f))
    )
    return frame.select(
        *_canonical_names(f.table),
        F.lit(f.relative).alias("source_file"),
        F.lit(rank).alias("file_rank"),
        F.monotonically_increasing_id().alias("_row_id"),
        F.col("_metadata.file_block_start").alias("_block"),
        _parse_problems(f).alias("parse_problems"),
        F.coalesce(F.col(CORRUPT), text).alias("raw_line"),
    )


def _typed_columns(f: ingest.SourceFile) -> dict[str, Any]:
    """Each canonical column from its field, cast as DuckDB's reader casts it."""
    from pyspark.sql import functions as F

    columns = {}
    for column, pos in zip(schema.TABLES[f.table].columns, f.positions, strict=True):
        spark_type = SPARK_TYPES[column.type]
        if pos is None:
            columns[column.name] = F.lit(None).cast(spark_type)
        elif column.type == "VARCHAR":
            columns[column.name] = F.col(f"c{pos}")
        else:
            value = F.col(f"c{pos}")
            is_date = column.type in ingest.DATE_TYPES
            guard = value.rlike(DATETIME_PATTERN) if is_date else F.lit(True)
            columns[column.name] = F.when(guard, F.expr(f"try_cast(c{pos} AS {spark_type})"))
    return columns


def _parse_problems(f: ingest.SourceFile) -> Any:
    """Array of (column_name, reason) for a line DuckDB's reader would reject.

    Spark's CSV reader (every field a string) marks only lines with the wrong number of
    fields as corrupt, so those are `wrong_field_count`; it decodes bytes that are not
    UTF-8 as U+FFFD, so a loaded field holding one is `invalid_encoding`."""
    from pyspark.sql import functions as F

    def problem(column_name: Any, reason: str) -> Any:
        return F.struct(column_name.alias("column_name"), F.lit(reason).alias("reason"))

    checks = []
    for column, pos in zip(schema.TABLES[f.table].columns, f.positions, strict=True):
        if pos is None:
            continue
        field = F.col(f"c{pos}")
        if column.type == "VARCHAR":
            failed, reason = field.contains("\ufffd"), "invalid_encoding"
        else:
            failed = field.isNotNull() & F.col(column.name).isNull()
            is_date = column.type in ingest.DATE_TYPES
            reason = "unparseable_date" if is_date else "unparseable_value"
        checks.append(F.when(failed, problem(F.lit(column.name), reason)))
    malformed = F.array(problem(F.lit(None).cast("string"), "wrong_field_count"))
    found = F.filter(F.array(*checks), lambda x: x.isNotNull()) if checks else _no_problems()
    return F.when(F.col(CORRUPT).isNotNull(), malformed).otherwise(found)


def _no_problems() -> Any:
    from pyspark.sql import functions as F

    return F.array().cast("array<struct<column_name:string,reason:string>>")


def _with_line_numbers(spark: SparkSession, frame: DataFrame) -> DataFrame:
    """source_line: the 1-based line in its file (the header is line 1).

    Rows are numbered within each file split (`_metadata.file_block_start`) by
    monotonically_increasing_id; the splits' row counts (one small job) give the offsets.
    Exact unless the file has blank lines or records spanning lines (as in DuckDB's ingest)."""
    from pyspark.sql import functions as F

    blocks = frame.groupBy("source_file", "_block").agg(
        F.count("*").alias("n"), F.min("_row_id").alias("first_id")
    )
    offsets, rows_before = [], {}
    for source_file, block, n, first_id in sorted(blocks.collect()):
        offsets.append((source_file, block, first_id, rows_before.get(source_file, 0)))
        rows_before[source_file] = rows_before.get(source_file, 0) + n
    columns = [("source_file", "STRING"), ("_block", "BIGINT"), ("first_id", "BIGINT"),
               ("rows_before", "BIGINT")]  # fmt: skip
    line = F.col("_row_id") - F.col("first_id") + F.col("rows_before") + 2
    numbered = frame.join(
        F.broadcast(_local_frame(spark, offsets, columns)), ["source_file", "_block"]
    )
    return numbered.withColumn("source_line", line).drop(
        "_row_id", "_block", "first_id", "rows_before"
    )


def _parsed(
    spark: SparkSession, table: str, files: list[ingest.SourceFile]
) -> tuple[DataFrame, DataFrame | None]:
    """Every file of one table, typed, with source_line, `parse_problems` and `raw_line`;
    and the cached frame it reads (each file is parsed once), to unpersist when done."""
    if not files:
        empty = _empty(spark, table, [("file_rank", "INT"), ("raw_line", "STRING")])
        return empty.withColumn("parse_problems", _no_problems()), None
    frames = [_read_file(spark, f, rank) for rank, f in enumerate(files)]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    union = union.cache()
    return _with_line_numbers(spark, union), union


def _canonical_names(table: str) -> list[str]:
    return [c.name for c in schema.TABLES[table].columns]


def _empty(spark: SparkSession, table: str, extra: list[tuple[str, str]] = ()) -> DataFrame:
    columns = (*schema.TABLES[table].columns, *schema.LINEAGE_COLUMNS)
    return _local_frame(spark, [], [(c.name, SPARK_TYPES[c.type]) for c in columns] + list(extra))


def _row_problem(table: str, loaded: DataFrame) -> DataFrame:
    """`problem` and `problem_column`: the first whole-export check a row fails (as ingest)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    t = schema.TABLES[table]
    checks = []
    for c in t.columns:
        if c.required:
            blank = F.col(c.name).isNull()
            if c.type == "VARCHAR":
                blank = blank | (F.trim(F.col(c.name)) == "")
            checks.append((blank, "missing_value", c.name))
    if table == "patients":  # the first copy of a patient id (file order, then line) is kept
        incomplete = _any(cond for cond, _, _ in checks)
        order = Window.partitionBy("patient_id", incomplete).orderBy("file_rank", "source_line")
        checks.append((F.row_number().over(order) > 1, "duplicate_patient_id", "patient_id"))
    else:
        # an exact copy of an earlier line of the same file (raw_line is the whole line) is
        # quarantined, the first kept (as ingest/direct.py _mark_duplicate_lines)
        copies = Window.partitionBy("source_file", "raw_line").orderBy("source_line")
        checks.append((F.row_number().over(copies) > 1, "duplicate_record", None))
        checks.append((F.col("_known_patient").isNull(), "unknown_patient", t.patient_column))
    problem, column = F.lit(None).cast("string"), F.lit(None).cast("string")
    for cond, reason, name in reversed(checks):
        problem = F.when(cond, F.lit(reason)).otherwise(problem)
        column = F.when(cond, F.lit(name).cast("string")).otherwise(column)
    return loaded.withColumns({"problem": problem, "problem_column": column})


def _any(conditions: Iterable[Any]) -> Any:
    from pyspark.sql import functions as F

    result = F.lit(False)
    for cond in conditions:
        result = result | F.coalesce(cond, F.lit(False))
    return result


def _with_patient_check(spark: SparkSession, table: str, loaded: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    if table == "patients":
        return loaded
    patients = spark.table(view_name("raw", "patients")).select(
        F.col("patient_id").alias("_patient"), F.lit(True).alias("_known_patient")
    )
    key = loaded[schema.TABLES[table].patient_column]
    return loaded.join(patients.distinct(), key == F.col("_patient"), "left")


def _quarantine_rows(table: str, parsed: DataFrame, checked: DataFrame) -> DataFrame:
    """meta.quarantine rows of one table: lines that did not parse, rows that failed a check."""
    from pyspark.sql import functions as F

    as_text = F.concat_ws(
        ",", *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in _canonical_names(table)]
    )
    lineage = [F.lit(table).alias("table_name"), "source_file", "source_line"]
    row_problems = checked.where("problem IS NOT NULL").select(
        *lineage,
        F.col("problem_column").alias("column_name"),
        F.col("problem").alias("reason"),
        as_text.alias("raw_line"),
    )
    parse_problems = (
        parsed.where(F.size("parse_problems") > 0)
        .select(*lineage, F.explode("parse_problems").alias("p"), "raw_line")
        .select("table_name", "source_file", "source_line", "p.column_name", "p.reason", "raw_line")
    )
    return parse_problems.unionByName(row_problems)


def _ingest_table(
    spark: SparkSession, table: str, files: list[ingest.SourceFile], out_dir: Path
) -> tuple[DataFrame, DataFrame | None]:
    """Write raw.<table>; return its quarantine rows and the cached frame they read."""
    from pyspark.sql import functions as F

    parsed, cached = _parsed(spark, table, files)
    loaded = _with_patient_check(spark, table, parsed.where(F.size("parse_problems") == 0))
    checked = _row_problem(table, loaded)
    raw = checked.where("problem IS NULL")
    _write(
        raw.select(*_canonical_names(table), "source_file", "source_line"), out_dir, "raw", table
    )
    return _quarantine_rows(table, parsed, checked), cached


def ingest_to_spark(spark: SparkSession, source: Path, out_dir: Path) -> dict[str, int]:
    """Load the export into raw.* and meta.{quarantine,source_tables,ingest_manifest} (Parquet).

    Returns the rows loaded per table."""
    export = ingest.discover_export(Path(source))
    quarantine = None
    for table in schema.TABLES:  # patients first: the unknown-patient check reads raw.patients
        started = time.perf_counter()
        files = [f for f in export.files if f.table == table]
        rows, cached = _ingest_table(spark, table, files, out_dir)
        # written table by table, so only one table's parsed rows are cached at a time
        quarantine = _write(rows, out_dir, "meta", "quarantine", append=quarantine is not None)
        if cached is not None:
            cached.unpersist()
        log.info("spark raw.%-20s %6.2f s", table, time.perf_counter() - started)
    return _write_ingest_meta(spark, export, quarantine, out_dir)


def _write_ingest_meta(
    spark: SparkSession, export: ingest.Export, quarantine: DataFrame, out_dir: Path
) -> dict[str, int]:
    """meta.source_tables and meta.ingest_manifest, as the DuckDB ingest writes them."""
    from pyspark.sql import functions as F

    per_file = [
        spark.table(view_name("raw", t)).groupBy("source_file").count().withColumn("t", F.lit(t))
        for t in schema.TABLES
    ]
    union = per_file[0]
    for frame in per_file[1:]:
        union = union.unionByName(frame)
    loaded = {(t, f): n for f, n, t in union.collect()}
    lines = quarantine.select("source_file", "source_line").distinct()
    bad = dict(lines.groupBy("source_file").count().collect())
    counts = {t: sum(n for (table, _), n in loaded.items() if table == t) for t in schema.TABLES}
    source_tables = [
        (t, schema.TABLES[t].required, t in export.tables_present(),
         sum(f.table == t for f in export.files), counts[t], ingest.table_note(export, t))
        for t in schema.TABLES
    ]  # fmt: skip
    columns = [("table_name", "STRING"), ("is_required", "BOOLEAN"), ("is_present", "BOOLEAN"),
               ("n_files", "INT"), ("n_rows", "BIGINT"), ("note", "STRING")]  # fmt: skip
    _write(_local_frame(spark, source_tables, columns), out_dir, "meta", "source_tables")
    # OMOP observation periods: none in a Synthea CSV export (OMOP is read by its DuckDB
    # source adapter, engine.ingest_with_adapter)
    columns = [("patient_id", "STRING"), ("start_date", "DATE"), ("end_date", "DATE"),
               ("source_file", "STRING"), ("source_line", "BIGINT")]  # fmt: skip
    _write(_local_frame(spark, [], columns), out_dir, "meta", "observation_periods")
    digests = ingest.digest_files(export.files)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    manifest = [
        (f.table, f.relative, digests[f.relative].size_bytes, digests[f.relative].sha256,
         loaded.get((f.table, f.relative), 0), bad.get(f.relative, 0), now)
        for f in export.files
    ]  # fmt: skip
    columns = [("table_name", "STRING"), ("file_path", "STRING"), ("size_bytes", "BIGINT"),
               ("sha256", "STRING"), ("row_count", "BIGINT"), ("rows_quarantined", "BIGINT"),
               ("loaded_at", "TIMESTAMP_NTZ")]  # fmt: skip
    _write(_local_frame(spark, manifest, columns), out_dir, "meta", "ingest_manifest")
    return counts


# ---------------------------------------------------------------- models


def build_models_on_spark(
    spark: SparkSession,
    settings: StudySettings,
    out_dir: Path,
    *,
    reuse: tuple[Path, StudySettings] | None = None,
) -> dict[str, Path]:
    """Build every model in the runner's order, each written as Parquet and read back.

    Writing each model (rather than chaining temp views) keeps every Spark plan one model
    deep: analysing a chain of 30 views costs minutes. Returns qualified name -> folder.

    With `reuse=(folder, base_settings)`, a model whose SQL and parameter values (its own and
    those up its dependency chain) are the same under `settings` as under `base_settings`
    is not built again: its view reads the Parquet already written under `folder` (a build
    of the same inputs with `base_settings`), and the returned folder is that one. Only the
    models downstream of a changed parameter are computed, as in `build_models`."""
    values = parameter_values(settings)
    models = model_graph()
    same: set[str] = set()
    if reuse is not None:
        mine = model_signatures(models, values)
        theirs = model_signatures(models, parameter_values(reuse[1]))
        same = {name for name, signature in mine.items() if theirs[name] == signature}
    written = {}
    for model in models:
        if model.qualified_name in same:
            folder = Path(reuse[0]) / model.schema / model.name
            _register(spark, folder, model.schema, model.name)
            written[model.qualified_name] = folder
            continue
        started = time.perf_counter()
        try:
            _write(spark.sql(to_spark_sql(model, values)), out_dir, model.schema, model.name)
        except ModelError:
            raise
        except Exception as exc:  # AnalysisException and friends, with the model named
            raise ModelError(f"{model.path} (on Spark): {_first_line(exc)}") from exc
        written[model.qualified_name] = Path(out_dir) / model.schema / model.name
        log.info("spark %-50s %6.2f s", model.qualified_name, time.perf_counter() - started)
    return written


def _register(spark: SparkSession, folder: Path, schema_name: str, table: str) -> None:
    if not folder.is_dir():
        raise ModelError(f"{schema_name}.{table}: no Parquet output at {folder}")
    spark.read.parquet(str(folder.resolve())).createOrReplaceTempView(view_name(schema_name, table))


def register_tables(spark: SparkSession, out_dir: Path, schemas: Iterable[str]) -> list[str]:
    """Register every Parquet table under out_dir/<schema>/ as its temp view (for a session
    that did not write them); returns the qualified names."""
    names = []
    for schema_name in schemas:
        for folder in sorted((Path(out_dir) / schema_name).iterdir()):
            if folder.is_dir():
                _register(spark, folder, schema_name, folder.name)
                names.append(f"{schema_name}.{folder.name}")
    return names


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def run_models_on_spark(
    source: Path,
    out_dir: Path,
    settings: StudySettings,
    master: str = DEFAULT_MASTER,
    *,
    spark: SparkSession | None = None,
) -> dict[str, Path]:
    """Ingest the export and build every model on Spark; returns mart table -> Parquet folder.

    Every table is written under out_dir/<schema>/<table>/ (raw, meta, staging,
    intermediate, mart). Pass `spark` to reuse a session (`master` is then ignored)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spark = spark or spark_session(master)
    started = time.perf_counter()
    ingest_to_spark(spark, Path(source), out_dir)
    load_value_set_tables(spark)
    written = build_models_on_spark(spark, settings, out_dir)
    log.info("spark engine: %d tables in %.1f s", len(written), time.perf_counter() - started)
    return {q.split(".", 1)[1]: path for q, path in written.items() if q.startswith("mart.")}


# ---------------------------------------------------------------- back to DuckDB


def parquet_glob(folder: Path) -> str:
    return str(Path(folder) / "*.parquet").replace("'", "''")


def load_into_duckdb(
    con: duckdb.DuckDBPyConnection,
    tables: dict[str, Path],
    schema_name: str = "mart",
    *,
    as_views: bool = False,
) -> None:
    """Create `<schema>.<table>` in DuckDB from the Spark engine's Parquet folders: tables
    (a copy), or with `as_views` views reading the Parquet files where they are."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_name}")
    for table, folder in tables.items():
        kind = "VIEW" if as_views else "TABLE"
        con.execute(
            f'CREATE OR REPLACE {kind} {schema_name}."{table}" AS'
            f" SELECT * FROM read_parquet('{parquet_glob(Path(folder).resolve())}')"
        )
