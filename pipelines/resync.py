"""The slow path of ingest: split one CSV file into records line by line, so that a malformed
record is quarantined alone and parsing resynchronises at the next line that parses.

Ingest parses every file with one DuckDB `read_csv` (fast). When that parse does not account
for every physical line (a stray quote swallows the following lines into one quoted value,
a blank line, a record spanning lines) or the byte scan found a bare CR or a NUL byte
(which stop DuckDB's parser or slip through it), ingest re-reads that file only, here:

- only `\\n` ends a physical line (a `\\r` before it is dropped);
- a line holding a NUL byte or a bare CR is bad on its own (`nul_byte`,
  `bare_carriage_return`); an empty line is blank (DuckDB skips those too);
- a line that opens a quoted value without closing it may continue on the following lines
  (legal CSV) for at most MAX_RECORD_LINES lines, only if none of those lines is a whole
  record by itself (no quote, the header's number of fields), and only if the lines
  together parse as exactly one record of the header's width; otherwise that first line
  alone is bad
  (`malformed_quotes`) and the following lines are read again as new records;
- a record that includes the file's unterminated last line is `truncated_last_line`.

Good records are written re-quoted (Python's csv module) to a clean CSV whose first column
is the record's original line number; DuckDB then parses that file with the same typed
`read_csv`, so types, encodings and field counts are judged exactly as on the fast path.
Bytes that are not UTF-8 are kept as they are (surrogateescape) for DuckDB to judge.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# A quoted value may span at most this many physical lines (Synthea never writes one that
# spans two); beyond that, the opening quote is taken for a stray one.
MAX_RECORD_LINES = 100
# DuckDB's own limit for a line is 2 MB; Python's csv module stops at 128 kB by default.
csv.field_size_limit(1 << 22)


@dataclass(frozen=True)
class Line:
    number: int  # 1-based physical line number (header = 1)
    text: str  # without its line end; undecodable bytes kept as surrogates
    problem: str | None  # nul_byte / bare_carriage_return
    terminated: bool  # ends with \n (only the file's last line may not)


@dataclass(frozen=True)
class Bad:
    line: int
    extra_lines: int  # lines of the record after its first
    reason: str
    text: str  # printable rendering of the record, for meta.quarantine.raw_line


@dataclass
class Split:
    """What the splitter found in one file (the header line excluded)."""

    records: int = 0  # records written to the clean file
    blank_lines: int = 0
    extra_lines: int = 0  # continuation lines of multi-line records (written or bad)
    bad: list[Bad] = field(default_factory=list)


def split_file(path: Path, width: int, clean: Path) -> Split:
    """Write the good records of `path` (a CSV with a header of `width` fields) to `clean`,
    each prefixed by its line number; return the bad lines and the counts."""
    split = Split()
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with (
        opener(path, "rb") as source,
        open(clean, "w", encoding="utf-8", errors="surrogateescape", newline="") as out,
    ):
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["source_line", *(f"c{i}" for i in range(width))])
        for item in records(physical_lines(source), width):
            if isinstance(item, Bad):
                split.bad.append(item)
                split.extra_lines += item.extra_lines
            elif item is None:
                split.blank_lines += 1
            else:
                first, extra, fields = item
                writer.writerow([first, *fields])
                split.records += 1
                split.extra_lines += extra
    return split


def physical_lines(source: Iterable[bytes]) -> Iterator[Line]:
    """The data lines of a binary file (the header skipped), split on \\n only."""
    for number, raw in enumerate(source, start=1):
        if number == 1:
            continue
        terminated = raw.endswith(b"\n")
        body = raw[:-1] if terminated else raw
        body = body[:-1] if body.endswith(b"\r") else body
        problem = "nul_byte" if b"\0" in body else None
        problem = problem or ("bare_carriage_return" if b"\r" in body else None)
        yield Line(number, body.decode("utf-8", "surrogateescape"), problem, terminated)


def records(lines: Iterable[Line], width: int) -> Iterator[tuple[int, int, list[str]] | Bad | None]:
    """(first line, extra lines, fields) for each record, Bad for each bad line, None for each
    blank line, in file order."""
    source, pending = iter(lines), deque()

    def take() -> Line | None:
        return pending.popleft() if pending else next(source, None)

    while (first := take()) is not None:
        if first.problem:
            yield Bad(first.number, 0, first.problem, printable(first.text))
        elif not first.text:
            yield None
        else:
            span, fields, rest = _longest_record(first, take, width)
            pending.extendleft(reversed(rest))
            yield _judge(span, fields)


def _longest_record(first: Line, take, width: int) -> tuple[list[Line], list | None, list]:
    """The lines of the record that starts at `first` and its fields (None when the record is
    malformed), and the lines taken beyond it, to be read again."""
    span = [first]
    while True:
        state, fields = parse(span)
        if state == "complete" and (len(span) == 1 or len(fields) == width):
            return span, fields, []
        following = take() if state == "open" and len(span) < MAX_RECORD_LINES else None
        if following is None or following.problem or _whole_record(following, width):
            return [first], None, span[1:] + ([following] if following else [])
        span.append(following)


def _whole_record(line: Line, width: int) -> bool:
    """A line without quotes that holds the header's number of fields is taken for the next
    record, not for the continuation of a quoted value: so a stray quote never swallows a
    good line, even when a second stray quote would close it further down. (The closing line
    of a legal multi-line value holds the closing quote, so it is never taken for one.)"""
    return '"' not in line.text and line.text.count(",") == width - 1


def _judge(span: list[Line], fields: list[str] | None) -> tuple[int, int, list[str]] | Bad:
    first, extra = span[0], len(span) - 1
    if not span[-1].terminated:  # an interrupted copy: a value in it may be cut
        return Bad(first.number, extra, "truncated_last_line", _text(span))
    if fields is None:
        return Bad(first.number, 0, "malformed_quotes", printable(first.text))
    return first.number, extra, fields


def parse(span: list[Line]) -> tuple[str, list[str] | None]:
    """("complete", fields) when the lines form exactly one CSV record, ("open", None) when a
    quoted value is still open at their end, ("bad", None) otherwise."""
    if len(span) == 1 and '"' not in span[0].text:  # most lines: no quoting to interpret
        return "complete", span[0].text.split(",")
    try:
        rows = list(csv.reader(io.StringIO(_text(span) + "\n", newline=""), strict=True))
    except csv.Error as exc:
        return ("open" if "unexpected end of data" in str(exc) else "bad"), None
    return ("complete", rows[0]) if len(rows) == 1 else ("bad", None)


def _text(span: list[Line]) -> str:
    return "\n".join(line.text for line in span)


def printable(text: str) -> str:
    """The line as the analyst should see it: undecodable bytes as U+FFFD, NUL and CR escaped."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text.replace("\0", "\\x00").replace("\r", "\\r")
