"""Synthea CSV source: a thin wrapper over pipelines/ingest/ (the incremental CSV ingest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines import schema
from pipelines.ingest import IngestSummary, ingest_export
from pipelines.sources.common import Log

NAME = "synthea"
_SUFFIXES = (".csv", ".csv.gz")


def _tables(folder: Path) -> set[str]:
    """Canonical tables with a file named like a Synthea CSV (`name.csv`, `name-1.csv.gz`)."""
    found = set()
    for p in folder.iterdir():
        lower = p.name.lower()
        if p.is_file() and lower.endswith(_SUFFIXES):
            stem = lower.removesuffix(".gz").removesuffix(".csv").split("-")[0]
            if stem in schema.TABLES:
                found.add(stem)
    return found


def detect(folder: Path) -> bool:
    folder = Path(folder)
    # any study table's file: a missing patients.csv then gets the CSV ingest's own message
    return folder.is_dir() and bool(_tables(folder))


def describe(folder: Path) -> str:
    tables = sorted(_tables(Path(folder)))
    return f"Synthea CSV: {len(tables)} study table(s) ({', '.join(tables)})"


def load(folder: Path, warehouse: Path, log: Log = print, **options: Any) -> IngestSummary:
    """The incremental CSV ingest; `options`: accept_shrink, lock, wait_seconds."""
    return ingest_export(Path(folder), Path(warehouse), log=log, **options)
