"""Discovery: what a Synthea CSV export folder holds, before anything is read or written.

Owns the export's file names (`name.csv`, `name-n.csv`, `.csv.gz`), their headers mapped to
the canonical columns of pipelines/schema.py, and the refusals made before the warehouse is
opened (a missing or empty required file, a missing required column, a link out of the
folder). Also `display_name`, how a file name may appear in a log line.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import schema
from pipelines.errors import IngestError

# \Z, not $: `$` also matches before a final newline ("conditions.csv\n")
FILE_NAME = re.compile(r"^(?P<stem>[A-Za-z_]+?)(?:-(?P<part>\d+))?\.csv(?P<gz>\.gz)?\Z", re.I)


@dataclass(frozen=True)
class SourceFile:
    """One CSV file of a canonical table in the export."""

    path: Path
    relative: str  # path relative to the export folder, POSIX style
    table: str
    part: int  # 0 for `name.csv`, n for `name-n.csv`
    compressed: bool
    header: tuple[str, ...]
    positions: tuple[int | None, ...]  # header position of each canonical column, or None


@dataclass
class Export:
    """What an export folder holds, before anything is loaded."""

    files: list[SourceFile]
    ignored: list[str]
    empty_optional: dict[str, list[str]]  # table -> 0-byte files treated as absent
    notes: list[str] = field(default_factory=list)

    def tables_present(self) -> set[str]:
        return {f.table for f in self.files}


def discover_export(source: Path) -> Export:
    """Classify the export's files and check every canonical file's header.

    Raises IngestError for a missing or empty required file, a missing required column and
    a symbolic link that leads out of the export folder, before anything is written."""
    source = Path(source)
    if not source.is_dir():
        raise IngestError(f"export folder not found: {display_name(str(source))}")
    files, ignored, empty = [], [], {}
    for path in sorted(source.iterdir()):
        _refuse_link_out_of(source, path)
        match = FILE_NAME.match(path.name) if path.is_file() else None
        table = match["stem"].lower() if match else None
        if table not in schema.TABLES:
            ignored.append(display_name(path.name) + ("/" if path.is_dir() else ""))
            continue
        header = read_header(path)
        if not header:
            if schema.TABLES[table].required:
                raise IngestError(f"{path.name}: file is empty; {table} is a required table")
            empty.setdefault(table, []).append(path.name)
            continue
        part, compressed = int(match["part"] or 0), bool(match["gz"])
        positions = map_header(table, header, path.name)
        files.append(SourceFile(path, path.name, table, part, compressed, header, positions))
    missing = [t for t in schema.REQUIRED_TABLES if t not in {f.table for f in files}]
    if missing:
        found = ", ".join(display_name(p.name) for p in sorted(source.iterdir()))
        raise IngestError(
            f"{display_name(str(source))}: required file(s) missing:"
            f" {', '.join(t + '.csv' for t in missing)} (found: {found or 'nothing'})"
        )
    files.sort(key=lambda f: (f.table, f.part, f.relative))
    _check_no_duplicate_parts(files)
    notes = [
        f"{name}: empty file, {table} treated as absent unless another part has rows"
        for table, names in empty.items()
        for name in names
    ]
    return Export(files, ignored, empty, notes)


def display_name(name: str) -> str:
    """A file name or path as it may appear in a log line or message: as is when every
    character is printable, else Python's repr (escaped, in quotes), so that a name holding a
    newline or a terminal control sequence cannot fake a log line."""
    return name if name.isprintable() else repr(name)


def _refuse_link_out_of(source: Path, path: Path) -> None:
    """A symbolic link (to a file or a folder) whose target lies outside the export folder
    is refused: an export is one folder, and following the link would load (or list) files
    the user did not hand over."""
    if not path.is_symlink():
        return
    target = path.resolve()
    if not target.is_relative_to(source.resolve()):
        raise IngestError(
            f"{display_name(path.name)}: symbolic link to a path outside the export folder;"
            " copy the file into the export instead"
        )


def _check_no_duplicate_parts(files: list[SourceFile]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for f in files:
        other = seen.setdefault((f.table, f.part), f.relative)
        if other != f.relative:
            raise IngestError(
                f"{other} and {f.relative} hold the same part of {f.table}; keep only one of them"
            )


def read_header(path: Path) -> tuple[str, ...]:
    """Column names on the first line of a CSV or CSV.GZ file (empty for an empty file)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            first = handle.readline(1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"{path.name}: cannot be read: {exc}") from exc
    text = first.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if not text.strip():
        return ()
    try:  # a binary file (NUL bytes) makes the csv module raise, not return garbage
        return tuple(name.strip() for name in next(csv.reader([text])))
    except csv.Error as exc:
        raise IngestError(f"{path.name}: first line is not a CSV header ({exc})") from exc


def map_header(table: str, header: tuple[str, ...], file_name: str) -> tuple[int | None, ...]:
    """Header position of each canonical column (case-insensitive, first alias that matches)."""
    lowered = [name.lower() for name in header]
    known = {s.lower() for column in schema.TABLES[table].columns for s in column.sources}
    if not known & set(lowered):
        # no header line (data on line 1) or not a Synthea file: do not echo the line's values
        raise IngestError(
            f"{file_name}: unknown header: none of its {len(header)} fields is a Synthea"
            f" column of {table} (expected e.g. {', '.join(_example_header(table))}); is the"
            " header line missing, or is this not a Synthea CSV export?"
        )
    positions = []
    for column in schema.TABLES[table].columns:
        found = [lowered.index(s.lower()) for s in column.sources if s.lower() in lowered]
        if not found and column.required:
            raise IngestError(
                f"{file_name}: required column {column.name} missing (expected a header named "
                f"{' or '.join(column.sources)}; found: {', '.join(header)})"
            )
        positions.append(found[0] if found else None)
    return tuple(positions)


def _example_header(table: str) -> list[str]:
    return [c.sources[0] for c in schema.TABLES[table].columns if c.required]
