"""What the ingest reads and copies: every file is parsed by one read_csv, and the only table
that ever holds all of a file's rows before raw is the one the parse creates (the staging
table, or the patients' landing table). Issue 16: from 2026-12-07 every checked row was copied
into a second temporary table (temp.ingest_checked) before raw, which doubled the ingest's CPU
and held each file twice in memory (6.3 GB at 100k patients, at the memory limit). A timing
would not catch that again on a small export; counting the copies does."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import duckdb
from recording import wrap_ingest_connections

from pipelines import schema
from pipelines.generator import generate
from pipelines.ingest import ingest_export

CREATED = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+)?TABLE\s+(\S+)\s+AS\b", re.I)


class RecordingConnection:
    """A real DuckDB connection that notes every read_csv (by the file it reads) and the rows
    of every table created from a query, with the file parsed last before it."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self.reads: Counter[str] = Counter()
        self.created: list[tuple[str, str, int]] = []  # (file parsed last, table, rows)
        self._file = ""

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def execute(self, sql: str, params=None):
        result = self._con.execute(sql, params) if params is not None else self._con.execute(sql)
        if "read_csv(" in sql and isinstance(params, dict) and "path" in params:
            self._file = Path(params["path"]).name
            self.reads[self._file] += 1
        if match := CREATED.match(sql):
            table = match[1]
            rows = self._con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            self.created.append((self._file, table, rows))
        return result


def test_each_file_is_read_once_and_its_rows_copied_once_before_raw(tmp_path, monkeypatch):
    export = tmp_path / "export"
    generate(export, patients=60, seed=7)
    conditions = export / "conditions.csv"
    lines = conditions.read_bytes().splitlines(keepends=True)
    conditions.write_bytes(b"".join(lines + lines[1:4]))  # 3 duplicate_record rows to set apart
    recorders = wrap_ingest_connections(monkeypatch, RecordingConnection)
    warehouse = tmp_path / "w.duckdb"
    summary = ingest_export(export, warehouse, log=lambda _m: None)
    (rec,) = recorders

    data_files = sorted(p.name for p in export.glob("*.csv") if p.stem in schema.TABLES)
    assert sorted(rec.reads) == data_files
    assert set(rec.reads.values()) == {1}, rec.reads  # each file parsed once (fast path)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        duplicates = con.execute(
            "SELECT count(*) FROM meta.quarantine WHERE reason = 'duplicate_record'"
            " AND source_file = 'conditions.csv'"
        ).fetchone()[0]
    assert duplicates >= 3
    for name in data_files:
        if name == "patients.csv":  # landed once; its ids are compared in small temp tables
            continue
        rows = summary.table_rows[Path(name).stem]
        assert rows >= 40, (name, rows)  # big enough that a copy of them stands out
        whole = [(table, n) for file, table, n in rec.created if file == name and n >= rows]
        # one table holds the whole file: the one the parse created; the checks copy out only
        # the rows that fail (here the duplicate conditions)
        assert len(whole) == 1, (name, rows, whole)
        assert whole[0][0] == "raw.ingest_stage", whole
