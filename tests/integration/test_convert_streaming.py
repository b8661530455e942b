"""The layout converters stream (pipelines/generator/convert.py, docs/benchmark.md).

A 100,000-patient conversion once spilled 17 GB without writing a byte: each record's code
system was a correlated subquery (decorrelated into a join that materialised every row) and
each OMOP table was numbered and sorted in full before the write. Every COPY the converters
run must now be a plan with no sort, no window and no decorrelated (delim) join: the rows
stream from the raw tables through hash joins with small tables to the file."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from pipelines.generator import convert as cv
from pipelines.generator import generate
from pipelines.ingest import ingest_export

# plan operators that hold every row of their input before the first row leaves: a sort, a
# window, a materialised CTE (how DuckDB decorrelates a correlated subquery), a delim join
BLOCKING = {"Order By", "Window", "CTE", "CTE Scan", "Delim Join", "Left Delim Join"}


def operators(plan: str) -> list[str]:
    """The operator names of an EXPLAIN box drawing (`╭─ Hash Join ───╮`)."""
    return re.findall(r"╭─ ([A-Za-z_ ]+?) ─", plan)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("convert_streaming")
    generate(root / "synthea", patients=300, seed=11, progress=lambda _: None)
    ingest_export(root / "synthea", root / "scratch.duckdb", log=lambda _: None)
    return root


def copy_plans(scratch: Path, fmt: str) -> dict[str, str]:
    """{COPY statement: its physical plan} of one converter run on a real warehouse."""
    con = duckdb.connect(str(scratch / "scratch.duckdb"))
    try:
        con.execute("CALL enable_logging('QueryLog')")
        cv._code_systems(con)
        out = scratch / fmt
        out.mkdir(exist_ok=True)
        {"omop": cv.write_omop, "fhir": cv.write_fhir}[fmt](con, out)
        copies = [
            sql
            for (sql,) in con.execute(
                "SELECT message FROM duckdb_logs WHERE type = 'QueryLog' AND message ILIKE 'COPY%'"
            ).fetchall()
        ]
        assert len(list(out.iterdir())) == len(copies)  # one COPY per file written
        return {
            sql: "\n".join(
                row[1]
                for row in con.execute("EXPLAIN " + sql, {"path": str(scratch / "x")}).fetchall()
            )
            for sql in copies
        }
    finally:
        con.close()


@pytest.mark.parametrize("fmt", ["omop", "fhir"])
def test_every_converter_copy_streams_without_sorting_or_materialising(scratch, fmt):
    plans = copy_plans(scratch, fmt)
    assert len(plans) == {"omop": 9, "fhir": 7}[fmt]
    blocked = {
        " ".join(sql.split())[:160]: sorted(BLOCKING & set(operators(plan)))
        for sql, plan in plans.items()
        if BLOCKING & set(operators(plan))
    }
    assert not blocked, blocked
    assert all("Seq Scan" in operators(plan) for plan in plans.values())  # the parse works


def test_converting_both_layouts_from_one_load_gives_what_each_conversion_gives(scratch):
    both = {"omop": scratch / "both-omop", "fhir": scratch / "both-fhir"}
    cv.convert_layouts(scratch / "synthea", both)
    for fmt, folder in both.items():
        alone = scratch / f"alone-{fmt}"
        cv.convert(scratch / "synthea", alone, fmt)
        names = sorted(p.name for p in alone.iterdir())
        assert names == sorted(p.name for p in folder.iterdir())
        assert "truth.json" in names and len(names) == {"omop": 11, "fhir": 9}[fmt]
        for name in names:
            want = sorted((alone / name).read_text().splitlines())
            assert sorted((folder / name).read_text().splitlines()) == want, name
