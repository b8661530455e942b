"""Append chunks to the export's CSV files: one file per table, or `name-1.csv` .. `name-K.csv`.

Parts split the patients into K contiguous ranges (a patient's rows all land in one
part, as Synthea's split exports do); every part file has the header, even when a
table has no rows in it. Text is never quoted (the generator never writes a comma,
quote or line break inside a value; Arrow raises if one slips through). Gzip output
is deterministic (no timestamp in the header).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.generator.layouts import LAYOUTS, TABLES

TRUTH_FILES = ("truth.json", "truth_episodes.csv")
_OPTIONS = pacsv.WriteOptions(
    include_header=True, quoting_style="none", quoting_header="none", batch_size=65_536
)


def file_name(table: str, part: int, split: int, gzip: bool) -> str:
    stem = table if split == 1 else f"{table}-{part + 1}"
    return f"{stem}.csv.gz" if gzip else f"{stem}.csv"


def remove_previous_export(out_dir: Path) -> list[str]:
    """Delete files a previous run may have left (same names), so no stale part survives."""
    pattern = re.compile(rf"^({'|'.join(TABLES)})(-\d+)?\.csv(\.gz)?$")
    removed = []
    for path in sorted(out_dir.iterdir()) if out_dir.is_dir() else ():
        if path.is_file() and (pattern.match(path.name) or path.name in TRUTH_FILES):
            path.unlink()
            removed.append(path.name)
    return removed


class ExportWriter:
    """Streams tables to disk part by part; only the current part of each table is open."""

    def __init__(self, out_dir: Path, layout: str, patients: int, split: int, gzip: bool) -> None:
        self.out_dir, self.layout, self.split, self.gzip = out_dir, layout, split, gzip
        # first patient (global number) of each part, and one past the last
        self.bounds = -(-np.arange(split + 1) * patients // split)
        self.columns = {t: LAYOUTS[layout][t] for t in TABLES}
        self.schemas: dict[
            str, pa.Schema
        ] = {}  # each table's column types, fixed by its first chunk
        self._open: dict[str, tuple[int, pa.NativeFile, pacsv.CSVWriter]] = {}
        self._next_part = dict.fromkeys(TABLES, 0)
        self.rows = dict.fromkeys(TABLES, 0)
        self.files: dict[str, list[str]] = {t: [] for t in TABLES}

    def write(self, table: str, data: pa.Table, patient: np.ndarray) -> None:
        """Rows of one chunk, sorted by global patient number (text or dictionary columns)."""
        if data.column_names != list(self.columns[table]):
            raise ValueError(f"{table}: columns {data.column_names} are not the layout's")
        schema = self.schemas.setdefault(table, data.schema)
        if data.schema != schema:
            data = data.cast(schema)
        part_of_row = np.searchsorted(self.bounds, patient, side="right") - 1
        for part in np.unique(part_of_row):
            start, stop = np.searchsorted(part_of_row, [part, part + 1])
            self._writer(table, int(part)).write_table(data.slice(start, stop - start))
        self.rows[table] += data.num_rows

    def _writer(self, table: str, part: int) -> pacsv.CSVWriter:
        current = self._open.get(table)
        if current is not None and current[0] == part:
            return current[2]
        while self._next_part[table] <= part:
            self._start_part(table, self._next_part[table])
            self._next_part[table] += 1
        return self._open[table][2]

    def _start_part(self, table: str, part: int) -> None:
        self._close(table)
        name = file_name(table, part, self.split, self.gzip)
        path = self.out_dir / name
        sink = (
            pa.CompressedOutputStream(str(path), "gzip")
            if self.gzip
            else pa.OSFile(str(path), "wb")
        )
        schema = self.schemas.get(table) or pa.schema(
            [(c, pa.string()) for c in self.columns[table]]
        )
        self._open[table] = (part, sink, pacsv.CSVWriter(sink, schema, write_options=_OPTIONS))
        self.files[table].append(name)

    def _close(self, table: str) -> None:
        current = self._open.pop(table, None)
        if current is not None:
            current[2].close()
            current[1].close()

    def close(self) -> dict[str, list[str]]:
        """Finish every table (header-only files for parts without rows); returns the file names."""
        for table in TABLES:
            while self._next_part[table] < self.split:
                self._start_part(table, self._next_part[table])
                self._next_part[table] += 1
            self._close(table)
        return self.files
