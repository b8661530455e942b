"""Run history (issue 15 item 2): the headline figures of every successful run, kept across
runs, and the rule that makes consecutive releases safe together (PROTOCOL.md section 7:
no small count worked out from earlier runs).

- `meta.release_history` holds one row per published run. It is appended inside the publish
  transaction (`append`, called by `study.step_publish`), so a failed run adds nothing and
  the earlier rows never change. `release.run_history` is republished from it in the same
  transaction (the publish swap replaces the other release tables; this one is rebuilt
  from the kept rows).
- Every figure is read from the run's own, already disclosed release tables, so a value
  hidden in the run is hidden in its history row too.
- Overlapping releases: growing exports are nested populations, so a headline count of run
  k minus the same count of an earlier run is a count of the episodes added in between.
  `with_overlap` adds each small difference (1..min_cell-1) to the disclosure layer as a
  sensitive virtual cell linked to the count; complementary suppression then hides the
  count in this run's release tables (and whatever would reveal it), and the history row
  copies that. Method and limits: docs/statistics.md section 7.1.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from pipelines.settings import StudySettings
from pipelines.stats import coarsen
from pipelines.stats.disclosure import Group, Linkage, TableSpec, is_small, row_labels
from pipelines.stats.release_tables import release_specs
from pipelines.warehouse import quote_identifier

HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS meta.release_history (
    run_id VARCHAR PRIMARY KEY,
    finished_at TIMESTAMP,
    extract_date DATE,
    input_sha256 VARCHAR,
    source_format VARCHAR,
    min_cell INTEGER,
    figures JSON,         -- released value and status of every history figure
    released_counts JSON  -- exact value of every tracked count the run released (internal)
)
"""
SHOWN = ("shown", "rounded")
PRIMARY_RULES = ("any_seed_flag", "two_or_more_seed_flags")  # PROTOCOL 6.2's primary rules


@dataclass(frozen=True)
class Location:
    """One released cell: the row of `table` where each `where` column has its value."""

    table: str
    where: tuple[tuple[str, str], ...]
    column: str

    @property
    def key(self) -> str:
        where = ",".join(f"{k}={v}" for k, v in self.where)
        return f"{self.table}|{where}|{self.column}"

    def rows(self, frame: pd.DataFrame) -> np.ndarray:
        if frame.empty or self.column not in frame or any(k not in frame for k, _ in self.where):
            return np.array([], dtype=int)
        hit = np.ones(len(frame), dtype=bool)
        for k, v in self.where:
            hit &= (frame[k].astype(str) == v).to_numpy()
        return np.flatnonzero(hit)


def _at(table: str, column: str, **where: str) -> Location:
    return Location(table, tuple(where.items()), column)


ATTRITION_COHORT = "no_prevalent_bone_metastasis"
ATTRITION_ACCURACY = "reference_standard_known"
OVERALL = {"stratum_variable": "overall"}

# The figures a history row releases (name -> where the run's release shows it).
FIGURES: dict[str, Location] = {
    "n_patients": _at("attrition", "n_remaining", step="patients_in_export"),
    "n_episodes": _at("attrition", "n_remaining", step=ATTRITION_COHORT),
    "n_accuracy_population": _at("attrition", "n_remaining", step=ATTRITION_ACCURACY),
    "n_diagnosed": _at("time_to_diagnosis", "n_diagnosed", **OVERALL),
    "median_days_to_diagnosis": _at("time_to_diagnosis", "median_days", **OVERALL),
    "auroc_red_flag_count": _at("score_performance", "auroc", subgroup="all"),
    "auroc_model": _at("model_performance", "auroc", subgroup="all"),
    **{
        f"{measure}_{rule}": _at("flag_accuracy", measure, rule=rule, subgroup="all")
        for rule in PRIMARY_RULES
        for measure in ("sensitivity", "specificity")
    },
}
COUNT_FIGURES = ("n_patients", "n_episodes", "n_accuracy_population", "n_diagnosed")
HISTORY_COLUMNS = [
    "run_id",
    "finished_at",
    "extract_date",
    "input_sha256",
    "source_format",
    *FIGURES,
    *(f"{name}_status" for name in FIGURES),
]


# --- the overlap rule: one more relation per small difference, for the disclosure layer


def tracked_cells(table: str, frame: pd.DataFrame, spec: TableSpec) -> dict[str, tuple[int, str]]:
    """`table|row labels|column` -> (row, column) of every count cell checked across runs:
    each count of a table that is not a pooled curve (pooled steps move from run to run),
    numbers at risk aside (always rounded), in rows its key columns name uniquely."""
    if spec.coarsen is not None or frame.empty:
        return {}
    labels = row_labels(frame, spec.keys)
    unique = {label for label, n in Counter(labels).items() if n == 1}
    return {
        f"{table}|{label}|{col}": (i, col)
        for col in spec.counts
        if col in frame and col not in spec.always_rounded
        for i, label in enumerate(labels)
        if label in unique
    }


