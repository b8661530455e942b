"""OMOP CDM source (placeholder until the adapter lands)."""

from pathlib import Path

NAME = "omop"


def detect(folder: Path) -> bool:
    return False


def describe(folder: Path) -> str:
    return "OMOP CDM"


def load(folder, warehouse, log=print):
    raise NotImplementedError
