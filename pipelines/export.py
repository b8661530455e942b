"""`redflags export`: every release table as Parquet and CSV, plus a manifest, for BI tools.

Every successful `redflags run` (and each scheduled run) writes the same folder, by default
`<warehouse stem>.release/` beside the warehouse (pipelines/study.py `default_parquet_dir`).
Only `release.*` is exported (aggregate, disclosure-controlled); the warehouse is opened
read-only. The manifest (`manifest.json`) lists each table with the run id, its row count,
columns and the sha256 of its files; `disclosure_log.csv` is the output checker's log.
The report's figures are written too, as `figures/<name>.png` and `.svg` (pipelines/report/figures.py,
the same drawing the report embeds), each listed in the manifest after the tables.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import uuid
from pathlib import Path

from pipelines.errors import UserFacingError
from pipelines.warehouse import quote_identifier

MANIFEST = "manifest.json"
DISCLOSURE_LOG = "disclosure_log.csv"  # the output checker's log, readable without tools


def export_release(warehouse: Path, out_dir: Path, run_id: str | None = None) -> list[Path]:
    """Write `<table>.parquet` and `<table>.csv` for every release table and `manifest.json`.

    Atomic: everything is written into a temporary folder beside `out_dir`, which then
    replaces `out_dir` by renames, so a reader sees the previous release or the new one,
    never half of one; on any failure the previous folder is left as it was. Returns the
    final paths (tables' Parquet, CSV, the figures' PNG and SVG, then the manifest last)."""
    from pipelines.report import load_released, release_charts
    from pipelines.report.figures import warehouse_state, write_figures
    from pipelines.warehouse import open_warehouse, tables_in

    warehouse, out_dir = Path(warehouse), Path(out_dir)
    if not warehouse.exists():
        raise UserFacingError(f"warehouse not found: {warehouse}")
    _refuse_foreign_folder(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        state = warehouse_state(warehouse)  # before reading: the figures' cache key
        with open_warehouse(warehouse, read_only=True) as con:
            tables = tables_in(con, "release")
            if not tables:
                raise UserFacingError(f"{warehouse} has no release tables: run the study first")
            run_id = run_id or _release_run_id(con, tables)
            manifest = [_write_table(con, table, staging, run_id) for table in tables]
            released = load_released(con, run_id)  # what the report draws from
        # the report's figures, the same drawing as the run's report (one rendering)
        figures = write_figures(release_charts(released, state), staging, run_id)
        manifest += figures
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful swap
    tables = [m for m in manifest if "table" in m]
    drawn = [m for m in figures if m["file"]]
    files = [out_dir / m["file"] for m in tables] + [out_dir / m["csv"] for m in tables]
    files += [out_dir / m[kind] for m in drawn for kind in ("file", "svg")]
    return [*files, out_dir / MANIFEST]


def _write_table(con, table: str, folder: Path, run_id: str | None) -> dict:
    """One table as Parquet and CSV; its manifest entry (rows, columns, sha256 of each file)."""
    parquet, csv = folder / f"{table}.parquet", folder / f"{table}.csv"
    # The folder is user input: written through the relation API, never spliced into SQL;
    # the table name comes from the catalogue, quoted as an identifier.
    con.sql(f"SELECT * FROM release.{quote_identifier(table)}").write_parquet(str(parquet))
    # CSV through pandas (one writer for every table; disclosure_log.csv is the output
    # checker's copy, readable without tools)
    con.execute(f"SELECT * FROM release.{quote_identifier(table)}").df().to_csv(csv, index=False)
    return {**_describe(con, table, parquet), "run_id": run_id, "csv": csv.name,
            "sha256": _sha256(parquet), "csv_sha256": _sha256(csv)}  # fmt: skip


def _release_run_id(con, tables: list[str]) -> str | None:
    """The run that published the release tables (every published row carries run_id)."""
    stamped = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_columns()"
            " WHERE schema_name = 'release' AND column_name = 'run_id'"
        ).fetchall()
    }
    for table in (t for t in tables if t in stamped):
        rows = con.execute(
            f"SELECT DISTINCT run_id FROM release.{quote_identifier(table)} LIMIT 2"
        ).fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
    return None


def _refuse_foreign_folder(out_dir: Path) -> None:
    """The swap replaces the whole folder: refuse one that holds anything but a previous
    export (e.g. `--out .` or the warehouse's own folder), rather than delete it."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserFacingError(f"{out_dir} is a file, not a folder")
    ours = {".parquet", ".csv"}
    foreign = [
        p.name
        for p in out_dir.iterdir()
        if p.name != MANIFEST and not (p.is_file() and p.suffix in ours) and not _figures(p)
    ]
    if foreign or (any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists()):
        raise UserFacingError(
            f"{out_dir} holds other files ({', '.join(sorted(foreign)[:3]) or 'no manifest'});"
            " the release folder is replaced as a whole: choose a new or empty folder"
        )


def _figures(path: Path) -> bool:
    """A previous export's `figures/` folder: nothing in it but PNG and SVG files."""
    from pipelines.report.figures import FIGURES_DIR

    return (
        path.name == FIGURES_DIR
        and path.is_dir()
        and all(p.is_file() and p.suffix in (".png", ".svg") for p in path.iterdir())
    )


def _swap(staging: Path, out_dir: Path) -> None:
    """Put `staging` in place of `out_dir` by renames (the old one is removed afterwards)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old")
        out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        if old is not None:
            old.rename(out_dir)  # put the previous release back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
