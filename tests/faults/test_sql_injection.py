"""No SQL built from strings that carry paths or user values (issue 11, item 5).

Two guards: a scan of the source for f-string SQL whose interpolated parts are not on an
explicit list of internal identifiers, and a property test that feeds quotes, semicolons,
newlines and `'; CREATE TABLE pwned(x INT); --` through every path and config value the
pipeline takes, asserting that no table `pwned` appears and that the outcome is success or
a clear error.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.errors import UserFacingError
from pipelines.export import export_release
from pipelines.generator import generate
from pipelines.ingest import ingest_export
from pipelines.settings import SettingsError, load_settings
from pipelines.warehouse import connect

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
PAYLOAD = "'; CREATE TABLE pwned(x INT); --"

# ------------------------------------------------------------------ the source scan

# What may be interpolated into SQL text, and why it is safe. Anything else in an f-string
# that looks like SQL fails the scan: bind it as a parameter (`?`, `$name`) or quote it.
INTERNAL_NAMES = {
    # schema, table and column names from the code (schema.py, SCHEMAS, the model files)
    # or DuckDB's own catalogue, never from input
    "table", "t", "name", "old", "schema", "schema_name", "source_schema", "build",
    "manifest_schema", "suffix", "schema_suffix", "reuse_suffix", "target", "held",
    "qualified", "duckdb_table", "view", "kind", "column", "columns", "cols", "c", "k", "v",
    "pos", "RAW_SCHEMA", "META_SCHEMA", "offsets_table", "rank", "names", "qualified_name",
    # SQL fragments the code assembles from the above and from constants
    "select", "read", "struct", "dates", "reasons", "reason", "cond", "r", "line", "source",
    "left", "right", "rows_from", "orphans", "arrived", "checked", "new", "new_rows",
    "patient", "_OFFSETS_SQL",
    # hashes and a constant prefix (model signatures in COMMENT ON)
    "signature", "_SIGNATURE_PREFIX",
    # input contracts (contracts.py): SQL checks assembled from data_contracts/*.json, which
    # ship with the code; values the check reports are bound ($detail, $min_date)
    "profile", "issues", "detail", "where", "sql",
    # source adapters and the generator's converters (sources/*.py, generator/convert.py):
    # SQL fragments assembled from each module's mapping constants; file paths and every
    # value read from the export are bound parameters or data in the read tables
    "text", "typed", "fields", "temp", "concept", "code", "coded", "system_sql",
    "select_sql", "relation", "visit", "genders", "gender", "birth", "death",
    "_OFFSET", "_SNOMED_SYSTEMS", "UNMAPPED", "LOCAL_CONCEPTS",
    # generator/convert.py: the union of its own CODED selects, their column list and a
    # constant FHIR URL literal
    "union", "CODED_COLUMNS", "url_sql",
    "_AS_COMPONENT",  # sources/fhir.py: a struct_pack of fhir.py's own STRUCTURE field names
    # ingest/ (parse.py, checks.py, direct.py): the staging table's name, read options and SQL built from schema.py and the
    # unit rules' column names (the checks' reasons are the code's own words); passed: a
    # constant anti-join of the staged rows with the failed ones (direct.py)
    "STAGE", "passed", "loaded", "numbered", "parallel", "rows", "bad_lines", "_RULE_CODE", "_RULE_KEY",
    # ingest/append.py: a UNION of hashes of schema.py's columns over raw and held
    "old_rows",
    # dashboard/data.py: the one schema it reads
    "SCHEMA",
    # flags.py: evidence model names from valuesets/flags.csv, checked plain identifiers
    "model",
    # sources/accounting.py, common.py, omop.py: SQL fragments each adapter builds from its
    # own mapping constants (the rows' values stay data in the read tables)
    "extra_sql", "typed_rows", "start", "end",
    # sources/omop.py: SQL expressions over the landed CDM tables' columns (_Columns), each
    # built from internal column names; the values read stay data
    "at", "day", "day_bad", "on_day", "std_id", "src_id", "source_value", "bad", "number",
    "col", "start_bad", "end_bad",
    # contracts_sql.py: aggregates over quoted column names from the catalog, the suites'
    # comparison operator and their SQL expectations (files shipped with the code, as run by
    # GX); every value (dates, sets, bounds) is a bound parameter ($p0, ...)
    "a", "b", "op", "both", "any_null", "group", "allowed_values", "q",
}  # fmt: skip
INTERNAL_ATTRIBUTES = {"model.schema", "model.name", "c.name", "t.patient_column", "scan.table"}
# Constant mapping tables indexed by an internal name (sources/fhir.py, generator/convert.py)
INTERNAL_SUBSCRIPTS = {"MAPPINGS", "FHIR_SYSTEM", "check"}  # check: a (condition, reason, column)
# Calls whose result is quoted for SQL or is SQL the code builds from internal names.
SAFE_CALLS = {
    "_quote", "quote_identifier", "_schema", "render_sql", "int",
    "parquet_glob",  # a path inside a SQL string literal, with ' doubled (engines/spark/execution.py)
    "_name",  # contracts.py: a quoted schema.table
    "plain_name",  # warehouse.py: a name checked to be a plain lowercase identifier
    # source adapters and converters: SQL expressions over internal column names
    "_ref", "c.id", "c.text", "c.day_time", "c.line", "_concept", "_types", "_iso", "_system",
    "_first_code", "_codings", "_with_reason", "records.format", "', '.join",
    "_records",  # generator/convert.py: joins of its own CODED selects and temp tables
    "_us_core_text",  # sources/fhir.py: a list_filter over struct fields, constant URL suffixes
    "_REF.format",  # sources/fhir.py: the reference regular expression over a struct field
    # ingest/: a quoted table name, CASE expressions and sources built from schema.py checks
    # (checks.py), a row's loaded fields as text, a target table name
    "quote", "held_table", "as_text", "_read_csv_sql", "_parsed_rows_sql", "case_sql",
    "checked_source", "_create_or_replace", "target.removeprefix",
    "_identifier",  # dashboard/data.py: a catalog-listed table name, quoted
    "common.typed_sql", "' UNION ALL '.join",  # sources: casts and unions of the above
    # table_docs.py: COMMENT ON takes no parameters; its quoting helpers are unit-tested
    # against hostile text (tests/integration/test_table_docs.py)
    "sql_literal", "sql_identifier",
}  # fmt: skip
SQL_START = re.compile(
    r"^\s*(select|insert|create|drop|delete|update|copy|set|alter|comment|with|describe|"
    r"attach|pragma|install|load)\s",
    re.I,
)
SQL_WORDS = re.compile(r"\b(FROM|INTO|TABLE|SCHEMA|VIEW|SELECT|WHERE|THEN)\b|read_\w+\(")


def _looks_like_sql(node: ast.JoinedStr) -> bool:
    text = "".join(
        v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
    )
    return bool(SQL_START.search(text) or SQL_WORDS.search(text))


def _safe(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Name):
        return expr.id in INTERNAL_NAMES
    if isinstance(expr, ast.Attribute):
        return ast.unparse(expr) in INTERNAL_ATTRIBUTES
    if isinstance(expr, ast.Subscript):
        return isinstance(expr.value, ast.Name) and expr.value.id in INTERNAL_SUBSCRIPTS
    if isinstance(expr, ast.Call) and ast.unparse(expr.func) == "repr":
        return all(_safe(a) for a in expr.args)  # repr of an internal string
    if isinstance(expr, ast.Call):
        func = expr.func.id if isinstance(expr.func, ast.Name) else ast.unparse(expr.func)
        if isinstance(expr.func, ast.Attribute) and func.endswith(".replace"):
            return _safe(expr.func.value)  # `_ref(...).replace('r->>', 'f.r->>')`
        return func in SAFE_CALLS
    if isinstance(expr, ast.IfExp):  # `'NULL' if check[1] is None else repr(check[1])`
        return all(isinstance(p, ast.Constant) or _safe(p) for p in (expr.body, expr.orelse))
    if isinstance(expr, ast.BoolOp | ast.BinOp):  # `a or 'raw.' + b`: every part safe
        parts = expr.values if isinstance(expr, ast.BoolOp) else [expr.left, expr.right]
        return all(isinstance(p, ast.Constant) or _safe(p) for p in parts)
    return False


def unsafe_interpolations(source: str, file_name: str) -> list[str]:
    """`file:line: expr` for each interpolation into SQL-looking f-strings not known safe.
    F-strings inside `raise` statements are messages, not SQL."""
    tree = ast.parse(source)
    in_raise = {id(n) for r in ast.walk(tree) if isinstance(r, ast.Raise) for n in ast.walk(r)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in in_raise and _looks_like_sql(node):
            for value in node.values:
                if isinstance(value, ast.FormattedValue) and not _safe(value.value):
                    found.append(f"{file_name}:{node.lineno}: {ast.unparse(value.value)}")
    return found


def test_no_sql_f_string_interpolates_anything_but_internal_names():
    found = []
    for path in sorted(PIPELINES.rglob("*.py")):
        found += unsafe_interpolations(path.read_text(encoding="utf-8"), path.name)
    assert not found, "SQL built from values that may carry input:\n" + "\n".join(found)


def test_the_scan_catches_the_old_temp_directory_injection():
    old = "def connect(con, tmp):\n    con.execute(f\"SET temp_directory = '{tmp}'\")\n"
    assert unsafe_interpolations(old, "warehouse.py") == ["warehouse.py:2: tmp"]
    assert unsafe_interpolations(
        "con.execute(f\"COPY t TO '{_sql_string(path)}'\")", "export.py"
    ) == ["export.py:1: _sql_string(path)"]
    assert unsafe_interpolations('raise E(f"{path}: a model must be one SELECT")', "m.py") == []


# ------------------------------------------------------------------ the property test

# Characters that end or break a SQL string or statement; no `/` (a path separator) or NUL.
HOSTILE = st.text(alphabet="'\";\n\r\\-* $?aZ()", min_size=1, max_size=24) | st.sampled_from(
    [PAYLOAD, "x'y", "a\nb", '"; DROP SCHEMA raw CASCADE; --', "$1?"]
)


def pwned_tables(warehouse: Path) -> int:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE lower(table_name) LIKE '%pwned%'"
        ).fetchone()[0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inject") / "export"
    generate(out, patients=30, seed=5)
    return out


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(name=PAYLOAD)
@example(name="?")
@example(name="a\\b")
@given(name=HOSTILE)
def test_hostile_paths_run_no_sql(tiny_export, tmp_path, name):
    """Warehouse folder and file, export folder and Parquet folder all carry `name`."""
    base = tmp_path / f"case{abs(hash(name))}"
    if base.exists():
        shutil.rmtree(base)
    folder = base / f"w{name}"
    warehouse = folder / f"{name}.duckdb"
    source = shutil.copytree(tiny_export, base / f"src{name}")

    try:
        summary = ingest_export(source, warehouse, log=lambda _: None)
    except UserFacingError as exc:  # a clear error: only for what DuckDB cannot open
        assert set("?\\") & set(name), exc
        assert "choose another path" in str(exc)
        assert not warehouse.exists()
        return
    assert summary.table_rows["patients"] == 30
    con = connect(warehouse)
    con.execute("CREATE TABLE release.t AS SELECT 1 AS n")
    con.close()
    written = export_release(warehouse, base / f"parquet{name}")
    assert [p.name for p in written] == ["t.parquet", "t.csv", "manifest.json"]
    assert pwned_tables(warehouse) == 0


VALUE_KEYS = ["sexes", "sensitivity_analyses", "study_start_date", "washout_days", "min_cell"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(name=PAYLOAD, key="sensitivity_analyses", value=PAYLOAD)
@given(name=HOSTILE, key=st.sampled_from(VALUE_KEYS), value=HOSTILE)
def test_hostile_config_paths_and_values_are_a_clear_error(tmp_path_factory, name, key, value):
    """A config file whose path and values carry `name`/`value`: loaded or SettingsError."""
    folder = tmp_path_factory.mktemp("cfg") / f"c{name}"
    folder.mkdir()
    cfg = folder / f"{name}.toml"
    quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    quoted = quoted.replace("\r", "\\r")
    text = f'{key} = ["{quoted}"]\n' if key in ("sexes", "sensitivity_analyses") else ""
    text = text or f'{key} = "{quoted}"\n'
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError):  # none of these strings is a valid value
        load_settings(cfg)
    with pytest.raises(UserFacingError, match="config file not found"):
        load_settings(folder / f"missing{name}.toml")


def test_a_whole_run_with_hostile_paths_everywhere(tiny_export, tmp_path):
    """The study itself (no Prefect): warehouse, export, report and Parquet folder."""
    from pipelines.study import run_study

    base = tmp_path / f"x{PAYLOAD}"
    source = shutil.copytree(tiny_export, base / f"src{PAYLOAD}")
    cfg = base / f"cfg{PAYLOAD}.toml"
    cfg.write_text("sensitivity_analyses = []\n")
    warehouse = base / f"w{PAYLOAD}.duckdb"
    result = run_study(
        source,
        warehouse,
        load_settings(cfg),
        report=base / f"r{PAYLOAD}.html",
        parquet_dir=base / f"p{PAYLOAD}",
        say=lambda _: None,
    )
    assert result.status == "succeeded"
    assert (base / f"r{PAYLOAD}.html").exists() and (
        base / f"p{PAYLOAD}" / "manifest.json"
    ).exists()
    assert pwned_tables(warehouse) == 0
