"""The one SQL runner: builds every model in `sql/**/*.sql` as a table, in dependency order.

A model is one SELECT in one file; the file name is the table name and its folder the
layer (`sql/staging/x.sql` -> `staging.x`, `sql/intermediate/x.sql` -> `intermediate.x`,
`sql/marts/x.sql` -> `mart.x`). The build order is derived from the tables each file
reads (parsed with sqlglot), never kept by hand. Models may read `raw.*` and `meta.*`
(written by ingest and by `load_value_sets`) and other models; anything else is an error.

Study parameters are DuckDB named parameters (`$washout_days`); each model is bound
with exactly the parameters it uses, since DuckDB rejects unused ones.

Staging models without parameters are built as views (`VIEW_LAYERS`): they only rename,
normalise codes and join the small code-system tables, so storing them would copy every
raw row once more; the intermediate models read them straight from `raw.*`.

Every model built carries a signature (its SQL, its parameter values and those of everything
upstream, and a fingerprint of its inputs) as the table's comment. A build given
`reuse_suffix` (e.g. a sensitivity variant beside the primary `__build`) builds only the
models whose signature differs from the one already built under that suffix; the others
become views on the built tables, so the variant's schemas read like a full rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from pipelines import schema
from pipelines.errors import ModelError
from pipelines.settings import StudySettings
from pipelines.valuesets import load_value_sets

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
LAYERS = {"staging": "staging", "intermediate": "intermediate", "marts": "mart"}  # folder -> schema
MODEL_SCHEMAS = tuple(LAYERS.values())
INGESTED = frozenset(
    [f"raw.{t}" for t in schema.TABLES] + ["meta.source_tables", "meta.observation_periods"]
)  # written by ingest
VALUE_SET_TABLES = frozenset(
    f"meta.{t}"
    for t in ("value_sets", "unit_conversions", "code_system_aliases", "code_system_defaults")
)
SOURCES = INGESTED | VALUE_SET_TABLES
# Layers whose models (when they take no parameters) are views rather than tables.
VIEW_LAYERS = frozenset({"staging"})
_SIGNATURE_PREFIX = "redflags-model:"


@dataclass(frozen=True)
class Model:
    """One SQL model: where it lives, what it reads, which parameters it takes."""

    schema: str
    name: str
    path: Path
    sql: str
    depends_on: tuple[str, ...]  # qualified names of the models it reads
    sources: tuple[str, ...]  # qualified raw/meta tables it reads
    parameters: tuple[str, ...]  # named parameters it uses, without the $

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_view(self) -> bool:
        """Built as a view (a parameter-free staging model), not as a table."""
        return self.schema in VIEW_LAYERS and not self.parameters


def _parse(path: Path, sql: str) -> exp.Expression:
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise ModelError(f"{path}: not valid SQL: {exc}") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ModelError(f"{path}: a model must be exactly one SELECT")
    return statements[0]


def _references(path: Path, tree: exp.Expression) -> set[str]:
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    refs = set()
    for table in tree.find_all(exp.Table):
        if not table.db:
            if table.name not in ctes:
                raise ModelError(
                    f"{path}: table {table.name!r} must be schema-qualified (e.g. staging.{table.name})"
                )
            continue
        refs.add(f"{table.db}.{table.name}")
    return refs


_parsed: dict[tuple[Path, str], Model] = {}  # parsing all models takes ~0.4 s; files rarely change


def _load_model(path: Path, layer: str) -> Model:
    sql = path.read_text(encoding="utf-8")
    if (path, sql) in _parsed:
        return _parsed[path, sql]
    tree = _parse(path, sql)
    refs = _references(path, tree)
    params = sorted({p.name for p in tree.find_all(exp.Placeholder) if p.name})
    model = _parsed[path, sql] = Model(
        schema=LAYERS[layer],
        name=path.stem,
        path=path,
        sql=sql,
        depends_on=tuple(sorted(r for r in refs if r.split(".")[0] in MODEL_SCHEMAS)),
        sources=tuple(sorted(r for r in refs if r.split(".")[0] not in MODEL_SCHEMAS)),
        parameters=tuple(params),
    )
    return model


def discover_models(sql_dir: Path = SQL_DIR) -> list[Model]:
    """Every model under sql_dir, in file-name order (not build order)."""
    models = []
    for layer in LAYERS:
        models += [_load_model(p, layer) for p in sorted((sql_dir / layer).glob("*.sql"))]
    stray = sorted(set(sql_dir.rglob("*.sql")) - {m.path for m in models})
    if stray:
        raise ModelError(f"SQL files outside {', '.join(LAYERS)}/: {', '.join(map(str, stray))}")
    return models


def _check_references(models: list[Model]) -> None:
    names = {m.qualified_name for m in models}
    for m in models:
        for ref in m.depends_on:
            if ref not in names:
                raise ModelError(f"{m.path}: reads {ref}, which no model in sql/ builds")
        for ref in m.sources:
            if ref not in SOURCES:
                known = ", ".join(sorted(s for s in SOURCES if s.startswith("meta.")))
                raise ModelError(
                    f"{m.path}: reads unknown table {ref} (sources: raw.<table>, {known})"
                )


def _find_cycle(remaining: dict[str, Model]) -> list[str]:
    """A dependency cycle among models that could not be ordered."""
    node = min(remaining)
    path: list[str] = []
    while node not in path:
        path.append(node)
        node = min(d for d in remaining[node].depends_on if d in remaining)
    return path[path.index(node) :] + [node]


def model_graph(sql_dir: Path = SQL_DIR) -> list[Model]:
    """All models in build order (a deterministic topological sort of what each file reads)."""
    models = discover_models(sql_dir)
    _check_references(models)
    layer_rank = {s: i for i, s in enumerate(MODEL_SCHEMAS)}
    remaining = {m.qualified_name: m for m in models}
    ordered: list[Model] = []
    while remaining:
        ready = [m for m in remaining.values() if not any(d in remaining for d in m.depends_on)]
        if not ready:
            raise ModelError(
                "dependency cycle between models: " + " -> ".join(_find_cycle(remaining))
            )
        ready.sort(key=lambda m: (layer_rank[m.schema], m.name))
        ordered.append(ready[0])
        del remaining[ready[0].qualified_name]
    return ordered


def parameter_values(settings: StudySettings) -> dict[str, Any]:
    """Every parameter a model may bind: the scalar settings, plus list settings as lists."""
    values = settings.sql_parameters()
    values.update({k: list(v) for k, v in settings.as_dict().items() if isinstance(v, list)})
    return values


def render_sql(model: Model, *, schema_suffix: str = "", dialect: str = "duckdb") -> str:
    """The model's SELECT, with model schemas renamed `<schema><suffix>`, in a SQL dialect."""
    if not schema_suffix and dialect == "duckdb":
        return model.sql
    tree = _parse(model.path, model.sql).copy()
    for table in tree.find_all(exp.Table):
        if table.db in MODEL_SCHEMAS:
            table.set("db", exp.to_identifier(table.db + schema_suffix))
    return tree.sql(dialect=dialect, pretty=True)


