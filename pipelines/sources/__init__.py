"""Source adapters: each maps one export layout onto the canonical raw tables (schema.py).

Every adapter module has the same small interface:

- `NAME`: its `--source-format` name;
- `detect(folder) -> bool`: does the folder look like this layout (cheap: file names and the
  first bytes of files, nothing loaded);
- `describe(folder) -> str`: one line saying what was found, for the auto-detect message;
- `load(folder, warehouse, log) -> IngestSummary`: write raw.* and the ingest meta tables
  (meta.ingest_manifest, meta.quarantine, meta.source_tables) atomically.

The OMOP and FHIR adapters also expose `load_tables(con, folder, log)`, the same load on an
open connection inside the caller's transaction. The study SQL reads only raw.*, so it is
the same for every layout. See docs/sources.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pipelines.errors import IngestError
from pipelines.sources.options import FORMATS

if TYPE_CHECKING:
    from pipelines.ingest import IngestSummary

Log = Callable[[str], object]


def adapters() -> dict[str, ModuleType]:
    """--source-format name -> adapter module (imported when needed: DuckDB is heavy)."""
    from pipelines.sources import fhir, omop, synthea_csv

    return {m.NAME: m for m in (synthea_csv, omop, fhir)}


# What each layout's files look like, for the message when a folder holds none of them.
_EXPECTED = {
    "omop": "OMOP CDM tables (person, concept, ... as CSV, Parquet or a DuckDB file)",
    "fhir": "FHIR R4 files (Type.ndjson or Bundle .json)",
}


def detect_format(folder: Path) -> str:
    """The one layout the folder matches; IngestError when it matches none or several."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"export folder not found: {folder}")
    matches = [name for name, adapter in adapters().items() if adapter.detect(folder)]
    if not matches:
        raise IngestError(
            f"{folder}: no Synthea CSV (patients.csv, ...), OMOP CDM (person, concept, ...)"
            " or FHIR R4 (Type.ndjson or Bundle .json) files found (layouts: docs/sources.md)"
        )
    if len(matches) > 1:
        raise IngestError(
            f"{folder}: looks like several layouts ({', '.join(matches)});"
            " choose one with --source-format"
        )
    return matches[0]


def resolve_format(folder: Path, fmt: str = "auto", log: Log | None = None) -> str:
    """The layout to read `folder` as: `fmt`, or the detected one for `auto` (said in one
    line through `log`)."""
    folder = Path(folder)
    if fmt not in FORMATS:
        raise IngestError(f"unknown source format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(folder)
        if log is not None:
            log(f"source format: {fmt} (auto-detected: {adapters()[fmt].describe(folder)})")
    elif not folder.is_dir():
        raise IngestError(f"export folder not found: {folder}")
    elif fmt != "synthea" and not adapters()[fmt].detect(folder):
        # Checked before anything is opened: a wrong --source must not leave an empty
        # warehouse (or its lock file) behind. Synthea's missing files get the CSV
        # ingest's own, more precise message (ingest.discover_export).
        raise IngestError(f"{folder}: no {_EXPECTED[fmt]} found (layouts: docs/sources.md)")
    return fmt


def load_source(
    folder: Path,
    warehouse: Path,
    fmt: str = "auto",
    log: Log = print,
    *,
    accept_shrink: bool = False,
    lock: bool = True,
    wait_seconds: float = 0.0,
) -> IngestSummary:
    """Load the export in `folder` into the warehouse's raw tables, in layout `fmt`
    (`auto`: detected, with a one-line message saying what was found). Every layout holds
    the warehouse lock (`lock=False` when the caller holds it) and refuses an empty required
    table or a shrunk table unless `accept_shrink` (pipelines/guards.py)."""
    fmt = resolve_format(folder, fmt, log)
    return adapters()[fmt].load(
        Path(folder),
        Path(warehouse),
        log,
        accept_shrink=accept_shrink,
        lock=lock,
        wait_seconds=wait_seconds,
    )
