"""Compare the published tables of two warehouses row by row (a before/after check of a refactor).

    .venv/bin/python tests/compare_outputs.py before.duckdb after.duckdb [--schemas mart release]

For every table of the schemas in either warehouse: its columns (names, types, order), its
row count and an order-independent digest of its row hashes; where they differ, the number
of rows found on one side only (EXCEPT ALL, so duplicates count). Columns that name the run
(`run_id`, different in every run by design) are left out; `--ignore` names others. Prints
one line per table and exits 1 when any table differs. Only counts and digests are printed,
never rows.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb

SCHEMAS = ("mart", "release")
IGNORED = ("run_id",)  # differs between any two runs, whatever they computed


@dataclass(frozen=True)
class TableComparison:
    table: str  # schema.name
    before: tuple | None  # (columns, rows, digest); None when the table is absent
    after: tuple | None
    only_before: int = 0  # rows found only before / only after (0 when identical)
    only_after: int = 0

    @property
    def identical(self) -> bool:
        return self.before is not None and self.before == self.after

    def line(self) -> str:
        if self.identical:
            return f"same     {self.table} ({self.before[1]} rows)"
        if self.before is None or self.after is None:
            side = "before" if self.after is None else "after"
            return f"DIFFERS  {self.table}: only {side}"
        if self.before[0] != self.after[0]:
            return f"DIFFERS  {self.table}: columns {self.before[0]} != {self.after[0]}"
        return (
            f"DIFFERS  {self.table}: {self.before[1]} vs {self.after[1]} rows,"
            f" {self.only_before} only before, {self.only_after} only after"
        )


def _tables(con: duckdb.DuckDBPyConnection, catalog: str, schemas: tuple[str, ...]) -> set[str]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_catalog = ? AND list_contains(?, table_schema)",
        [catalog, list(schemas)],
    ).fetchall()
    return {f"{s}.{t}" for s, t in rows}


def _quoted(catalog: str, table: str) -> str:
    """`"catalog"."schema"."table"` for internal names read from information_schema."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (catalog, *table.split(".")))


def _compared(
    con: duckdb.DuckDBPyConnection, catalog: str, table: str, ignored: tuple[str, ...]
) -> str:
    """A subquery of the table's columns without the ignored ones, in their order."""
    name = _quoted(catalog, table)
    columns = [c for c, *_ in con.execute(f"DESCRIBE SELECT * FROM {name}").fetchall()]
    kept = ", ".join('"' + c.replace('"', '""') + '"' for c in columns if c not in ignored)
    return f"(SELECT {kept} FROM {name})"


def _summary(con: duckdb.DuckDBPyConnection, relation: str) -> tuple:
    columns = tuple((c, t) for c, t, *_ in con.execute(f"DESCRIBE {relation}").fetchall())
    # sum of the row hashes: independent of row order, sensitive to every value and duplicate
    rows, digest = con.execute(
        f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {relation} AS t"
    ).fetchone()
    return columns, rows, str(digest)


def _one_side_rows(con: duckdb.DuckDBPyConnection, a: str, b: str) -> int:
    return con.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})").fetchone()[0]  # fmt: skip


def compare_warehouses(
    before: Path,
    after: Path,
    schemas: tuple[str, ...] = SCHEMAS,
    ignored: tuple[str, ...] = IGNORED,
) -> list[TableComparison]:
    """One comparison per table of `schemas` found in either warehouse, sorted by name."""
    con = duckdb.connect()
    try:
        con.execute("ATTACH ? AS before_wh (READ_ONLY)", [str(before)])
        con.execute("ATTACH ? AS after_wh (READ_ONLY)", [str(after)])
        tables = _tables(con, "before_wh", schemas) | _tables(con, "after_wh", schemas)
        present = {side: _tables(con, side, schemas) for side in ("before_wh", "after_wh")}
        out = []
        for table in sorted(tables):
            qb, qa = (
                _compared(con, side, table, ignored) if table in present[side] else None
                for side in ("before_wh", "after_wh")
            )
            b, a = (_summary(con, q) if q else None for q in (qb, qa))
            comparison = TableComparison(table, b, a)
            if b and a and b != a and b[0] == a[0]:
                comparison = TableComparison(
                    table, b, a, _one_side_rows(con, qb, qa), _one_side_rows(con, qa, qb)
                )
            out.append(comparison)
        return out
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--schemas", nargs="+", default=list(SCHEMAS))
    parser.add_argument("--ignore", nargs="*", default=list(IGNORED), help="columns left out")
    args = parser.parse_args(argv)
    results = compare_warehouses(args.before, args.after, tuple(args.schemas), tuple(args.ignore))
    for r in results:
        print(r.line())
    differing = [r for r in results if not r.identical]
    print(f"{len(results) - len(differing)} of {len(results)} tables identical")
    return 1 if differing or not results else 0


if __name__ == "__main__":
    sys.exit(main())
