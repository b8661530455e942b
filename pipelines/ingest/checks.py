"""The row checks: SQL (built from pipelines/schema.py and the unit rules, never from input)
that gives each parsed row its first problem (missing value, duplicate, unit or value of a
numeric observation, unknown patient), and the text a failed row is quarantined with.
"""

from __future__ import annotations

import functools
import hashlib

import duckdb

from pipelines import schema


def problem_checks(table: str, *, staged: bool = False) -> list[tuple[str, str, str | None]]:
    """(condition, reason, column) in priority order; a row gets the first that holds.

    `staged`: the rows of one file being loaded (tables parsed straight into raw),
    where exact duplicate lines are known (temp.duplicate_lines) and observations are checked
    against the unit rules (temp.ingest_unit_rules). The unknown-patient check comes last, so
    that a held row has no other problem."""
    t = schema.TABLES[table]
    checks: list[tuple[str, str, str | None]] = []
    for c in t.columns:
        if c.required:
            blank = f" OR trim({c.name}) = ''" if c.type == "VARCHAR" else ""
            checks.append((f"{c.name} IS NULL{blank}", "missing_value", c.name))
    if table == "patients":
        # keep the first copy of a patient id (file order, then line); later copies are bad
        incomplete = " OR ".join(f"({cond})" for cond, _, _ in checks)
        duplicate = (
            f"row_number() OVER (PARTITION BY patient_id, ({incomplete})"
            " ORDER BY file_rank, source_line) > 1"
        )
        checks.append((duplicate, "duplicate_patient_id", "patient_id"))
        return checks
    if staged:
        duplicate = "source_line IN (SELECT source_line FROM temp.duplicate_lines)"
        checks.append((duplicate, "duplicate_record", None))
        if table == "observations":
            checks += _value_checks()
    column = t.patient_column
    checks.append(
        (f"{column} NOT IN (SELECT patient_id FROM raw.patients)", "unknown_patient", column)
    )
    return checks


# Observations whose code has unit rules (its concept is numeric in the study,
# pipelines/valuesets/units.csv) are read with their rule joined once (checked_source):
# unit_ruled (the code has rules), unit_factor, unit_min, unit_max (NULL: unit not listed).
# A code matches a rule once normalised (_RULE_CODE); the normalisation runs on the file's
# distinct codes (temp.ingest_unit_codes, create_unit_codes), not on every row: on every
# row it was most of the checks' cost on a big observations file (4x the rest).
_RULE_CODE = "upper(replace(trim(d.code), '.', ''))"


_RULE_KEY = "k.rule_code || chr(31) || lower(trim(coalesce(l.units, '')))"


_AS_NUMBER = "try_cast(trim(value) AS DOUBLE)"


def _value_checks() -> list[tuple[str, str, str]]:
    """Checks of the numeric study observations (weight, ALP): a VALUE that is not a finite
    number, a UNITS without a conversion, and a value outside the plausible range once
    converted (or too large for the DECIMAL(18, 4) the models read it as)."""
    converted = f"{_AS_NUMBER} * unit_factor"
    return [
        (
            f"unit_ruled AND ({_AS_NUMBER} IS NULL OR NOT isfinite({_AS_NUMBER}))",
            "unparseable_value",
            "value",
        ),
        ("unit_ruled AND unit_factor IS NULL", "unknown_unit", "units"),
        (
            "unit_ruled AND (try_cast(trim(value) AS DECIMAL(18, 4)) IS NULL"
            f" OR {converted} < unit_min OR {converted} > unit_max)",
            "implausible_value",
            "value",
        ),
    ]


def checked_source(table: str, numbered: str) -> str:
    """What the checks of a staged file read: its numbered rows, for observations with their
    unit rule (see _value_checks; needs create_unit_codes first). The unit's key is built
    only for rows whose code has rules (the CASE), since most rows have none."""
    if table != "observations":
        return f"({numbered})"
    return f"""(SELECT l.*, k.rule_code IS NOT NULL AS unit_ruled, r.factor AS unit_factor,
               r.min_value AS unit_min, r.max_value AS unit_max
        FROM ({numbered}) l
        LEFT JOIN temp.ingest_unit_codes k ON k.code = l.code
        LEFT JOIN temp.ingest_unit_rules r
            ON r.rule_key = CASE WHEN k.rule_code IS NOT NULL THEN {_RULE_KEY} END)"""


def create_unit_codes(con: duckdb.DuckDBPyConnection, numbered: str) -> None:
    """temp.ingest_unit_codes: each distinct code (as written) of the staged observations
    whose normalised form has unit rules, with that form (joined by checked_source)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE ingest_unit_codes AS SELECT d.code, r.rule_code"
        f" FROM (SELECT DISTINCT code FROM ({numbered})) d"
        " JOIN (SELECT DISTINCT rule_code FROM temp.ingest_unit_rules) r"
        f" ON r.rule_code = {_RULE_CODE}"
    )


@functools.cache
def unit_rules_digest() -> str:
    from pipelines.valuesets import unit_conversions

    return hashlib.sha256(repr(unit_conversions()).encode()).hexdigest()[:16]


def create_unit_rules(con: duckdb.DuckDBPyConnection) -> None:
    """temp.ingest_unit_rules: one row per (observation code, accepted unit) of the study's
    numeric concepts, with the factor to the canonical unit and the plausible range."""
    from pipelines.valuesets import unit_conversions  # the value sets, read when needed

    con.execute(
        "CREATE OR REPLACE TEMP TABLE ingest_unit_rules (rule_code VARCHAR, rule_key VARCHAR,"
        " factor DOUBLE, min_value DOUBLE, max_value DOUBLE)"
    )
    con.executemany(
        "INSERT INTO temp.ingest_unit_rules VALUES (?, ? || chr(31) || ?, ?, ?, ?)",
        [[r.code, r.code, r.unit, r.factor, r.min_value, r.max_value] for r in unit_conversions()],
    )


def case_sql(checks: list[tuple[str, str, str | None]], part: int) -> str:
    """CASE expression giving the reason (part 1) or column (part 2) of the first check that
    holds, NULL when none does."""
    whens = " ".join(
        f"WHEN {check[0]} THEN {'NULL' if check[part] is None else repr(check[part])}"
        for check in checks
    )
    return f"CASE {whens} END"


def as_text(table: str) -> str:
    """raw_line of a row that parsed but failed a check: its loaded fields, comma-separated
    (the original line's other columns are never loaded)."""
    columns = [c.name for c in schema.TABLES[table].columns]
    return " || ',' || ".join(f"coalesce(CAST({c} AS VARCHAR), '')" for c in columns)
