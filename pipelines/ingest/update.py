"""Phase 2, the update (inside the ingest's one transaction): raw.patients is rebuilt when
its files changed; every other raw table gives up the rows of stale files and takes in its
fresh files (pipelines/ingest/direct.py); when the patient ids changed, records of patients
that left move to the quarantine and records waiting for patients that arrived enter raw.
`meta.ingest_manifest` changes with them.
"""

from __future__ import annotations

import time

import duckdb

from pipelines import schema
from pipelines.ingest.append import find_tails, tail_loader
from pipelines.ingest.checks import as_text, case_sql, problem_checks
from pipelines.ingest.direct import update_direct_table
from pipelines.ingest.discover import Export
from pipelines.ingest.landing import LANDED_TABLES, LandingChanges
from pipelines.ingest.plan import TableChanges, plan_changes
from pipelines.ingest.tables import Log, insert_rows, quote, seconds


def update_raw(
    con: duckdb.DuckDBPyConnection,
    log: Log,
    export: Export | None = None,
    landed: LandingChanges | None = None,
) -> list[str]:
    """Update every raw table that needs it (call inside a transaction); returns their names.
    Files of the tables parsed straight into raw are added to `landed.loaded`/`skipped`."""
    landed = landed or LandingChanges()
    plan = plan_changes(con, export, landed.digests)
    find_tails(con, plan)  # grown files whose new rows alone are parsed
    updated = []
    ids_changed = False
    for table in schema.TABLES:  # patients first: the other tables are checked against it
        started = time.perf_counter()
        if table == "patients":
            changed = update_patients(con, plan[table])
            ids_changed = changed and _patient_ids_changed(con)
        else:
            changed = update_table(con, table, plan[table], ids_changed)
        if table not in LANDED_TABLES and export is not None:
            for message in plan[table].messages:
                log(message)
            landed.loaded += plan[table].loaded
            landed.skipped += [
                f.relative
                for f in export.files
                if f.table == table and f.relative not in plan[table].loaded
            ]
        if changed:
            updated.append(table)
            log(f"raw.{table} updated ({seconds(started)})")
    return updated


def update_patients(con: duckdb.DuckDBPyConnection, changes: TableChanges) -> bool:
    """Rebuild raw.patients from all its files (duplicates are judged across files); keep the
    patient ids that arrived (temp.patients_added) and left (temp.patients_removed)."""
    if not changes:
        return False
    con.execute("CREATE OR REPLACE TEMP TABLE patients_before (patient_id VARCHAR)")
    if _has_patient_ids(con):
        con.execute("INSERT INTO patients_before SELECT patient_id FROM raw.patients")
    everything = TableChanges(changes.stale, _landing_files(con, "patients"), recreate=True)
    _apply_file_changes(con, "patients", everything)
    for name, left, right in (
        ("added", "raw.patients", "patients_before"),
        ("removed", "patients_before", "raw.patients"),
    ):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE patients_{name} AS"
            f" SELECT patient_id FROM {left} EXCEPT SELECT patient_id FROM {right}"
        )
    _write_manifest(con, "patients")
    return True


def _patient_ids_changed(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT (SELECT count(*) FROM patients_added) + (SELECT count(*) FROM patients_removed)"
        ).fetchone()[0]
    )


def _has_patient_ids(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'raw'"
            " AND table_name = 'patients' AND column_name = 'patient_id'"
        ).fetchone()[0]
    )


def _landing_files(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "SELECT file_path FROM landing.files WHERE table_name = ? ORDER BY part, file_path",
            [table],
        ).fetchall()
    ]


def update_table(
    con: duckdb.DuckDBPyConnection, table: str, changes: TableChanges, patient_ids_changed: bool
) -> bool:
    """Bring raw.<table> and its quarantine rows up to date: rows of stale files leave, rows of
    fresh files enter, and if raw.patients changed, records of patients that left move to the
    quarantine while records waiting for patients that arrived enter raw."""
    if not (changes or patient_ids_changed):
        return False
    if table not in LANDED_TABLES:
        update_direct_table(con, table, changes, patient_ids_changed, tail_loader(changes))
        _write_manifest(con, table)
        return True
    _apply_file_changes(con, table, changes)
    if patient_ids_changed and not changes.recreate:
        kept = [f for f in _landing_files(con, table) if f not in changes.fresh]
        _recheck_patients(con, table, kept)
    _write_manifest(con, table)
    return True


def _apply_file_changes(con: duckdb.DuckDBPyConnection, table: str, changes: TableChanges) -> None:
    if changes.recreate:
        con.execute(f"DROP TABLE IF EXISTS raw.{table}")
        con.execute(schema.create_table_sql(table))
        con.execute("DELETE FROM meta.quarantine WHERE table_name = ?", [table])
    elif changes.stale:
        stale = {"files": changes.stale}
        con.execute(f"DELETE FROM raw.{table} WHERE source_file IN (SELECT unnest($files))", stale)
        con.execute(
            "DELETE FROM meta.quarantine WHERE table_name = $table"
            " AND source_file IN (SELECT unnest($files))",
            {"table": table, **stale},
        )
    if changes.fresh:
        _insert_checked_rows(con, table, changes.fresh)


