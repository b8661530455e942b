"""The one place the dashboard reads data: release tables, never `mart` or `meta`.

The source is named by environment variables (set by `redflags dashboard`, which starts
Streamlit in a child process): `REDFLAGS_DASHBOARD_WAREHOUSE` (a DuckDB warehouse, opened
read-only, schema `release` only) or `REDFLAGS_DASHBOARD_PARQUET` (a folder written by
`redflags export`: `<table>.parquet`). Only aggregate, disclosure-controlled tables are
ever read, so the dashboard may be published outside the secure environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

WAREHOUSE_ENV = "REDFLAGS_DASHBOARD_WAREHOUSE"
PARQUET_ENV = "REDFLAGS_DASHBOARD_PARQUET"
SCHEMA = "release"  # the only schema the dashboard reads


@dataclass(frozen=True)
class Source:
    """Where the release tables come from: exactly one of `warehouse` and `parquet`."""

    warehouse: Path | None = None
    parquet: Path | None = None

    @property
    def description(self) -> str:
        if self.warehouse is not None:
            return f"warehouse {self.warehouse} (schema {SCHEMA}, read-only)"
        return f"Parquet folder {self.parquet}"


class SourceError(Exception):
    """The dashboard has no usable source; shown to the user as one line."""


def source_from_env() -> Source:
    warehouse, parquet = os.environ.get(WAREHOUSE_ENV), os.environ.get(PARQUET_ENV)
    if bool(warehouse) == bool(parquet):
        raise SourceError(f"set exactly one of {WAREHOUSE_ENV} and {PARQUET_ENV}")
    return check_source(Source(Path(warehouse)) if warehouse else Source(parquet=Path(parquet)))


def check_source(source: Source) -> Source:
    """The source, after checking it exists and holds release tables (SourceError if not)."""
    if source.warehouse is not None and not source.warehouse.is_file():
        raise SourceError(f"warehouse not found: {source.warehouse}")
    if source.parquet is not None and not source.parquet.is_dir():
        raise SourceError(f"Parquet folder not found: {source.parquet}")
    if not list_tables(source):
        raise SourceError(f"no release tables in {source.description}: run the study first")
    return source


def list_tables(source: Source) -> list[str]:
    """Names of the release tables the source holds, sorted."""
    if source.parquet is not None:
        return sorted(p.stem for p in source.parquet.glob("*.parquet"))
    with _connect(source.warehouse) as con:
        rows = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ? ORDER BY table_name",
            [SCHEMA],
        ).fetchall()
    return [r[0] for r in rows]


def read_table(source: Source, table: str) -> pd.DataFrame:
    """One release table as a DataFrame; an empty frame when the source lacks it."""
    if table not in list_tables(source):
        return pd.DataFrame()
    if source.parquet is not None:
        return pd.read_parquet(source.parquet / f"{table}.parquet")
    with _connect(source.warehouse) as con:
        # `table` is one of the names the catalog just listed; quoted as an identifier
        return con.execute(f"SELECT * FROM {SCHEMA}.{_identifier(table)}").df()


def source_stamp(source: Source) -> float:
    """When the source last changed (file times): a new run gives the session new tables."""
    if source.warehouse is not None:
        return source.warehouse.stat().st_mtime
    return max((p.stat().st_mtime for p in source.parquet.glob("*.parquet")), default=0.0)


def _connect(path: Path):
    import duckdb

    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:  # a run holds the file for writing: DuckDB allows no reader
        raise SourceError(
            f"cannot open {path} read-only (a run may be writing it; serve the Parquet copy "
            f"with --parquet instead): {str(exc).splitlines()[0]}"
        ) from None


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Release:
    """The release tables of one source, each read once (a dashboard session keeps one)."""

    def __init__(self, source: Source):
        self.source = source
        self.tables = list_tables(source)
        self._frames: dict[str, pd.DataFrame] = {}

    def table(self, name: str) -> pd.DataFrame:
        """A copy of release table `name` (empty when absent), so a page cannot change it."""
        if name not in self._frames:
            self._frames[name] = read_table(self.source, name)
        return self._frames[name].copy()

    def has(self, name: str) -> bool:
        return name in self.tables and not self.table(name).empty

    def min_cell(self) -> int | None:
        """The run's `min_cell`, from the disclosure log's summary rows (None if absent)."""
        log = self.table("disclosure_log")
        if log.empty or "detail" not in log:
            return None
        match = log["detail"].astype(str).str.extract(r"min_cell=(\d+)")[0].dropna()
        return int(match.iloc[0]) if len(match) else None

    def run_ids(self) -> list[str]:
        """The run ids found in the release tables (one per published run; the run history,
        which lists every earlier run, aside)."""
        ids: set[str] = set()
        for name in self.tables:
            if name == "run_history":
                continue
            frame = self.table(name)
            if "run_id" in frame:
                ids.update(frame["run_id"].dropna().astype(str))
        return sorted(ids)

    def labels(self) -> dict[tuple[str, str], str]:
        """(kind, code) -> label: `release.labels` when the run wrote it, else the same
        table built from pipelines/labels.py (parameters then left as `<name>`)."""
        from pipelines.labels import labels_frame

        frame = self.table("labels") if self.has("labels") else labels_frame()
        return {(k, c): v for k, c, v in frame[["kind", "code", "label"]].itertuples(index=False)}

    def label(self, kind: str, code: str) -> str:
        return self.labels().get((kind, str(code)), str(code))
