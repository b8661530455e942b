"""Phase 2 for the tables parsed straight into raw (every table but patients): each new or
changed file is parsed into a staging table, its rows checked set-wise there, then moved in
bulk: good rows into raw, failed rows into the quarantine. Rows of unknown patients also
wait in `landing.<table>__held` until their patient arrives.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from pipelines import progress, schema
from pipelines import warehouse as wh
from pipelines.errors import IngestError
from pipelines.ingest.checks import (
    as_text,
    case_sql,
    checked_source,
    create_unit_codes,
    create_unit_rules,
    problem_checks,
)
from pipelines.ingest.digests import Digest
from pipelines.ingest.discover import SourceFile
from pipelines.ingest.parse import (
    QUARANTINED_LINES,
    Parsed,
    check_accounting,
    parse_into,
    record_file,
)
from pipelines.ingest.plan import TableChanges
from pipelines.ingest.tables import insert_rows, landing_table_name, quote


def update_direct_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    changes: TableChanges,
    patient_ids_changed: bool,
    load: Callable[[duckdb.DuckDBPyConnection, SourceFile, Digest], Parsed] | None = None,
) -> None:
    """`load` parses one fresh file into raw (default `load_into_raw`, the whole file;
    pipelines/ingest/append.py passes one that parses only the new rows of a grown file)."""
    load = load or load_into_raw
    held = held_table(table)
    if changes.recreate:
        # dropped, not emptied: the first fresh file's stage becomes raw.<table> (see
        # quarantine_new_rows); created empty below when no file does
        con.execute(f"DROP TABLE IF EXISTS raw.{table}")
        con.execute(f"DROP TABLE IF EXISTS {held}")
        con.execute("DELETE FROM meta.quarantine WHERE table_name = ?", [table])
    elif changes.stale:
        stale = {"files": changes.stale}
        for target in (f"raw.{table}", held):
            if target == held and not _held_exists(con, table):
                continue
            con.execute(f"DELETE FROM {target} WHERE source_file IN (SELECT unnest($files))", stale)
        con.execute(
            "DELETE FROM meta.quarantine WHERE table_name = $table"
            " AND source_file IN (SELECT unnest($files))",
            {"table": table, **stale},
        )
    if not _held_exists(con, table):
        con.execute(schema.create_table_sql(table, held))
    if patient_ids_changed and not changes.recreate:
        _recheck_held(con, table)  # before the fresh files: raw and held hold kept files only
    if changes.fresh and table == "observations":
        create_unit_rules(con)
    total = sum(changes.sources[r][1].size_bytes for r in changes.fresh)
    with progress.track(f"ingest: {table}", total) as bar:
        for relative in changes.fresh:
            f, digest = changes.sources[relative]
            started = time.perf_counter()
            parsed = load(con, f, digest)
            bar.advance(digest.size_bytes, parsed.rows)
            changes.loaded.append(f.relative)
            changes.messages.append(parsed.message(f.relative, started))
    if not wh.table_exists(con, "raw", table):
        con.execute(schema.create_table_sql(table))


def held_table(table: str) -> str:
    """Rows of `table` that parsed and passed every check but the patient's: they wait here
    (and in the quarantine) for their patient to arrive."""
    return f"landing.{quote(table + '__held')}"


def _held_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return wh.table_exists(con, "landing", table + "__held")


# The staging table of one file parsed into raw (created by the parse inside the update
# transaction; dropped once its rows moved, or renamed to raw.<table> when it is the first
# file of a rebuilt table): a table of the warehouse, not a temporary one, so DuckDB writes
# it compressed ahead of COMMIT instead of holding the whole file in memory (issue 16), and
# never raw.<table> itself, so the checks never read raw back. In the raw schema only so that
# it can be renamed to raw.<table>; it never outlives the transaction.
STAGE = "raw.ingest_stage"


def load_into_raw(con: duckdb.DuckDBPyConnection, f: SourceFile, digest: Digest) -> Parsed:
    """Parse one file into raw.<table> (inside the update transaction) through a staging
    table: the file is parsed (fast or slow path, parse_into) into raw.ingest_stage with
    its line numbers; its rows are checked there set-wise, then move in bulk: good rows into
    raw (on a rebuild, the stage of the table's first file becomes raw.<table>), failed rows
    into the quarantine (rows of unknown patients also into held). raw is never read back by
    rowid to find the new rows (see insert_rows for why). Last, the row accounting of the file
    is checked against raw and the quarantine."""
    con.execute(
        f"DROP TABLE IF EXISTS landing.{quote(landing_table_name(f.relative))}"
    )  # old format
    parsed = parse_into(con, f, digest, STAGE)
    quarantine_new_rows(con, f, f"SELECT * FROM {STAGE}")
    check_accounting(con, f, parsed, f"raw.{f.table}", QUARANTINED_LINES)
    record_file(con, f, digest, parsed, None)
    return parsed


def quarantine_new_rows(
    con: duckdb.DuckDBPyConnection,
    f: SourceFile,
    numbered: str,
    rows_before: int = 0,
    texts_from: tuple[Path, int] | None = None,
) -> None:
    """The file's rejected lines into the quarantine; its rows (`numbered`: the SELECT of
    the staged rows with their line numbers) checked set-wise, then moved: good rows into
    raw, failed rows into the quarantine (unknown patients also into held). Fails when raw then holds another number of the file's rows
    than passed the checks (rows read = loaded + quarantined). `rows_before`: rows of the
    file raw already holds (its old rows, when only appended rows are staged); `texts_from`:
    where the staged lines' bytes are read (see _mark_duplicate_lines)."""
    table = f.table
    insert_rows(
        con,
        "meta.quarantine",
        "SELECT table_name, file_path, line, column_name, reason, raw_line FROM landing.rejects"
        " WHERE file_path = $file",
        {"file": f.relative},
    )
    _mark_duplicate_lines(con, f, numbered, texts_from)
    checks = problem_checks(table, staged=True)
    if table == "observations":
        create_unit_codes(con, numbered)
    # Only the rows that fail a check are copied out of the stage (usually none); the good
    # rows go from the stage straight into raw. Copying every checked row into a second
    # temporary table first (as from 2026-12-07) held each file twice in memory and doubled
    # the ingest's CPU (6.3 GB at 100k patients, at the memory limit, so it spilled).
    con.execute(
        "CREATE OR REPLACE TEMP TABLE ingest_problems AS SELECT * FROM (SELECT *,"
        f" {case_sql(checks, 1)} AS problem, {case_sql(checks, 2)} AS problem_column"
        f" FROM {checked_source(table, numbered)}) WHERE problem IS NOT NULL"
    )
    staged, failed = con.execute(
        f"SELECT (SELECT count(*) FROM {STAGE}), (SELECT count(*) FROM temp.ingest_problems)"
    ).fetchone()
    columns = ", ".join(c.name for c in (*schema.TABLES[table].columns, *schema.LINEAGE_COLUMNS))
    good = staged - failed
    if _adopt_stage(con, table):
        # raw.<table> was dropped for a rebuild and this is its first file: the stage becomes
        # it (its row groups are already written, compressed; an INSERT would compress every
        # row a second time), less the failed rows
        if failed:
            con.execute(
                f"DELETE FROM {STAGE} WHERE source_line IN"
                " (SELECT source_line FROM temp.ingest_problems)"
            )
        con.execute(f"ALTER TABLE {STAGE} RENAME TO {table}")
    else:
        if not wh.table_exists(con, "raw", table):  # a rebuild whose stage does not fit as is
            con.execute(schema.create_table_sql(table))
        if good:  # never an empty INSERT (see insert_rows); the count is known, no second scan
            passed = (
                ""
                if not failed
                else (" ANTI JOIN temp.ingest_problems p ON p.source_line = s.source_line")
            )
            con.execute(f"INSERT INTO raw.{table} SELECT {columns} FROM {STAGE} s{passed}")
        con.execute(f"DROP TABLE {STAGE}")
    checked = "FROM temp.ingest_problems WHERE problem"
    insert_rows(
        con,
        "meta.quarantine",
        f"SELECT $table, source_file, source_line, problem_column, problem, {as_text(table)}"
        f" {checked} IS NOT NULL",
        {"table": table},
    )
    insert_rows(con, held_table(table), f"SELECT {columns} {checked} = 'unknown_patient'")
    con.execute("DROP TABLE temp.ingest_problems")
    con.execute("DROP TABLE IF EXISTS temp.ingest_unit_codes")
    loaded = con.execute(
        f"SELECT count(*) FROM raw.{table} WHERE source_file = ?", [f.relative]
    ).fetchone()[0]
    if loaded - rows_before != good:
        raise IngestError(
            f"{f.relative}: {good} rows passed the checks but raw.{table} holds"
            f" {loaded - rows_before} of them;"
            " nothing was changed"
        )


