"""The protocol's red flags (PROTOCOL.md section 5), named once: the registry `valuesets/flags.csv`.

One row per flag, in the order of every flag column and table: `flag`, `order`, `is_seed`
(a seed-article flag, counted by red_flag_count), `needs_table` (the optional source table
without which the flag cannot be ascertained), `label` (report and release labels),
`value_sets` (the concepts its SQL reads), `evidence_window` (in words) and
`evidence_models` (the `sql/intermediate` models that hold its evidence records).
`load_flags` writes it as `meta.flags`; the models, contracts, report, generator and tests
read it from there or from here (docs/adding-a-flag.md).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

REGISTRY_FILE = Path(__file__).resolve().parent / "valuesets" / "flags.csv"
COLUMNS = (
    "flag", "order", "is_seed", "needs_table", "label", "value_sets", "evidence_window",
    "evidence_models",
)  # fmt: skip
OPTIONAL_TABLES = ("observations", "medications")  # the optional source tables a flag may need
# flag and model names become column and table names in SQL: plain identifiers only
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class FlagRegistryError(ValueError):
    """A registry file that cannot be used (bad column, order, name or table)."""


@dataclass(frozen=True)
class Flag:
    """One red flag of the registry."""

    name: str
    order: int
    is_seed: bool
    needs_table: str | None
    label: str
    value_sets: tuple[str, ...]
    evidence_window: str
    evidence_models: tuple[str, ...]

    @property
    def column(self) -> str:
        """Its column in mart.red_flags and in the analysis tables."""
        return f"flag_{self.name}"


def _flag(path: Path, line: int, row: dict[str, str]) -> Flag:
    where = f"{path.name}:{line}"
    names = [row["flag"], *row["evidence_models"].split()]
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise FlagRegistryError(f"{where}: not a plain lower-case name: {', '.join(bad)}")
    if row["is_seed"] not in ("true", "false") or not row["order"].isdigit():
        raise FlagRegistryError(f"{where}: is_seed must be true/false and order a number")
    if row["needs_table"] not in ("", *OPTIONAL_TABLES):
        raise FlagRegistryError(f"{where}: needs_table must be empty or one of {OPTIONAL_TABLES}")
    if not row["evidence_models"].split() or not row["label"]:
        raise FlagRegistryError(f"{where}: a flag needs a label and at least one evidence model")
    return Flag(
        name=row["flag"],
        order=int(row["order"]),
        is_seed=row["is_seed"] == "true",
        needs_table=row["needs_table"] or None,
        label=row["label"],
        value_sets=tuple(row["value_sets"].split()),
        evidence_window=row["evidence_window"],
        evidence_models=tuple(row["evidence_models"].split()),
    )


def read_registry(path: Path = REGISTRY_FILE) -> tuple[Flag, ...]:
    """Every flag of the registry, validated, in its order (1, 2, ... without gaps)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise FlagRegistryError(f"{path.name}: columns must be {', '.join(COLUMNS)}")
        flags = [_flag(path, line, row) for line, row in enumerate(reader, start=2)]
    if [f.order for f in flags] != list(range(1, len(flags) + 1)):
        raise FlagRegistryError(f"{path.name}: rows must be in order 1, 2, ... without gaps")
    names = [f.name for f in flags]
    models = [m for f in flags for m in f.evidence_models]
    if len(set(names)) < len(names) or len(set(models)) < len(models):
        raise FlagRegistryError(f"{path.name}: a flag or an evidence model is listed twice")
    return tuple(flags)


REGISTRY = read_registry()
# Every flag, in registry order; red_flag_count counts the seed flags.
FLAGS = tuple(f.name for f in REGISTRY)
SEED_FLAGS = tuple(f.name for f in REGISTRY if f.is_seed)


def load_flags(con: duckdb.DuckDBPyConnection) -> int:
    """Write the registry as `meta.flags` (explicit types: the models read flag_order as an
    INTEGER); returns the number of flags."""
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute(
        "CREATE OR REPLACE TABLE meta.flags (flag VARCHAR, flag_order INTEGER, is_seed BOOLEAN,"
        " needs_table VARCHAR, label VARCHAR, value_sets VARCHAR, evidence_window VARCHAR,"
        " evidence_models VARCHAR)"
    )
    con.executemany(
        "INSERT INTO meta.flags VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            [f.name, f.order, f.is_seed, f.needs_table, f.label, " ".join(f.value_sets),
             f.evidence_window, " ".join(f.evidence_models)]
            for f in REGISTRY
        ],
    )  # fmt: skip
    return len(REGISTRY)


# ---------------------------------------------------------------- the generated evidence model

EVIDENCE_MODEL = "int_flag_evidence"


def evidence_union_sql(registry: tuple[Flag, ...] = REGISTRY) -> str:
    """The SQL of `intermediate.int_flag_evidence`: the union of every flag's evidence models,
    in registry order. Generated so that a new flag's SQL file is picked up from its registry
    row alone; the names are checked plain identifiers (read_registry)."""
    selects = [
        f"select * from intermediate.{model}" for f in registry for model in f.evidence_models
    ]
    return (
        "-- purpose: every red flag's evidence records: the union of the evidence models named in"
        " valuesets/flags.csv (generated by pipelines.flags, not a file)\n"
        "-- grain: one row per evidence record of one flag's model\n"
        "-- parameters: none\n" + "\nunion all\n".join(selects) + "\n"
    )


# ---------------------------------------------------------------- contracts naming flags


def expand_flag_expectations(expectations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Contract expectations with the registry filled in, so no suite lists the flags by hand:
    an expectation marked `"for_each_flag": true` is repeated for each flag with `{flag}` in
    its kwargs replaced by the flag's name; a kwarg `"$flags"` becomes the list of flag names
    and `"$seed_flag_count"` the number of seed flags."""
    values = {"$flags": list(FLAGS), "$seed_flag_count": len(SEED_FLAGS)}
    out = []
    for e in expectations:
        e = dict(e)
        if "kwargs" in e:
            e["kwargs"] = {
                k: values.get(v, v) if isinstance(v, str) else v for k, v in e["kwargs"].items()
            }
        if e.pop("for_each_flag", False):
            out += [_for_flag(e, name) for name in FLAGS]
        else:
            out.append(e)
    return out


def _for_flag(expectation: dict[str, Any], name: str) -> dict[str, Any]:
    kwargs = {
        k: v.replace("{flag}", name) if isinstance(v, str) else v
        for k, v in expectation["kwargs"].items()
    }
    return {**expectation, "kwargs": kwargs}
