"""The one place that knows code systems: canonical names, their spellings, defaults, code form.

Synthea writes SYSTEM as `SNOMED-CT` (2.x-3.2) or `http://snomed.info/sct` (3.3+), and some
files have no SYSTEM column at all. Every spelling maps to one canonical name here; the
staging models look spellings up in `meta.code_system_aliases` (written by
`load_code_systems`) and fall back to `meta.code_system_defaults` when SYSTEM is empty.

Codes are compared in one normal form on both sides (records and value sets):
trimmed, upper case, without dots. That makes ICD-10-CM `C79.51` equal `C7951` and is a
no-op for SNOMED, LOINC, RxNorm and DICOM codes (none of them contain dots).
"""

from __future__ import annotations

import duckdb

SNOMED = "SNOMED"
ICD10CM = "ICD10CM"
LOINC = "LOINC"
RXNORM = "RXNORM"
DICOM = "DICOM"  # DICOM controlled terminology (imaging modality codes such as MR, CT)

# Canonical name -> every spelling seen in exports or FHIR (matched trimmed, case-insensitively).
SPELLINGS: dict[str, tuple[str, ...]] = {
    SNOMED: (
        "SNOMED",
        "SNOMED-CT",
        "SNOMED CT",
        "SNOMEDCT",
        "SNOMED_CT",
        "SCT",
        "http://snomed.info/sct",
        "http://snomed.info/sct/",
        "urn:oid:2.16.840.1.113883.6.96",
    ),
    ICD10CM: (
        "ICD10CM",
        "ICD-10-CM",
        "ICD10-CM",
        "ICD-10CM",
        "ICD_10_CM",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "urn:oid:2.16.840.1.113883.6.90",
    ),
    LOINC: ("LOINC", "LN", "http://loinc.org", "urn:oid:2.16.840.1.113883.6.1"),
    RXNORM: (
        "RXNORM",
        "RxNorm",
        "RXN",
        "http://www.nlm.nih.gov/research/umls/rxnorm",
        "urn:oid:2.16.840.1.113883.6.88",
    ),
    DICOM: (
        "DICOM",
        "DCM",
        "http://dicom.nema.org/resources/ontology/DCM",
        "urn:oid:1.2.840.10008.2.16.4",
    ),
}

# The system a record's code is in when its Synthea file has no SYSTEM column.
DEFAULT_SYSTEM: dict[str, str] = {
    "conditions": SNOMED,
    "encounters": SNOMED,  # REASONCODE
    "procedures": SNOMED,
    "observations": LOINC,
    "medications": RXNORM,
    "imaging_studies": SNOMED,  # body site and procedure codes; modality codes are DICOM
}


def _alias_key(spelling: str) -> str:
    return spelling.strip().upper()


_ALIASES = {_alias_key(s): name for name, spellings in SPELLINGS.items() for s in spellings}


def canonical_system(spelling: str | None) -> str | None:
    """Canonical code-system name for a spelling, None when unknown or empty."""
    if spelling is None or not spelling.strip():
        return None
    return _ALIASES.get(_alias_key(spelling))


def normalize_code(code: str) -> str:
    """A code in the form records and value sets are compared in (no dots, upper case)."""
    return code.strip().upper().replace(".", "")


def load_code_systems(con: duckdb.DuckDBPyConnection) -> None:
    """Write `meta.code_system_aliases(alias, code_system)` and `meta.code_system_defaults`."""
    import pandas as pd  # here, so that ingest (which reads the codes) does not load pandas

    tables = {
        "code_system_aliases": pd.DataFrame(
            sorted(_ALIASES.items()), columns=["alias", "code_system"]
        ),
        "code_system_defaults": pd.DataFrame(
            sorted(DEFAULT_SYSTEM.items()), columns=["table_name", "code_system"]
        ),
    }
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    for name, frame in tables.items():
        con.register("_frame", frame)
        con.execute(f"CREATE OR REPLACE TABLE meta.{name} AS SELECT * FROM _frame")
        con.unregister("_frame")
