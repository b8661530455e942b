"""Engines: where ingest and the SQL models run (`--engine`). One protocol
(`pipelines/engines/base.py`), one implementation per engine, chosen once at the edge (the
command line or the flow's parameters) and passed to `pipelines.study.run_study`."""

from __future__ import annotations

import importlib
from typing import Any

from pipelines.engines.base import Engine, EngineRun
from pipelines.engines.duckdb import DuckDBEngine
from pipelines.errors import UserFacingError

DEFAULT_ENGINE = "duckdb"
# name -> the module that makes it (imported only when chosen: Spark's is heavy); each module's
# `ENGINE` class has `from_options(**options)`.
ENGINE_MODULES = {
    "duckdb": "pipelines.engines.duckdb",
    "spark": "pipelines.engines.spark",
}
ENGINES = tuple(ENGINE_MODULES)

__all__ = ["DEFAULT_ENGINE", "ENGINES", "DuckDBEngine", "Engine", "EngineRun", "engine_for"]


def engine_for(name: str, **options: Any) -> Engine:
    """The engine called `name`, made from its options (the Spark engine's `spark_master`,
    `spark_dir`; the others take none and ignore them); a clear error for an unknown name."""
    if name not in ENGINES:
        raise UserFacingError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    return importlib.import_module(ENGINE_MODULES[name]).ENGINE.from_options(**options)