def _check_inputs(con: duckdb.DuckDBPyConnection) -> None:
    present = {
        f"{s}.{t}"
        for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('raw', 'meta')"
        ).fetchall()
    }
    if "meta.observation_periods" not in present and "raw.patients" in present:
        # OMOP's observation periods (pipelines/sources/omop.py): a warehouse ingested before
        # they were kept, or one built without an ingest, has none (observation then ends at
        # the last encounter, as for Synthea CSV)
        from pipelines.ingest import OBSERVATION_PERIODS_DDL

        con.execute("CREATE SCHEMA IF NOT EXISTS meta")
        con.execute(OBSERVATION_PERIODS_DDL)
        present.add("meta.observation_periods")
    missing = sorted(INGESTED - present)
    if missing:
        raise ModelError(f"the warehouse lacks {', '.join(missing)}: ingest the export first")


def build_model(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    values: dict[str, Any],
    schema_suffix: str = "",
    *,
    signature: str | None = None,
) -> str:
    """Build one model as a table (or, for `model.is_view`, a view); returns its qualified name.

    `signature`, when given, is stored as the table's comment (see `build_models`)."""
    target = f"{model.schema}{schema_suffix}.{model.name}"
    unknown = [p for p in model.parameters if p not in values]
    if unknown:
        raise ModelError(
            f"{model.path}: unknown parameter(s) {', '.join('$' + p for p in unknown)}"
        )
    params = {p: values[p] for p in model.parameters}
    kind = "VIEW" if model.is_view else "TABLE"
    started = time.perf_counter()
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {model.schema}{schema_suffix}")
        _drop_relation(con, model.schema + schema_suffix, model.name)
        con.execute(
            f"CREATE {kind} {target} AS\n{render_sql(model, schema_suffix=schema_suffix)}",
            params,
        )
        if signature:
            con.execute(f"COMMENT ON {kind} {target} IS '{_SIGNATURE_PREFIX}{signature}'")
        rows = (
            None if model.is_view else con.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
        )
    except duckdb.Error as exc:
        raise ModelError(f"{model.path}: {exc}") from exc
    shown = "view" if rows is None else f"{rows} rows"
    log.info("built %-50s %14s %7.2f s", target, shown, time.perf_counter() - started)
    return target


def _drop_relation(con: duckdb.DuckDBPyConnection, schema_name: str, name: str) -> None:
    """Drop the table or view `schema_name.name` if it exists (a model may change kind)."""
    for kind in _relation_kinds(con, schema_name, name):
        con.execute(f'DROP {kind} "{schema_name}"."{name}"')


