"""`redflags report` and `redflags export`: the release tables as an HTML report, or as
Parquet and CSV, with the report's figures as PNG and SVG and a manifest, for BI tools and
slides (both read the warehouse read-only)."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure_report_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", type=Path, required=True, help="DuckDB warehouse file")
    parser.add_argument("--out", type=Path, required=True, help="HTML file to write")
    parser.add_argument("--run-id", help="run to report (default: the latest released run)")


def run_report_cli(args: argparse.Namespace) -> int:
    from pipelines.report import write_report

    path = write_report(args.warehouse, args.out, run_id=args.run_id)
    print(f"Report written to {path}")
    return 0


def configure_export_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", type=Path, required=True, help="DuckDB warehouse file")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the release files (replaced as a whole)"
    )


def run_export_cli(args: argparse.Namespace) -> int:
    from pipelines.export import MANIFEST, export_release

    written = export_release(args.warehouse, args.out)
    tables = [p for p in written if p.suffix == ".parquet"]
    figures = [p for p in written if p.suffix == ".png"]  # each also as .svg
    print(
        f"Wrote {len(tables)} release tables (Parquet and CSV), {len(figures)} figures"
        f" (PNG and SVG) and {MANIFEST} to {args.out}"
    )
    return 0
