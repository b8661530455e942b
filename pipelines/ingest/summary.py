"""What an ingest reports, in counts only (never row contents): `meta.source_tables` (one row
per canonical table; its note is also written by the Spark engine) and the `IngestSummary`
printed to the terminal and the run log.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from pipelines import schema
from pipelines.ingest.discover import Export, display_name


@dataclass
class IngestSummary:
    """What one ingest did: counts only, never row contents."""

    source: str
    warehouse: str
    table_rows: dict[str, int]
    quarantined: dict[str, dict[str, int]]  # table -> reason -> rows
    files_loaded: list[str]
    files_skipped: list[str]
    files_removed: list[str]
    tables_updated: list[str]
    absent_tables: list[str]
    ignored_files: list[str]
    notes: list[str]
    seconds: float = 0.0
    contracts: str = ""  # one-line result of the input contracts, filled by the flow

    @property
    def total_quarantined(self) -> int:
        return sum(sum(r.values()) for r in self.quarantined.values())

    def counts(self) -> dict[str, int]:
        """Rows in each raw table."""
        return dict(self.table_rows)

    def format(self) -> str:
        """Readable multi-line summary for the terminal and the run log."""
        lines = [
            f"ingest {display_name(self.source)} -> {display_name(self.warehouse)}"
            f" ({self.seconds:.1f} s)",
            f"files: {len(self.files_loaded)} loaded, {len(self.files_skipped)} unchanged"
            f" (not re-read), {len(self.files_removed)} removed",
            f"{'table':<16}{'rows':>12}{'quarantined':>13}",
        ]
        for table, rows in self.table_rows.items():
            bad = sum(self.quarantined.get(table, {}).values())
            absent = "  (absent)" if table in self.absent_tables else ""
            lines.append(f"{table:<16}{rows:>12}{bad:>13}{absent}")
        for table, reasons in self.quarantined.items():
            detail = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
            lines.append(f"quarantined in {table}: {detail} (see meta.quarantine)")
        if self.absent_tables:
            lines.append(
                f"absent optional tables: {', '.join(self.absent_tables)}"
                " (features that need them are reported as not ascertainable)"
            )
        if self.ignored_files:
            lines.append(f"ignored (not used by the study): {', '.join(self.ignored_files)}")
        lines += [f"note: {note}" for note in self.notes]
        if self.contracts:
            lines.append(self.contracts)
        return "\n".join(lines)


def quarantine_counts(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    rows = con.execute(
        "SELECT table_name, reason, count(DISTINCT (source_file, source_line)) FROM meta.quarantine"
        " GROUP BY ALL ORDER BY table_name, reason"
    ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for table, reason, n in rows:
        counts.setdefault(table, {})[reason] = n
    return {t: counts[t] for t in schema.TABLES if t in counts}


def file_notes(con: duckdb.DuckDBPyConnection) -> list[str]:
    notes = []
    for relative, parsed, rejected, blank, continued in con.execute(
        "SELECT file_path, rows_parsed, lines_rejected, coalesce(blank_lines, 0),"
        " coalesce(continuation_lines, 0) FROM landing.files ORDER BY file_path"
    ).fetchall():
        if blank or continued:
            notes.append(
                f"{display_name(relative)}: {blank} blank lines and {continued} lines"
                " continuing a quoted value (Synthea writes neither; counted, line numbers"
                " stay exact)"
            )
        if rejected > parsed:
            name = display_name(relative)
            notes.append(f"{name}: most lines could not be parsed; check the export format")
    return notes


def write_source_tables(con: duckdb.DuckDBPyConnection, export: Export) -> None:
    """One row per canonical table: required, present, files, rows, and a note."""
    con.execute("DELETE FROM meta.source_tables")
    for name, t in schema.TABLES.items():
        files = [f for f in export.files if f.table == name]
        n_rows = con.execute(f"SELECT count(*) FROM raw.{name}").fetchone()[0]
        con.execute(
            "INSERT INTO meta.source_tables VALUES (?, ?, ?, ?, ?, ?)",
            [name, t.required, bool(files), len(files), n_rows, table_note(export, name)],
        )


def table_note(export: Export, table: str) -> str:
    """The `meta.source_tables` note of one table (also written by the Spark engine)."""
    notes = []
    if table in export.empty_optional:
        notes.append(f"empty file(s) treated as absent: {', '.join(export.empty_optional[table])}")
    if table not in export.tables_present():
        notes.append("absent from the export: features that need it are not ascertainable")
    return "; ".join(notes)