def _relation_kinds(con: duckdb.DuckDBPyConnection, schema_name: str, name: str) -> list[str]:
    return [
        "VIEW" if table_type == "VIEW" else "TABLE"
        for (table_type,) in con.execute(
            "SELECT table_type FROM information_schema.tables"
            " WHERE table_schema = ? AND table_name = ?",
            [schema_name, name],
        ).fetchall()
    ]


def _stored_signature(con: duckdb.DuckDBPyConnection, schema_name: str, name: str) -> str | None:
    """The signature a model built under `schema_name` carries, or None."""
    row = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE schema_name = $s AND table_name = $n"
        " UNION ALL SELECT comment FROM duckdb_views() WHERE schema_name = $s AND view_name = $n",
        {"s": schema_name, "n": name},
    ).fetchone()
    if not row or not row[0] or not row[0].startswith(_SIGNATURE_PREFIX):
        return None
    return row[0][len(_SIGNATURE_PREFIX) :]


def _inputs_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """Cheap fingerprint of what the models read: the ingest manifest (file digests), the row
    count of every raw table, meta.source_tables and the value-set and code-system tables."""
    present = {
        f"{s}.{t}"
        for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('raw', 'meta')"
        ).fetchall()
    }
    parts = []
    for table in sorted((SOURCES | {"meta.ingest_manifest"}) & present):
        if table.startswith("raw."):
            parts.append([table, con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]])
        else:
            digest = con.execute(
                f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {table} AS t"
            ).fetchone()
            parts.append([table, *map(str, digest)])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def model_signatures(
    models: list[Model], values: dict[str, Any], inputs: str = ""
) -> dict[str, str]:
    """Each model's signature: a hash of its SQL, its parameter values, its upstream models'
    signatures and the inputs' fingerprint. Equal signatures mean equal tables."""
    signatures: dict[str, str] = {}
    for m in models:  # build order: dependencies first
        text = json.dumps(
            [
                m.sql,
                m.is_view,
                {p: values[p] for p in m.parameters if p in values},
                [signatures[d] for d in m.depends_on],
                inputs,
            ],
            default=str,
        )
        signatures[m.qualified_name] = hashlib.sha256(text.encode()).hexdigest()[:32]
    return signatures


def build_models(
    con: duckdb.DuckDBPyConnection,
    settings: StudySettings,
    *,
    schema_suffix: str = "",
    sql_dir: Path = SQL_DIR,
    reuse_suffix: str | None = None,
) -> list[str]:
    """Load the value sets, then build every model in order; returns the tables built.

    A non-empty schema_suffix builds into `<schema><suffix>` (e.g. `mart__next`), so a run
    can be built beside the published one and swapped in, or run with other settings.

    With `reuse_suffix` (another build's suffix, e.g. `__build`), a model whose signature
    equals that of the model already built there (same SQL, same parameter values up its
    whole dependency chain, same inputs) is not rebuilt: `<schema><suffix>.<model>` becomes
    a view on `<schema><reuse_suffix>.<model>`. Only models downstream of a changed
    parameter are computed again; the tables read the same as those of a full rebuild.
    """
    for suffix in (schema_suffix, reuse_suffix or ""):
        if suffix and not suffix.replace("_", "").isalnum():
            raise ModelError(
                f"schema_suffix must be letters, digits and underscores, got {suffix!r}"
            )
    if reuse_suffix is not None and reuse_suffix == schema_suffix:
        raise ModelError("reuse_suffix must differ from schema_suffix")
    models = model_graph(sql_dir)
    _check_inputs(con)
    load_value_sets(con)
    values = parameter_values(settings)
    signatures = model_signatures(models, values, _inputs_fingerprint(con))
    built = []
    reused = 0
    for m in models:
        signature = signatures[m.qualified_name]
        if reuse_suffix is not None and (
            _stored_signature(con, m.schema + reuse_suffix, m.name) == signature
        ):
            built.append(_reuse_model(con, m, schema_suffix, reuse_suffix, signature))
            reused += 1
        else:
            built.append(build_model(con, m, values, schema_suffix, signature=signature))
    if reuse_suffix is not None:
        log.info("%d of %d models reused from the %s build", reused, len(models), reuse_suffix)
    return built


def _reuse_model(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    schema_suffix: str,
    reuse_suffix: str,
    signature: str,
) -> str:
    """`<schema><suffix>.<model>` as a view on the identical model of another build."""
    target = f"{model.schema}{schema_suffix}.{model.name}"
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {model.schema}{schema_suffix}")
    _drop_relation(con, model.schema + schema_suffix, model.name)
    con.execute(f"CREATE VIEW {target} AS SELECT * FROM {model.schema}{reuse_suffix}.{model.name}")
    con.execute(f"COMMENT ON VIEW {target} IS '{_SIGNATURE_PREFIX}{signature}'")
    log.info("reused %-49s from %s", target, model.schema + reuse_suffix)
    return target