def previous_counts(con: duckdb.DuckDBPyConnection) -> dict[str, list[float]]:
    """Cell key -> the exact value each earlier run released there (oldest first; NaN where
    that run did not release it, so position j is run j in every list: pooled curves
    compare several keys of one earlier run, coarsen.Across)."""
    if not _table_exists(con, "meta", "release_history"):
        return {}
    runs = [
        json.loads(counts or "{}")
        for (counts,) in con.execute(
            "SELECT released_counts FROM meta.release_history ORDER BY finished_at, run_id"
        ).fetchall()
    ]
    keys = {key for counts in runs for key in counts}
    return {key: [float(counts.get(key, np.nan)) for counts in runs] for key in keys}


def overlap_linkage(
    table: str, spec: TableSpec, previous: Mapping[str, Sequence[float]], min_cell: int
) -> Callable[[pd.DataFrame], Linkage]:
    """Relations `difference - count = -earlier count` (the earlier count is public), one per
    earlier released value whose difference to this run's count is 1..min_cell-1; the
    difference is a virtual, sensitive cell, so complementary suppression hides the count
    and whatever would reveal it."""

    def linkage(frame: pd.DataFrame) -> Linkage:
        groups, virtual = [], {}
        numeric: dict[str, pd.Series] = {}  # each column converted once, not once per cell
        for key, (i, col) in tracked_cells(table, frame, spec).items():
            if col not in numeric:
                numeric[col] = pd.to_numeric(frame[col], errors="coerce")
            value = numeric[col].iloc[i]
            if not np.isfinite(value):
                continue
            for j, earlier in enumerate(previous.get(key, ())):
                if is_small(value - earlier, min_cell):
                    # a string label: row labels are compared with numpy integers
                    cell = (f"earlier run {j}: {key}", col)
                    virtual[cell] = float(value - earlier)
                    groups.append(Group(parts=(cell,), total=(i, col)))
        return Linkage(tuple(groups), virtual)

    return linkage


def with_overlap(
    specs: Mapping[str, TableSpec], previous: Mapping[str, Sequence[float]] | None, min_cell: int
) -> dict[str, TableSpec]:
    """The specs, each table given the relations to what earlier runs released; a pooled
    curve is given the earlier steps at its keys (coarsen.Across)."""
    if not previous:
        return dict(specs)
    out = dict(specs)
    for name, spec in specs.items():
        if spec.coarsen is not None:
            out[name] = dataclasses.replace(
                spec, coarsen=functools.partial(spec.coarsen, earlier=previous)
            )
        else:
            base, extra = spec.linkage, overlap_linkage(name, spec, previous, min_cell)
            out[name] = dataclasses.replace(
                spec, linkage=lambda f, base=base, extra=extra: base(f) + extra(f)
            )
    return out


def released_counts(
    con: duckdb.DuckDBPyConnection, specs: Mapping[str, TableSpec]
) -> dict[str, float]:
    """Exact value (from mart) of every tracked count this run's release shows, and of every
    step of a pooled curve it shows (coarsen.released_steps)."""
    out: dict[str, float] = {}
    for table, spec in specs.items():
        release, mart = _frame(con, "release", table), _frame(con, "mart", table)
        if release.empty or mart.empty:
            continue
        if spec.coarsen is not None:
            out.update(coarsen.released_steps(table, release, mart))
            continue
        exact = tracked_cells(table, mart, spec)  # matched by row labels, not positions
        for key, (i, col) in tracked_cells(table, release, spec).items():
            if release[f"{col}_status"].iloc[i] in SHOWN and key in exact:
                value = pd.to_numeric(mart[col], errors="coerce").iloc[exact[key][0]]
                if np.isfinite(value):
                    out[key] = float(value)
    return out


# --- the history row, appended in the publish transaction