def _adopt_stage(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the stage can become raw.<table>: that table is absent (dropped by
    update_direct_table for a rebuild, no file loaded into it yet) and the stage has its
    columns and types, in order (it has, as parsed; checked all the same)."""
    if wh.table_exists(con, "raw", table):
        return False
    schema_name, name = STAGE.split(".")
    found = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name ="
        " current_database() AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [schema_name, name],
    ).fetchall()
    expected = [(c.name, c.type) for c in (*schema.TABLES[table].columns, *schema.LINEAGE_COLUMNS)]
    return found == expected


def _mark_duplicate_lines(
    con: duckdb.DuckDBPyConnection,
    f: SourceFile,
    numbered: str,
    texts_from: tuple[Path, int] | None = None,
) -> None:
    """temp.duplicate_lines: the later copies of exact duplicate lines of the staged file.

    raw keeps only the canonical columns, so rows with the same loaded values (same hash of
    them) are only candidates; their original lines are then read from the file and compared
    byte for byte, so two lines that differ in a column that is not loaded (a cost, say) both
    stay. The first copy (lowest line) is kept. Lines of one file are compared, not across
    files. `texts_from` (path, offset): the staged rows are the appended rows of a file,
    copied to `path` where line n is line n + offset of the file (pipelines/ingest/append.py)."""
    loaded = ", ".join(c.name for c in schema.TABLES[f.table].columns)
    candidates = con.execute(
        f"""WITH hashed AS (SELECT source_line, hash({loaded}) AS h FROM ({numbered}))
        SELECT source_line, h FROM hashed
        WHERE h IN (SELECT h FROM hashed GROUP BY ALL HAVING count(*) > 1)
        ORDER BY source_line"""
    ).fetchall()
    con.execute("CREATE OR REPLACE TEMP TABLE duplicate_lines (source_line BIGINT)")
    if not candidates:
        return
    path, offset = texts_from or (f.path, 0)
    found = _line_texts(path, {line - offset for line, _ in candidates})
    texts = {line + offset: text for line, text in found.items()}
    seen, later = set(), []
    for line, h in candidates:
        key = (h, texts.get(line))
        if key[1] is not None and key in seen:
            later.append(line)
        seen.add(key)
    if later:
        con.execute("INSERT INTO temp.duplicate_lines SELECT unnest($lines)", {"lines": later})


def _line_texts(path: Path, lines: set[int]) -> dict[int, bytes]:
    """The bytes (without line end) of some physical lines (1-based) of a CSV or CSV.GZ file."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    texts, last = {}, max(lines)
    with opener(path, "rb") as handle:
        for number, text in enumerate(handle, start=1):
            if number in lines:
                texts[number] = text.rstrip(b"\r\n")
            if number >= last:
                break
    return texts


def _recheck_held(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Records of patients that left move from raw to the quarantine and held; held records
    of patients that arrived enter raw."""
    patient = schema.TABLES[table].patient_column
    held = held_table(table)
    if con.execute("SELECT count(*) FROM patients_removed").fetchone()[0]:
        orphans = f"FROM raw.{table} WHERE {patient} IN (SELECT patient_id FROM patients_removed)"
        insert_rows(
            con,
            "meta.quarantine",
            f"SELECT $table, source_file, source_line, '{patient}', 'unknown_patient',"
            f" {as_text(table)} {orphans}",
            {"table": table},
        )
        insert_rows(con, held, f"SELECT * {orphans}")
        con.execute(f"DELETE {orphans}")
    if con.execute("SELECT count(*) FROM patients_added").fetchone()[0]:
        arrived = f"FROM {held} WHERE {patient} IN (SELECT patient_id FROM patients_added)"
        con.execute(f"CREATE OR REPLACE TEMP TABLE revived AS SELECT * {arrived}")
        if not insert_rows(con, f"raw.{table}", "SELECT * FROM revived"):
            return
        con.execute(f"DELETE {arrived}")
        con.execute(
            "DELETE FROM meta.quarantine q USING revived r WHERE q.table_name = $table"
            " AND q.reason = 'unknown_patient' AND q.source_file = r.source_file"
            " AND q.source_line = r.source_line",
            {"table": table},
        )
