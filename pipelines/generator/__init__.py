"""Synthetic Synthea-layout exports with planted truth (docs/generator.md).

`generate()` lives in `core` and imports numpy and pyarrow; it is loaded on first use so
that importing this package (as the CLI does to build its parser) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.generator.params import FlagRate, PlantedParameters, load_planted

if TYPE_CHECKING:
    from pipelines.generator.core import GenerationResult, generate
    from pipelines.generator.quirks import Quirks

__all__ = [
    "FlagRate",
    "GenerationResult",
    "PlantedParameters",
    "Quirks",
    "generate",
    "load_planted",
]


def __getattr__(name: str) -> Any:
    if name in ("generate", "GenerationResult"):
        from pipelines.generator import core

        return getattr(core, name)
    if name == "Quirks":
        from pipelines.generator.quirks import Quirks

        return Quirks
    raise AttributeError(f"module 'pipelines.generator' has no attribute {name!r}")