def append(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    source_format: str | None,
    settings: StudySettings,
    manifest_schema: str = "meta",
    extract_schema: str = "intermediate__build",
) -> dict[str, int]:
    """Add this run's row to meta.release_history and republish release.run_history.

    Runs inside `study.publish`'s transaction, after the swap: `release.*` and `mart.*`
    are this run's. Returns the published row count (for the run's record)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute(HISTORY_DDL)
    figures = {}
    for name, loc in FIGURES.items():
        value, status = released_value(con, loc)
        figures[name] = {"value": value, "status": status}
    counts = released_counts(con, release_specs(settings.cumulative_incidence_days))
    con.execute(
        "INSERT INTO meta.release_history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            dt.datetime.now(dt.UTC).replace(tzinfo=None),
            extract_date(con, extract_schema),
            input_sha256(con, manifest_schema),
            source_format,
            settings.min_cell,
            json.dumps(figures),
            json.dumps(counts),
        ],
    )
    return {"release.run_history": publish_history(con)}


def publish_history(con: duckdb.DuckDBPyConnection) -> int:
    """release.run_history from every kept row, oldest first (one column per figure)."""
    rows = con.execute(
        "SELECT run_id, finished_at, extract_date, input_sha256, source_format, figures"
        " FROM meta.release_history ORDER BY finished_at, run_id"
    ).fetchall()
    records = []
    for run_id, finished, extract, sha, fmt, figures in rows:
        figures = json.loads(figures)
        record = {"run_id": run_id, "finished_at": finished, "extract_date": extract,
                  "input_sha256": sha, "source_format": fmt}  # fmt: skip
        for name in FIGURES:
            entry = figures.get(name, {"value": None, "status": "not_estimable"})
            record[name] = entry["value"]
            record[f"{name}_status"] = entry["status"]
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=HISTORY_COLUMNS)
    for name in FIGURES:
        dtype = "Int64" if name in COUNT_FIGURES else "Float64"
        frame[name] = pd.array(pd.to_numeric(frame[name]), dtype=dtype)
    frame["finished_at"] = pd.to_datetime(frame["finished_at"])
    # an ISO date as text: Parquet and CSV readers give it back unchanged (a DATE comes back
    # as a date object from Parquet and as a timestamp from DuckDB's pandas bridge)
    frame["extract_date"] = [None if d is None else str(d)[:10] for d in frame["extract_date"]]
    con.register("_redflags_run_history", frame)
    try:
        con.execute("CREATE SCHEMA IF NOT EXISTS release")
        con.execute(
            "CREATE OR REPLACE TABLE release.run_history AS"
            " SELECT * REPLACE (CAST(extract_date AS VARCHAR) AS extract_date)"
            " FROM _redflags_run_history"
        )
    finally:
        con.unregister("_redflags_run_history")
    return len(frame)


def released_value(con: duckdb.DuckDBPyConnection, loc: Location) -> tuple[float | None, str]:
    """(value, status) of one cell of this run's release; a missing cell is not estimable."""
    frame = _frame(con, "release", loc.table)
    rows = loc.rows(frame)
    if len(rows) != 1:
        return None, "not_estimable"
    row = frame.iloc[rows[0]]
    status = str(row.get(f"{loc.column}_status", "shown"))
    value = pd.to_numeric(pd.Series([row[loc.column]]), errors="coerce").iloc[0]
    if status not in SHOWN or not np.isfinite(value):
        return None, status if status not in SHOWN else "not_estimable"
    return float(value), status


def _frame(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> pd.DataFrame:
    if not _table_exists(con, schema, table):
        return pd.DataFrame()
    # schema and table are internal names (FIGURES), quoted as identifiers
    return con.execute(f"SELECT * FROM {quote_identifier(schema)}.{quote_identifier(table)}").df()


def extract_date(con: duckdb.DuckDBPyConnection, schema: str) -> dt.date | None:
    """The run's data extract date (the study parameter, or the newest date in the export)."""
    if not _table_exists(con, schema, "int_data_extract_date", views=True):
        return None
    row = con.execute(
        f"SELECT max(data_extract_date) FROM {quote_identifier(schema)}.int_data_extract_date"
    ).fetchone()
    return row[0] if row else None


def input_sha256(con: duckdb.DuckDBPyConnection, schema: str) -> str | None:
    """One digest of the export the run read: sha256 over its manifest's sorted
    (file, sha256) pairs (the per-file hashes are in meta.runs.input_manifest)."""
    if not _table_exists(con, schema, "ingest_manifest"):
        return None
    pairs = con.execute(
        f"SELECT file_path, sha256 FROM {quote_identifier(schema)}.ingest_manifest ORDER BY file_path"
    ).fetchall()
    digest = hashlib.sha256()
    for path, sha in pairs:
        digest.update(f"{path}\t{sha}\n".encode())
    return digest.hexdigest()


def _table_exists(
    con: duckdb.DuckDBPyConnection, schema: str, table: str, views: bool = False
) -> bool:
    sql = "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?"
    if views:
        sql += (
            " UNION ALL SELECT count(*) FROM duckdb_views() WHERE schema_name = ? AND view_name = ?"
        )
        return sum(r[0] for r in con.execute(sql, [schema, table, schema, table]).fetchall()) > 0
    return con.execute(sql, [schema, table]).fetchone()[0] > 0
