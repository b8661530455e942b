"""One source for the documentation of the `mart` and `release` tables.

pipelines/table_docs.toml holds each table's description and each column's type and
meaning. From it:

- `comment_tables(con)` puts them in the DuckDB catalog (`COMMENT ON TABLE` / `COMMENT ON
  COLUMN`) for every documented table and column a publish wrote (pipelines/study.py calls
  it inside the publish transaction), so `duckdb_tables()` / `duckdb_columns()` and any
  BI tool reading the catalog show the same words as the dictionary;
- `render()` writes the table sections of docs/data-dictionary.md (between the two
  GENERATED markers): `python -m pipelines.table_docs --write`, or `--check` to fail when
  the committed page differs from the source (tests/integration/test_table_docs.py does the same).

A release table's `<column>_status` columns are listed by name only (`status_of`); their
meaning is the one sentence every status column shares (STATUS_MEANING).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipelines.flags import REGISTRY, Flag

SOURCE = Path(__file__).with_name("table_docs.toml")
DICTIONARY = (
    Path("docs") / "data-dictionary.md"
)  # from the repository root, as every documented command
BEGIN = "<!-- BEGIN GENERATED from pipelines/table_docs.toml by `python -m pipelines.table_docs --write`: edit that file, not this section -->"  # fmt: skip
END = "<!-- END GENERATED -->"
STATUS_MEANING = "status of `{column}`: shown, suppressed_small, suppressed_complement, rounded or not_estimable"  # fmt: skip
SCHEMAS = ("mart", "release")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    meaning: str


@dataclass(frozen=True)
class Table:
    name: str
    schemas: tuple[str, ...]  # ("mart",), ("release",) or ("mart", "release")
    description: str
    columns: tuple[Column, ...]  # in every schema the table is in
    mart_only: tuple[Column, ...] = ()
    release_only: tuple[Column, ...] = ()  # besides the status columns
    status_of: tuple[str, ...] = ()  # release columns that have a `<name>_status` beside them
    notes: str = ""  # text after the column table

    def status_columns(self) -> tuple[Column, ...]:
        return tuple(
            Column(f"{c}_status", "VARCHAR", STATUS_MEANING.format(column=c))
            for c in self.status_of
        )

    def columns_in(self, schema: str) -> tuple[Column, ...]:
        """Every documented column of `schema.<name>`, in the order the page lists them."""
        if schema not in self.schemas:
            return ()
        if schema == "mart":
            return self.columns + self.mart_only
        return self.columns + self.release_only + self.status_columns()


@dataclass(frozen=True)
class Section:
    heading: str
    text: str
    tables: tuple[Table, ...] = field(default=())


class SourceError(ValueError):
    """pipelines/table_docs.toml is malformed (a missing key, a column listed twice, ...)."""


def load(path: Path = SOURCE) -> tuple[Section, ...]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"{path.name}: {exc}") from exc
    try:
        sections = tuple(_section(s) for s in data.get("section", []))
    except (KeyError, TypeError, AttributeError) as exc:  # a key missing or of the wrong kind
        raise SourceError(f"{path.name}: a section or table lacks or misspells {exc}") from exc
    _check(sections)
    return sections


def tables(sections: tuple[Section, ...] | None = None) -> Iterator[Table]:
    for section in load() if sections is None else sections:
        yield from section.tables


def documented(sections: tuple[Section, ...] | None = None) -> dict[str, list[str]]:
    """`schema.table` -> its documented columns, for every schema each table is in."""
    return {
        f"{schema}.{t.name}": [c.name for c in t.columns_in(schema)]
        for t in tables(sections)
        for schema in t.schemas
    }


def _columns(
    entries: list[dict], where: str, registry: tuple[Flag, ...] | None = None
) -> tuple[Column, ...]:
    """The columns of a table; an entry `for_each_flag = true` stands for one column per
    flag of the registry (pipelines/valuesets/flags.csv), in its order, its `meaning` a
    template of the flag's fields ({flag}, {label}, {evidence_window}, {value_sets}): a new
    flag is documented without an edit here (docs/adding-a-flag.md)."""
    try:
        out: list[Column] = []
        for e in entries:
            if e.get("for_each_flag"):
                out.extend(_flag_columns(e, REGISTRY if registry is None else registry))
            else:
                out.append(Column(e["name"], e["type"], e["meaning"].strip()))
        return tuple(out)
    except KeyError as exc:
        raise SourceError(f"{where}: a column lacks {exc}") from exc


def _flag_columns(entry: dict, registry: tuple[Flag, ...]) -> list[Column]:
    return [
        Column(
            f.column,
            entry["type"],
            entry["meaning"]
            .strip()
            .format(
                flag=f.name,
                label=f.label,
                evidence_window=f.evidence_window,
                value_sets=", ".join(f"`{v}`" for v in f.value_sets) or "none",
            ),
        )
        for f in registry
    ]


def _section(data: dict) -> Section:
    return Section(
        heading=data["heading"],
        text=data.get("text", "").strip(),
        tables=tuple(_table(t) for t in data.get("table", [])),
    )


def _table(data: dict) -> Table:
    name = data.get("name", "?")
    schemas = tuple(data.get("schemas", ()))
    if not schemas or set(schemas) - set(SCHEMAS):
        raise SourceError(f"table {name}: schemas must be some of {SCHEMAS}, not {schemas}")
    return Table(
        name=name,
        schemas=schemas,
        description=data.get("description", "").strip(),
        columns=_columns(data.get("columns", []), f"table {name}"),
        mart_only=_columns(data.get("mart_only", []), f"table {name} (mart_only)"),
        release_only=_columns(data.get("release_only", []), f"table {name} (release_only)"),
        status_of=tuple(data.get("status_of", ())),
        notes=data.get("notes", "").strip(),
    )


def _check(sections: tuple[Section, ...]) -> None:
    seen: set[str] = set()
    for t in tables(sections):
        if t.name in seen:
            raise SourceError(f"table {t.name} is listed twice")
        seen.add(t.name)
        if not t.description:
            raise SourceError(f"table {t.name} has no description")
        for schema in t.schemas:
            names = [c.name for c in t.columns_in(schema)]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise SourceError(f"{schema}.{t.name}: columns listed twice: {', '.join(twice)}")
        if (t.mart_only and "mart" not in t.schemas) or (
            (t.release_only or t.status_of) and "release" not in t.schemas
        ):
            raise SourceError(f"table {t.name}: mart_only/release_only without that schema")


# --- the catalog ------------------------------------------------------------------------


def sql_literal(text: str) -> str:
    """`text` as a SQL string literal: COMMENT ON takes no parameters (DuckDB's parser wants
    a literal), so quotes are doubled; DuckDB string literals know no backslash escapes."""
    if "\x00" in text:
        raise ValueError("a comment cannot hold a NUL character")
    return "'" + text.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """`name` as a quoted identifier (double quotes doubled)."""
    if "\x00" in name:
        raise ValueError("an identifier cannot hold a NUL character")
    return '"' + name.replace('"', '""') + '"'


def one_line(text: str) -> str:
    """The catalog holds one line per comment: paragraphs joined with spaces."""
    return " ".join(text.split())


def comment_tables(
    con: duckdb.DuckDBPyConnection, sections: tuple[Section, ...] | None = None
) -> int:
    """COMMENT ON every documented table and column that exists in `mart` and `release`;
    returns how many comments were set. Undocumented tables or columns are left without a
    comment (tests/integration/test_table_docs.py fails on them; a run does not)."""
    if sections is None:
        try:
            sections = load()
        except (OSError, SourceError) as exc:  # a typo in the docs must not fail a run
            log.warning("table comments not set: %s", exc)
            return 0
    present: dict[tuple[str, str], set[str]] = {}
    rows = con.execute(
        "SELECT schema_name, table_name, column_name FROM duckdb_columns()"
        " WHERE database_name = current_database() AND schema_name IN ('mart', 'release')"
    ).fetchall()
    for schema, table, column in rows:
        present.setdefault((schema, table), set()).add(column)
    n = 0
    for t in tables(sections):
        for schema in t.schemas:
            columns = present.get((schema, t.name))
            if columns is None:
                continue
            qualified = f"{sql_identifier(schema)}.{sql_identifier(t.name)}"
            con.execute(f"COMMENT ON TABLE {qualified} IS {sql_literal(one_line(t.description))}")
            n += 1
            for c in t.columns_in(schema):
                if c.name in columns:
                    con.execute(
                        f"COMMENT ON COLUMN {qualified}.{sql_identifier(c.name)}"
                        f" IS {sql_literal(one_line(c.meaning))}"
                    )
                    n += 1
    return n


# --- the page ---------------------------------------------------------------------------


def _column_table(columns: tuple[Column, ...]) -> list[str]:
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {one_line(c.meaning)} |" for c in columns]
    return lines + [""]


def _render_table(t: Table) -> list[str]:
    names = " / ".join(f"`{schema}.{t.name}`" for schema in t.schemas)
    extra = t.release_only + t.status_columns()
    both = "mart" in t.schemas and "release" in t.schemas
    lines = [f"### {names}", "", t.description, ""]
    # A table in one schema lists all its columns at once; one in both lists the shared
    # columns, then what only the mart or only the release copy has.
    lines += _column_table(t.columns if both else t.columns_in(t.schemas[0]))
    if t.notes:
        lines += [t.notes, ""]
    for schema, only in (("mart", t.mart_only), ("release", extra)):
        if both and only:
            noun = "column" if len(only) == 1 else "columns"
            lines += [f"#### {schema.capitalize()}-only {noun} of `{schema}.{t.name}`", ""]
            lines += _column_table(only)
    return lines


def render(sections: tuple[Section, ...] | None = None) -> str:
    """The generated part of docs/data-dictionary.md, markers included."""
    lines = [BEGIN, ""]
    for section in load() if sections is None else sections:
        lines += [f"## {section.heading}", ""]
        if section.text:
            lines += [section.text, ""]
        for t in section.tables:
            lines += _render_table(t)
    return "\n".join(lines + [END]) + "\n"


def page_with(generated: str, page: str) -> str:
    """`page` with its generated part replaced (appended when it has none yet)."""
    if BEGIN not in page or END not in page:
        return page.rstrip("\n") + "\n\n" + generated
    head, rest = page.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + generated.rstrip("\n") + tail


def missing(warehouse: Path, sections: tuple[Section, ...] | None = None) -> list[str]:
    """What a built warehouse and the source disagree on, as lines to act on: a TOML stub
    for each published column without an entry (to paste and fill in), and each entry whose
    table or column no longer exists."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT schema_name || '.' || table_name, column_name, data_type FROM duckdb_columns()"
            " WHERE schema_name IN ('mart', 'release') ORDER BY schema_name, table_name, column_index"
        ).fetchall()
    actual: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        actual.setdefault(table, {})[column] = data_type
    known = documented(sections)
    lines = []
    for table, columns in actual.items():
        stubs = [
            f"  {{ name = '{c}', type = '{data_type}', meaning = '' }},"
            for c, data_type in columns.items()
            if c not in known.get(table, ())
        ]
        if stubs:
            lines += [f"# {table}: no entry" + ("" if table in known else " for the table")]
            lines += stubs
    for table, columns in known.items():
        gone = [c for c in columns if c not in actual.get(table, {})]
        if table not in actual:
            lines.append(f"# {table}: documented, not in the warehouse")
        elif gone:
            lines.append(f"# {table}: documented columns not in the warehouse: {', '.join(gone)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.table_docs",
        description="Render the table sections of docs/data-dictionary.md from pipelines/table_docs.toml.",  # fmt: skip
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the page's generated part")
    action.add_argument("--check", action="store_true", help="fail when the page is out of date")
    action.add_argument(
        "--missing",
        type=Path,
        metavar="WAREHOUSE",
        help="list what a built warehouse has that the source lacks (as TOML to fill in), and the reverse",
    )
    parser.add_argument("--page", type=Path, default=DICTIONARY, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.missing:
        if not args.missing.is_file():
            print(f"{parser.prog}: error: warehouse not found: {args.missing}", file=sys.stderr)
            return 2
        try:
            lines = missing(args.missing)
        except (SourceError, duckdb.Error) as exc:
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            return 2
        print(
            "\n".join(lines) if lines else f"{args.missing}: every table and column is documented"
        )
        return 1 if lines else 0
    try:
        page = args.page.read_text(encoding="utf-8")
        wanted = page_with(render(), page)
    except (OSError, SourceError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.write:
        if wanted != page:
            args.page.write_text(wanted, encoding="utf-8")
        print(f"{args.page}: {'rewritten' if wanted != page else 'up to date'}")
        return 0
    if wanted != page:
        print(
            f"{parser.prog}: error: {args.page} differs from pipelines/table_docs.toml;"
            " run `python -m pipelines.table_docs --write`",
            file=sys.stderr,
        )
        return 1
    print(f"{args.page}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
