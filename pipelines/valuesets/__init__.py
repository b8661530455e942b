"""Versioned value sets (one CSV per value set in this folder) and their loader.

Each `<value_set>.csv` has the columns concept, code_system, code, match, description:
`code_system` is a canonical name from `pipelines.codesystems`, `match` is `exact` or
`prefix` (a prefix row matches every code that starts with it, e.g. ICD-10-CM C50).
`versions.csv` gives each reviewed value set's version and date. A value set without a row
there is *unreviewed*: it loads all the same, with the version `unreviewed (sha256 <first 12
hex digits of its file>)`, so a new value set needs no edit of versions.csv, and a run still
says which content it used (meta.value_sets; the file's full sha256 is in the run record,
`value_set_hashes`). Sources and verification status of every code: docs/value-sets.md.

`flags.csv` (not a value set) is the red-flag registry (`pipelines.flags`), loaded beside
the value sets as `meta.flags` and hashed with them for run records.

`units.csv` (not a value set) lists, for each numeric concept the study reads a value of
(body weight, alkaline phosphatase), the UNITS accepted, the factor to its canonical unit
and the plausible range in that unit; ingest quarantines other units and implausible
values, the staging model converts (docs/study-definitions.md, "Units").
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines import codesystems, flags

log = logging.getLogger(__name__)

FOLDER = Path(__file__).resolve().parent
VERSIONS_FILE = FOLDER / "versions.csv"
UNITS_FILE = FOLDER / "units.csv"
FLAGS_FILE = FOLDER / "flags.csv"  # the red-flag registry (pipelines.flags)
UNIT_COLUMNS = ("concept", "unit", "factor", "canonical_unit", "min_value", "max_value", "source")
COLUMNS = ("concept", "code_system", "code", "match", "description")
MATCH_KINDS = ("exact", "prefix")
UNREVIEWED = "unreviewed"  # the version of a value set without a row in versions.csv


class ValueSetError(ValueError):
    """A value-set file that cannot be used (bad column, unknown code system, duplicate)."""


@dataclass(frozen=True)
class ValueSetRow:
    value_set: str
    version: str
    concept: str
    code_system: str
    code: str  # normalized (codesystems.normalize_code)
    code_as_listed: str
    match: str
    description: str


def value_set_files() -> list[Path]:
    """Every value-set CSV, sorted by name (versions.csv, units.csv and flags.csv excluded)."""
    # by name: a test may point UNITS_FILE elsewhere; the folder's units.csv is still no value set
    other = {VERSIONS_FILE.name, UNITS_FILE.name, FLAGS_FILE.name}
    return sorted(p for p in FOLDER.glob("*.csv") if p.name not in other)


def _versions() -> dict[str, str]:
    with VERSIONS_FILE.open(newline="", encoding="utf-8") as f:
        return {r["value_set"]: f"{r['version']} ({r['updated']})" for r in csv.DictReader(f)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def value_set_versions() -> dict[str, str]:
    """Each value set's version: `<version> (<date>)` from versions.csv once reviewed, else
    `unreviewed (sha256 <12 hex digits>)`: a value set without a reviewed version is still
    named by its content, never refused (docs/value-sets.md, "Versions")."""
    reviewed = _versions()
    return {
        p.stem: reviewed.get(p.stem) or f"{UNREVIEWED} (sha256 {_sha256(p)[:12]})"
        for p in value_set_files()
    }


def unreviewed_value_sets() -> list[str]:
    """The value sets without a row in versions.csv, by name."""
    reviewed = _versions()
    return [p.stem for p in value_set_files() if p.stem not in reviewed]


# The unreviewed value sets already warned about in the current run (None: not in a run).
# A run loads the value sets once per build (the primary and each sensitivity variant);
# the warning is about the files, which do not change within a run, so it is said once.
_warned: ContextVar[set[str] | None] = ContextVar("redflags_unreviewed_warned", default=None)


@contextmanager
def one_warning_per_run() -> Iterator[None]:
    """Within the block (one study run), each unreviewed value set is warned about once;
    outside any run, every `load_value_sets` warns."""
    token = _warned.set(set())
    try:
        yield
    finally:
        _warned.reset(token)


def warn_unreviewed() -> list[str]:
    """Log a warning for each unreviewed value set not yet warned about in this run; returns
    the names warned about now."""
    warned = _warned.get()
    names = [n for n in unreviewed_value_sets() if warned is None or n not in warned]
    for name in names:  # loaded all the same: a new value set is not refused
        log.warning("value set %s has no row in versions.csv: loaded as unreviewed", name)
    if warned is not None:
        warned.update(names)
    return names


def _rows(path: Path, version: str) -> list[ValueSetRow]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueSetError(f"{path.name}: columns must be {', '.join(COLUMNS)}")
        rows = []
        for line, r in enumerate(reader, start=2):
            system = codesystems.canonical_system(r["code_system"])
            if system is None or system != r["code_system"]:
                raise ValueSetError(
                    f"{path.name}:{line}: code_system must be a canonical name, got {r['code_system']!r}"
                )
            if r["match"] not in MATCH_KINDS:
                raise ValueSetError(
                    f"{path.name}:{line}: match must be exact or prefix, got {r['match']!r}"
                )
            code = codesystems.normalize_code(r["code"])
            rows.append(
                ValueSetRow(
                    path.stem,
                    version,
                    r["concept"],
                    system,
                    code,
                    r["code"],
                    r["match"],
                    r["description"],
                )
            )
    return rows


def read_value_sets() -> list[ValueSetRow]:
    """All value-set rows, validated; duplicates (concept, system, code) are an error."""
    versions = value_set_versions()
    rows: list[ValueSetRow] = []
    for path in value_set_files():
        rows.extend(_rows(path, versions[path.stem]))
    seen: set[tuple[str, str, str]] = set()
    for r in rows:
        key = (r.concept, r.code_system, r.code)
        if key in seen:
            raise ValueSetError(
                f"{r.value_set}.csv: duplicate code {r.code_system} {r.code_as_listed} in {r.concept}"
            )
        seen.add(key)
    prefixes = [r for r in rows if r.match == "prefix"]
    for r in rows:
        for p in prefixes:
            same = (p.concept, p.code_system) == (r.concept, r.code_system) and p is not r
            if same and r.code.startswith(p.code):
                # a record would match twice and be counted twice
                raise ValueSetError(
                    f"{r.value_set}.csv: {r.code_as_listed} is already covered by prefix {p.code_as_listed}"
                )
    return rows


@dataclass(frozen=True)
class UnitConversion:
    """One accepted unit of a numeric observation code (units.csv joined to the value sets)."""

    concept: str
    code: str  # normalized observation code of the concept
    unit: str  # lower case, trimmed (UNITS is compared case-insensitively)
    factor: float  # value in `unit` * factor = value in canonical_unit
    canonical_unit: str
    min_value: float  # plausible range, in canonical_unit
    max_value: float


def unit_conversions() -> list[UnitConversion]:
    """units.csv for every observation code of its concepts; a concept without codes, a
    unit listed twice or disagreeing canonical units or ranges are an error."""
    with UNITS_FILE.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != UNIT_COLUMNS:
            raise ValueSetError(f"{UNITS_FILE.name}: columns must be {', '.join(UNIT_COLUMNS)}")
        units = list(reader)
    codes: dict[str, list[str]] = {}
    for r in read_value_sets():
        if r.code_system == "LOINC":  # observation codes
            codes.setdefault(r.concept, []).append(r.code)
    per_concept: dict[str, tuple[str, str, str]] = {}
    seen: set[tuple[str, str]] = set()
    rows = []
    for line, u in enumerate(units, start=2):
        concept, unit = u["concept"], u["unit"].strip().lower()
        shape = (u["canonical_unit"], u["min_value"], u["max_value"])
        if per_concept.setdefault(concept, shape) != shape:
            raise ValueSetError(
                f"{UNITS_FILE.name}:{line}: {concept} has another canonical unit or range"
            )
        if (concept, unit) in seen or concept not in codes:
            raise ValueSetError(
                f"{UNITS_FILE.name}:{line}: {u['unit']} listed twice or {concept} has no LOINC code"
            )
        seen.add((concept, unit))
        for code in codes[concept]:
            rows.append(
                UnitConversion(concept, code, unit, float(u["factor"]), u["canonical_unit"],
                               float(u["min_value"]), float(u["max_value"]))
            )  # fmt: skip
    return rows


def value_set_hashes() -> dict[str, str]:
    """sha256 of each value-set file (and of versions.csv and the flag registry), for run records."""
    files = [*value_set_files(), VERSIONS_FILE, FLAGS_FILE]
    return {p.stem: _sha256(p) for p in files}


def load_value_sets(con: duckdb.DuckDBPyConnection) -> int:
    """Write `meta.value_sets`, `meta.unit_conversions`, the code-system tables and the flag
    registry (`meta.flags`); returns the number of codes."""
    import pandas as pd  # here, so that ingest (which reads units.csv) does not load pandas

    frame = pd.DataFrame([r.__dict__ for r in read_value_sets()])
    warn_unreviewed()
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.register("_value_sets", frame)
    con.execute("CREATE OR REPLACE TABLE meta.value_sets AS SELECT * FROM _value_sets")
    con.unregister("_value_sets")
    conversions = pd.DataFrame([r.__dict__ for r in unit_conversions()])
    con.register("_unit_conversions", conversions)
    con.execute(
        "CREATE OR REPLACE TABLE meta.unit_conversions AS SELECT code, unit, factor,"
        " canonical_unit FROM _unit_conversions"
    )
    con.unregister("_unit_conversions")
    codesystems.load_code_systems(con)
    flags.load_flags(con)
    return len(frame)
