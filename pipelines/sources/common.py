"""What every non-CSV source adapter shares: typed loading of canonical rows with quarantine,
and the meta tables (`meta.ingest_manifest`, `meta.quarantine`, `meta.source_tables`).

An adapter writes, per canonical table, one SELECT that yields the table's columns as text
(plus `source_file`, `source_line`); `load_table` types them (explicit casts, never
sniffing), checks them and moves each row either into `raw.<table>` or into
`meta.quarantine` with a reason. So rows read = rows loaded + rows quarantined, always.

The meta tables have the same columns as those of the Synthea CSV ingest
(pipelines/ingest/), so the study, the report and the contracts read them unchanged.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from pipelines import ingest, schema
from pipelines.ingest import IngestSummary

Log = Callable[[str], object]

META_DDL = (
    "CREATE SCHEMA IF NOT EXISTS meta",
    "CREATE SCHEMA IF NOT EXISTS raw",
    *ingest.META_DDL,  # one definition of the meta tables' shapes, shared with the CSV ingest
)

# A FHIR dateTime or an ISO timestamp with an offset: converted to UTC (naive), as the
# Synthea CSV writes its timestamps. Without an offset the wall-clock value is kept.
_OFFSET = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"


def typed_sql(column: schema.Column, text: str) -> str:
    """SQL expression giving the canonical type of `text` (an SQL expression), NULL if it
    does not parse. DATE columns take the date as written (the first 10 characters), which is
    what the Synthea CSV writes for conditions and birth dates."""
    if column.type == "DATE":
        return f"try_cast(substr({text}, 1, 10) AS DATE)"
    if column.type == "TIMESTAMP":
        # `...Z` is UTC already: DuckDB's TIMESTAMP parse drops the Z, which is exact (and a
        # third of the cost of the offset regex and the TIMESTAMPTZ cast, for most FHIR times)
        return (
            f"CASE WHEN NOT ends_with({text}, 'Z') AND regexp_matches({text}, '{_OFFSET}')"
            f" THEN timezone('UTC', try_cast({text} AS TIMESTAMPTZ))"
            f" ELSE try_cast({text} AS TIMESTAMP) END"
        )
    return f"CAST({text} AS {column.type})"


def reset_warehouse(con: duckdb.DuckDBPyConnection) -> None:
    """Empty raw.* and meta.* for a full load (call inside the load's transaction).

    The CSV ingest's incremental cache (schema `landing`) is dropped too: its file hashes
    describe raw tables that this load replaces, so a later CSV ingest must read every file."""
    for statement in META_DDL:
        con.execute(statement)
    con.execute("DROP SCHEMA IF EXISTS landing CASCADE")
    for table in schema.TABLES:
        con.execute(f"DROP TABLE IF EXISTS raw.{table}")
        con.execute(schema.create_table_sql(table))
    for table in ("ingest_manifest", "quarantine", "source_tables", "observation_periods"):
        con.execute(f"DELETE FROM meta.{table}")


def load_table(
    con: duckdb.DuckDBPyConnection, table: str, select_sql: str, params: dict | None = None
) -> None:
    """Rows of `select_sql` (canonical columns as text, source_file, source_line) into
    raw.<table>, or into meta.quarantine with the first reason that applies.

    One pass maps, types and checks the rows straight into raw.<table>, in the order read
    (insertion order is kept), without a sort and without a temp table of every mapped row
    (at 100k patients that copy of the Observations spilled gigabytes). A row with a
    problem is written with a NULL source_line (every loaded row has its line); only when
    there is one are those rows deleted and the mapping run again, filtered to the rows with
    a problem (with their text), into meta.quarantine."""
    t = schema.TABLES[table]
    checks = []  # (condition on the text `x__text` and typed `x` values, reason, column)
    for c in t.columns:
        if c.type in ("DATE", "TIMESTAMP"):
            checks.append(
                (f"{c.name} IS NULL AND {_blank(c.name + '__text')} IS NOT NULL",
                 "unparseable_date", c.name)
            )  # fmt: skip
    for c in t.columns:
        if c.required:
            checks.append((f"{_blank(c.name + '__text')} IS NULL", "missing_value", c.name))
    patient = t.patient_column
    if table == "patients":
        checks.append(
            (f"row_number() OVER (PARTITION BY {patient} ORDER BY source_file, source_line) > 1",
             "duplicate_patient_id", patient)
        )  # fmt: skip
    else:
        checks.append(
            (f"{patient} NOT IN (SELECT patient_id FROM raw.patients)", "unknown_patient", patient)
        )  # fmt: skip
    # the first check that fails, by number (1-based): one CASE for reason and column
    reason = " ".join(f"WHEN {cond} THEN {int(i)}" for i, (cond, _, _) in enumerate(checks, 1))
    typed = ", ".join(f"{typed_sql(c, 'src.' + c.name)} AS {c.name}" for c in t.columns)
    text = ", ".join(f"src.{c.name} AS {c.name}__text" for c in t.columns)
    fields = ", ".join(f"coalesce({c.name}__text, '')" for c in t.columns)
    names = ", ".join(c.name for c in t.columns)
    checked = f"""SELECT *, CASE {reason} END AS problem
        FROM (SELECT {typed}, {text}, src.source_file, src.source_line
              FROM ({select_sql}) src) typed_rows"""
    con.execute(
        f"INSERT INTO raw.{table} SELECT {names}, source_file,"
        f" CASE WHEN problem IS NULL THEN source_line END FROM ({checked}) checked",
        params or {},
    )
    if not has_problem_rows(con, table):
        return
    con.execute(f"DELETE FROM raw.{table} WHERE source_line IS NULL")
    con.execute(
        "INSERT INTO meta.quarantine SELECT $table, source_file, source_line,"
        f" $columns[problem], $reasons[problem], concat_ws(',', {fields})"
        f" FROM ({checked}) checked WHERE problem IS NOT NULL",
        {**(params or {}), "table": table, "columns": [c for _, _, c in checks],
         "reasons": [r for _, r, _ in checks]},
    )  # fmt: skip


def has_problem_rows(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Did the last insert into raw.<table> write a row with a problem (a NULL source_line:
    every loaded row has its line)?"""
    return bool(
        con.execute(f"SELECT count(*) FROM raw.{table} WHERE source_line IS NULL").fetchone()[0]
    )


def _blank(text: str) -> str:
    """SQL: NULL when the text `text` is missing or only spaces, else something not NULL."""
    return f"nullif(trim({text}), '')"


@dataclass(frozen=True)
class SourceFileInfo:
    """One input file of a source and the canonical tables it feeds."""

    path: Path
    relative: str
    tables: tuple[str, ...]


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


def write_meta(
    con: duckdb.DuckDBPyConnection,
    files: list[SourceFileInfo],
    present: dict[str, str],
    notes: dict[str, str],
    digests: dict[Path, str] | None = None,
) -> None:
    """meta.ingest_manifest (one row per file and table it feeds) and meta.source_tables.

    `present`: canonical table -> what it was read from (absent tables are not keys);
    `notes`: canonical table -> a note for meta.source_tables; `digests`: file -> sha256
    already computed (by the row accounting's read), the others are read here."""
    loaded_at = datetime.now(UTC).replace(tzinfo=None)
    digests = digests or {}
    for f in files:
        size = f.path.stat().st_size
        sha = digests.get(f.path) or file_sha256(f.path)
        for table in f.tables:
            rows = con.execute(
                f"SELECT count(*) FROM raw.{table} WHERE source_file = ?", [f.relative]
            ).fetchone()[0]
            bad = con.execute(
                "SELECT count(DISTINCT source_line) FROM meta.quarantine"
                " WHERE table_name = ? AND source_file = ?",
                [table, f.relative],
            ).fetchone()[0]
            con.execute(
                "INSERT INTO meta.ingest_manifest VALUES (?, ?, ?, ?, ?, ?, ?)",
                [table, f.relative, size, sha, rows, bad, loaded_at],
            )
    for name, t in schema.TABLES.items():
        n_files = sum(1 for f in files if name in f.tables)
        n_rows = con.execute(f"SELECT count(*) FROM raw.{name}").fetchone()[0]
        note = notes.get(name, "")
        if name not in present:
            note = "; ".join(
                filter(None, [note, "absent from the export: features that need it are not"
                              " ascertainable"])
            )  # fmt: skip
        con.execute(
            "INSERT INTO meta.source_tables VALUES (?, ?, ?, ?, ?, ?)",
            [name, t.required, name in present, n_files, n_rows, note],
        )


@dataclass
class LoadResult:
    """What an adapter's load found, before it becomes an IngestSummary."""

    files: list[SourceFileInfo]
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def summarize(
    con: duckdb.DuckDBPyConnection,
    source: Path,
    warehouse: Path,
    result: LoadResult,
    started: float,
) -> IngestSummary:
    """The CSV ingest's summary type, so `redflags ingest` and the study print it alike."""
    table_rows = dict(con.execute("SELECT table_name, n_rows FROM meta.source_tables").fetchall())
    present = dict(con.execute("SELECT table_name, is_present FROM meta.source_tables").fetchall())
    quarantined: dict[str, dict[str, int]] = {}
    for table, reason, n in con.execute(
        "SELECT coalesce(table_name, '(file)'), reason, count(DISTINCT (source_file, source_line))"
        " FROM meta.quarantine GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        quarantined.setdefault(table, {})[reason] = n
    return IngestSummary(
        source=str(source),
        warehouse=str(warehouse),
        table_rows={t: table_rows[t] for t in schema.TABLES},
        quarantined=quarantined,
        files_loaded=[f.relative for f in result.files],
        files_skipped=[],
        files_removed=[],
        tables_updated=list(schema.TABLES),
        absent_tables=[t for t in schema.OPTIONAL_TABLES if not present[t]],
        ignored_files=result.ignored,
        notes=result.notes,
        seconds=time.perf_counter() - started,
    )


def load_replacing(
    folder: Path,
    warehouse: Path,
    land: Callable[[duckdb.DuckDBPyConnection, Path], Any],
    load_tables: Callable[[duckdb.DuckDBPyConnection, Any, Log], LoadResult],
    log: Log = print,
    *,
    accept_shrink: bool = False,
    lock: bool = True,
    wait_seconds: float = 0.0,
) -> IngestSummary:
    """Replace raw.* and the ingest meta tables with what `load_tables` reads from what
    `land` found, in one transaction, holding the warehouse lock (`lock=False` when the
    caller, a run, holds it). As for the CSV ingest, an empty required table or a table that
    shrank past settings.MAX_ROW_DROP_FRACTION (unless `accept_shrink`) rolls it all back."""
    from contextlib import nullcontext

    from pipelines import warehouse as wh
    from pipelines.guards import check_table_sizes

    started = time.perf_counter()
    held = wh.warehouse_lock(warehouse, wait_seconds) if lock else nullcontext()
    with held, wh.open_warehouse(warehouse) as con:
        landed = land(con, Path(folder))
        before = _source_table_rows(con)
        con.execute("BEGIN TRANSACTION")
        try:
            reset_warehouse(con)
            result = load_tables(con, landed, log)
            after = _source_table_rows(con)
            check_table_sizes(before, after, schema.REQUIRED_TABLES, accept_shrink=accept_shrink)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return summarize(con, Path(folder), Path(warehouse), result, started)


def _source_table_rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per raw table as the last ingest recorded them (empty before the first)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'meta'"
        " AND table_name = 'source_tables'"
    ).fetchone()[0]
    if not exists:
        return {}
    return dict(con.execute("SELECT table_name, n_rows FROM meta.source_tables").fetchall())
