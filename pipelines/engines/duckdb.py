"""The default engine: ingest and the SQL models run in the DuckDB warehouse itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines.settings import StudySettings
from pipelines.warehouse import BUILD_SUFFIX, drop_schema, run_connection


@dataclass(frozen=True)
class DuckDBEngine:
    """Everything in the warehouse; nothing to set up or clean up around a run."""

    name: str = "duckdb"
    raw_schema: str = "raw"
    meta_schema: str = "meta"
    extract_schema: str = "intermediate" + BUILD_SUFFIX  # the build, dropped after publish
    note: str = ""
    reusable: bool = True  # the published tables are the warehouse's own

    @classmethod
    def from_options(cls, **options: object) -> DuckDBEngine:
        """No options of its own (the other engines' are ignored)."""
        return cls()

    def for_run(self, warehouse: Path, run_id: str) -> DuckDBEngine:
        return self

    @contextmanager
    def resources(self, warehouse: Path) -> Iterator[DuckDBEngine]:
        yield self

    def ingest(
        self,
        source: Path,
        warehouse: Path,
        say: Callable[[str], None] = print,
        source_format: str = "auto",
        accept_shrink: bool = False,
    ) -> dict[str, int]:
        """Load the export into raw.* (atomic; Synthea CSV incrementally) in any source
        layout (`pipelines/sources`). The run holds the lock."""
        from pipelines.sources import load_source

        summary = load_source(
            Path(source),
            Path(warehouse),
            source_format,
            say,
            accept_shrink=accept_shrink,
            lock=False,
        )
        say(summary.format())
        return summary.counts()

    def build_models(
        self,
        warehouse: Path,
        settings: StudySettings,
        suffix: str = BUILD_SUFFIX,
        reuse_suffix: str | None = None,
    ) -> dict[str, int]:
        """Every model into the build schemas; the row count of each table built. Views
        (parameter-free staging models, reused models) are not counted: counting would
        compute them."""
        from pipelines.models import build_models

        with run_connection(warehouse) as con:
            for schema in ("staging", "intermediate", "mart"):
                drop_schema(con, schema + suffix)
            built = build_models(con, settings, schema_suffix=suffix, reuse_suffix=reuse_suffix)
            tables = {
                f"{s}.{t}"
                for s, t in con.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables"
                    " WHERE table_type = 'BASE TABLE'"
                ).fetchall()
            }
            return {
                name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                for name in built
                if name in tables
            }

    def build_variant(
        self, warehouse: Path, primary: StudySettings, variant: StudySettings, suffix: str
    ) -> None:
        """Only the models downstream of the changed parameters; the rest are views on the
        primary build."""
        self.build_models(warehouse, variant, suffix, reuse_suffix=BUILD_SUFFIX)

    def publish_extra(self, con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
        return {}

    def after_publish(self) -> None:
        return None


ENGINE = DuckDBEngine  # what pipelines.engines.engine_for makes