def _insert_checked_rows(con: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> None:
    """Good rows of `files` into raw, their rejected lines and failed rows into the quarantine."""
    columns = ", ".join(c.name for c in schema.TABLES[table].columns)
    checked = _checked_rows_sql(con, table, files)
    insert_rows(
        con,
        f"raw.{table}",
        f"SELECT {columns}, source_file, source_line FROM ({checked}) WHERE problem IS NULL",
    )
    insert_rows(
        con,
        "meta.quarantine",
        "SELECT table_name, file_path, line, column_name, reason, raw_line FROM landing.rejects"
        " WHERE file_path IN (SELECT unnest($files))",
        {"files": files},
    )
    insert_rows(
        con,
        "meta.quarantine",
        f"SELECT $table, source_file, source_line, problem_column, problem, {as_text(table)}"
        f" FROM ({checked}) WHERE problem IS NOT NULL",
        {"table": table},
    )


def _recheck_patients(con: duckdb.DuckDBPyConnection, table: str, kept: list[str]) -> None:
    """Re-run the unknown-patient check on rows of unchanged files, for the ids that changed."""
    patient = schema.TABLES[table].patient_column
    columns = ", ".join(c.name for c in schema.TABLES[table].columns)
    if con.execute("SELECT count(*) FROM patients_removed").fetchone()[0]:
        orphans = f"FROM raw.{table} WHERE {patient} IN (SELECT patient_id FROM patients_removed)"
        con.execute(
            f"INSERT INTO meta.quarantine SELECT $table, source_file, source_line, '{patient}',"
            f" 'unknown_patient', {as_text(table)} {orphans}",
            {"table": table},
        )
        con.execute(f"DELETE {orphans}")
    if kept and con.execute("SELECT count(*) FROM patients_added").fetchone()[0]:
        checked = _checked_rows_sql(con, table, kept)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE revived AS SELECT * FROM ({checked})"
            f" WHERE problem IS NULL AND {patient} IN (SELECT patient_id FROM patients_added)"
        )
        con.execute(
            f"INSERT INTO raw.{table} SELECT {columns}, source_file, source_line FROM revived"
        )
        con.execute(
            "DELETE FROM meta.quarantine q USING revived r WHERE q.table_name = $table"
            " AND q.reason = 'unknown_patient' AND q.source_file = r.source_file"
            " AND q.source_line = r.source_line",
            {"table": table},
        )


def _parsed_rows_sql(con: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> str:
    """UNION ALL of some landing tables of `table`, with source_line and file order (file_rank)."""
    ordered = con.execute(
        "SELECT file_path, landing_table FROM landing.files WHERE table_name = ?"
        " ORDER BY part, file_path",
        [table],
    ).fetchall()
    columns = ", ".join(f"l.{c.name}" for c in schema.TABLES[table].columns)
    return "\nUNION ALL\n".join(
        f"SELECT {columns}, l.source_file, l.source_line, {rank} AS file_rank"
        f" FROM landing.{quote(landing_table)} l"
        for rank, (relative, landing_table) in enumerate(ordered)
        if relative in files
    )


def _checked_rows_sql(con: duckdb.DuckDBPyConnection, table: str, files: list[str]) -> str:
    """The parsed rows of `files` with the first problem each has (NULL when none)."""
    checks = problem_checks(table)
    return (
        f"WITH parsed AS ({_parsed_rows_sql(con, table, files)})\n"
        f"SELECT *, {case_sql(checks, 1)} AS problem, {case_sql(checks, 2)} AS problem_column"
        " FROM parsed"
    )


def _write_manifest(con: duckdb.DuckDBPyConnection, table: str) -> None:
    con.execute("DELETE FROM meta.ingest_manifest WHERE table_name = ?", [table])
    con.execute(
        f"""
        INSERT INTO meta.ingest_manifest
        SELECT f.table_name, f.file_path, f.size_bytes, f.sha256, coalesce(r.n, 0),
               coalesce(q.n, 0), f.loaded_at
        FROM landing.files f
        LEFT JOIN (SELECT source_file, count(*) AS n FROM raw.{table} GROUP BY ALL) r
            ON r.source_file = f.file_path
        LEFT JOIN (SELECT source_file, count(DISTINCT source_line) AS n FROM meta.quarantine
                   WHERE table_name = $table GROUP BY ALL) q
            ON q.source_file = f.file_path
        WHERE f.table_name = $table
        ORDER BY f.part, f.file_path""",
        {"table": table},
    )
