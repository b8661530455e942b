"""The canonical staged schema every Synthea version is loaded into (DuckDB schema `raw`).

This module is the contract between ingest (which writes `raw.<table>`) and the SQL
models (which read it). For each canonical column: its DuckDB type and the Synthea
header names it may come from (matched case-insensitively, first match wins).
Columns a version lacks are NULL. Source columns not listed here are not loaded
(direct identifiers such as names, SSN and addresses never enter the warehouse).

Every raw table also carries `source_file` (path relative to the export folder) and
`source_line` (1-based physical line number in that file, the header being line 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DuckDB type of the canonical column
    sources: tuple[str, ...]  # Synthea header names, any version
    required: bool = False  # the file is unusable without it


@dataclass(frozen=True)
class Table:
    name: str
    required: bool
    columns: tuple[Column, ...]
    patient_column: str = "patient_id"
    notes: str = ""
    ordering: tuple[str, ...] = field(default=())  # START <= STOP style pairs checked by contracts

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _c(name: str, type_: str, *sources: str, required: bool = False) -> Column:
    return Column(name, type_, tuple(sources), required)


# Dates: conditions/patients use YYYY-MM-DD; other files ISO-8601 UTC (YYYY-MM-DDTHH:MM:SSZ).
# Canonical types keep that distinction: *_date DATE, *_at TIMESTAMP (UTC, naive).
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "patients",
            required=True,
            columns=(
                _c("patient_id", "VARCHAR", "Id", "ID", "PATIENT", required=True),
                _c("birth_date", "DATE", "BIRTHDATE", required=True),
                _c("death_date", "DATE", "DEATHDATE"),
                _c("sex", "VARCHAR", "GENDER", "SEX", required=True),
                _c("race", "VARCHAR", "RACE"),
                _c("ethnicity", "VARCHAR", "ETHNICITY"),
            ),
        ),
        Table(
            "encounters",
            required=True,
            columns=(
                _c("encounter_id", "VARCHAR", "Id", "ID", required=True),
                _c("patient_id", "VARCHAR", "PATIENT", required=True),
                _c("start_at", "TIMESTAMP", "START", "DATE", required=True),
                _c("stop_at", "TIMESTAMP", "STOP"),
                _c("encounter_class", "VARCHAR", "ENCOUNTERCLASS"),
                _c("code", "VARCHAR", "CODE"),
                _c("description", "VARCHAR", "DESCRIPTION"),
                _c("reason_code", "VARCHAR", "REASONCODE"),
                _c("reason_description", "VARCHAR", "REASONDESCRIPTION"),
            ),
            ordering=("start_at", "stop_at"),
        ),
        Table(
            "conditions",
            required=True,
            columns=(
                _c("patient_id", "VARCHAR", "PATIENT", required=True),
                _c("encounter_id", "VARCHAR", "ENCOUNTER"),
                _c("start_date", "DATE", "START", required=True),
                _c("stop_date", "DATE", "STOP"),
                _c("code_system", "VARCHAR", "SYSTEM"),
                _c("code", "VARCHAR", "CODE", required=True),
                _c("description", "VARCHAR", "DESCRIPTION"),
            ),
            ordering=("start_date", "stop_date"),
        ),
        Table(
            "observations",
            required=False,
            columns=(
                _c("patient_id", "VARCHAR", "PATIENT", required=True),
                _c("encounter_id", "VARCHAR", "ENCOUNTER"),
                _c("observed_at", "TIMESTAMP", "DATE", required=True),
                _c("category", "VARCHAR", "CATEGORY"),
                _c("code_system", "VARCHAR", "SYSTEM"),
                _c("code", "VARCHAR", "CODE", required=True),
                _c("description", "VARCHAR", "DESCRIPTION"),
                _c("value", "VARCHAR", "VALUE"),
                _c("units", "VARCHAR", "UNITS"),
                _c("value_type", "VARCHAR", "TYPE"),
            ),
        ),
        Table(
            "procedures",
            required=False,
            columns=(
                _c("patient_id", "VARCHAR", "PATIENT", required=True),
                _c("encounter_id", "VARCHAR", "ENCOUNTER"),
                # Synthea < 3.0 has DATE only; 3.0+ has START and STOP
                _c("start_at", "TIMESTAMP", "START", "DATE", required=True),
                _c("stop_at", "TIMESTAMP", "STOP"),
                _c("code_system", "VARCHAR", "SYSTEM"),
                _c("code", "VARCHAR", "CODE", required=True),
                _c("description", "VARCHAR", "DESCRIPTION"),
                _c("reason_code", "VARCHAR", "REASONCODE"),
            ),
            ordering=("start_at", "stop_at"),
        ),
        Table(
            "medications",
            required=False,
            columns=(
                _c("patient_id", "VARCHAR", "PATIENT", required=True),
                _c("encounter_id", "VARCHAR", "ENCOUNTER"),
                _c("start_at", "TIMESTAMP", "START", required=True),
                _c("stop_at", "TIMESTAMP", "STOP"),
                _c("code_system", "VARCHAR", "SYSTEM"),
                _c("code", "VARCHAR", "CODE", required=True),
                _c("description", "VARCHAR", "DESCRIPTION"),
                _c("reason_code", "VARCHAR", "REASONCODE"),
            ),
            ordering=("start_at", "stop_at"),
        ),
        Table(
            "imaging_studies",
            required=False,
            columns=(
                _c("imaging_study_id", "VARCHAR", "Id", "ID"),
                _c("patient_id", "VARCHAR", "PATIENT", required=True),
                _c("encounter_id", "VARCHAR", "ENCOUNTER"),
                _c("studied_at", "TIMESTAMP", "DATE", required=True),
                _c("body_site_code", "VARCHAR", "BODYSITE_CODE"),
                _c("body_site_description", "VARCHAR", "BODYSITE_DESCRIPTION"),
                _c("modality_code", "VARCHAR", "MODALITY_CODE"),
                _c("modality_description", "VARCHAR", "MODALITY_DESCRIPTION"),
                _c("procedure_code", "VARCHAR", "PROCEDURE_CODE"),
            ),
        ),
    )
}

REQUIRED_TABLES = tuple(name for name, t in TABLES.items() if t.required)
OPTIONAL_TABLES = tuple(name for name, t in TABLES.items() if not t.required)
LINEAGE_COLUMNS = (Column("source_file", "VARCHAR", ()), Column("source_line", "BIGINT", ()))


def create_table_sql(table: str, qualified_name: str | None = None) -> str:
    """`CREATE TABLE` statement for a canonical raw table (lineage columns included)."""
    t = TABLES[table]
    cols = ", ".join(f"{c.name} {c.type}" for c in (*t.columns, *LINEAGE_COLUMNS))
    return f"CREATE TABLE {qualified_name or 'raw.' + table} ({cols})"
