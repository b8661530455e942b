"""The `--source-format` option of `redflags ingest/run/demo/serve` (argparse only, so
`redflags --help` stays quick)."""

from __future__ import annotations

import argparse

FORMATS = ("auto", "synthea", "omop", "fhir")


def add_source_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source-format",
        choices=FORMATS,
        default="auto",
        help="layout of the export: Synthea CSV, OMOP CDM (CSV, Parquet or DuckDB) or FHIR R4"
        " (Bulk NDJSON or Bundles); default auto: detected, and said (docs/sources.md)",
    )
