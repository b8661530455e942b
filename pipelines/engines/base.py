"""The engine protocol: what a study run asks of the engine that ingests and builds models.

`pipelines.study.run_study` receives an `Engine` (what the user chose), binds it to one run
with `for_run`, and calls the run's steps; it never asks which engine it got. Statistics,
output contracts, release and publish always run in the DuckDB warehouse, on the
`mart__build` tables the engine left there.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import duckdb

from pipelines.settings import StudySettings


class EngineRun(Protocol):
    """One run on one engine: the steps that differ between engines."""

    name: str  # recorded in meta.runs.engine
    raw_schema: str  # where the input contracts read this run's raw tables
    meta_schema: str  # where this run's ingest manifest is (`<meta_schema>__build` first)
    # where this run's `intermediate.int_data_extract_date` is in the warehouse at publish
    # (the run history's extract date, pipelines/history.py)
    extract_schema: str
    note: str  # added to the run's first log line ("" for the default engine)
    # whether a later run over the same inputs may keep this engine's published tables
    # (pipelines/reuse.py): true when they hold their rows, false when they read files the
    # run owns (which the next run's cleanup removes)
    reusable: bool

    def resources(self, warehouse: Path) -> AbstractContextManager[object]:
        """What the run keeps outside the warehouse: made on entry, removed on failure."""
        ...

    def ingest(
        self,
        source: Path,
        warehouse: Path,
        say: Callable[[str], None],
        source_format: str = "auto",
        accept_shrink: bool = False,
    ) -> dict[str, int]:
        """Read the export; returns rows loaded per raw table."""
        ...

    def build_models(
        self,
        warehouse: Path,
        settings: StudySettings,
        suffix: str,
        reuse_suffix: str | None = None,
    ) -> dict[str, int]:
        """Build the SQL models; the mart tables end in `mart<suffix>` of the warehouse."""
        ...

    def build_variant(
        self, warehouse: Path, primary: StudySettings, variant: StudySettings, suffix: str
    ) -> None:
        """A sensitivity variant into `mart<suffix>`, reusing the primary build's models."""
        ...

    def publish_extra(self, con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
        """Inside the publish transaction: the engine's own tables; their row counts."""
        ...

    def after_publish(self) -> None:
        """After a successful publish: clean up what earlier runs left."""
        ...


class Engine(Protocol):
    """What the user chose (`--engine`): binds itself to one run."""

    name: str

    def for_run(self, warehouse: Path, run_id: str) -> EngineRun: ...
