"""`redflags export`: every release table as Parquet, plus a manifest, for BI tools.

Only `release.*` is exported (aggregate, disclosure-controlled); the warehouse is opened
read-only. The manifest (`manifest.json`) lists each table with its row count and columns;
`disclosure_log.csv` copies `release.disclosure_log` for the output checker.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.warehouse import quote_identifier

MANIFEST = "manifest.json"
DISCLOSURE_LOG = "disclosure_log.csv"  # the output checker's log, readable without tools


def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", type=Path, required=True, help="DuckDB warehouse file")
    parser.add_argument("--out", type=Path, required=True, help="folder for the Parquet files")


def run_cli(args: argparse.Namespace) -> int:
    written = export_release(args.warehouse, args.out)
    tables = [p for p in written if p.suffix == ".parquet"]
    print(f"Wrote {len(tables)} release tables and {MANIFEST} to {args.out}")
    return 0


def export_release(warehouse: Path, out_dir: Path) -> list[Path]:
    """Write `<table>.parquet` for every release table and `manifest.json`; return the paths."""
    from pipelines.errors import UserFacingError
    from pipelines.study import tables_in
    from pipelines.warehouse import open_warehouse

    warehouse, out_dir = Path(warehouse), Path(out_dir)
    if not warehouse.exists():
        raise UserFacingError(f"warehouse not found: {warehouse}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written, manifest = [], []
    with open_warehouse(warehouse, read_only=True) as con:
        tables = tables_in(con, "release")
        if not tables:
            raise UserFacingError(f"{warehouse} has no release tables: run the study first")
        for table in tables:
            path = out_dir / f"{table}.parquet"
            # The out path is user input: written through the relation API, never spliced
            # into SQL; the table name comes from the catalogue, quoted as an identifier.
            con.sql(f"SELECT * FROM release.{quote_identifier(table)}").write_parquet(str(path))
            written.append(path)
            manifest.append(_describe(con, table, path))
        # --- disclosure log (issue 10): a CSV copy beside the Parquet for the output checker
        if "disclosure_log" in tables:
            log_path = out_dir / DISCLOSURE_LOG
            con.execute("SELECT * FROM release.disclosure_log").df().to_csv(log_path, index=False)
            written.append(log_path)
    manifest_path = out_dir / MANIFEST
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return [*written, manifest_path]


def _describe(con, table: str, path: Path) -> dict:
    columns = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns()"
        " WHERE schema_name = 'release' AND table_name = ? ORDER BY column_index",
        [table],
    ).fetchall()
    # fetchall, not fetchone: DuckDB 2.0 refuses the next relation (write_parquet) on a
    # connection whose last result was not read to its end.
    rows = con.execute(f"SELECT count(*) FROM release.{quote_identifier(table)}").fetchall()[0][0]
    return {
        "table": table,
        "file": path.name,
        "rows": int(rows),
        "columns": [{"name": n, "type": t} for n, t in columns],
    }
