"""Ingest: every Synthea layout loads into raw.*, bad rows are quarantined with their line,
reruns are idempotent and incremental, and a failed run leaves the previous tables."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines import ingest, schema
from pipelines.errors import IngestError
from pipelines.ingest import ingest_export
from pipelines.ingest import parse as ingest_parse
from pipelines.ingest import update as ingest_update

CANONICAL_FILES = [f"{t}.csv" for t in schema.TABLES]


def quiet(_message: str) -> None:
    pass


def run(source: Path, warehouse: Path) -> ingest.IngestSummary:
    return ingest_export(source, warehouse, log=quiet)


def copy_export(real: Path, target: Path) -> Path:
    shutil.copytree(real, target)
    return target


def rows(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def sorted_rows(warehouse: Path, sql: str) -> list[tuple]:
    return sorted(rows(warehouse, sql), key=repr)


def data_lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) - 1


def repeated_lines(path: Path) -> int:
    """Data lines that repeat an earlier line of the file exactly (kept once by ingest)."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = data.splitlines()[1:]
    return len(lines) - len(set(lines))


def snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    """Every raw table and the quarantine, sorted (row order is not part of the contract)."""
    tables = [f"raw.{t}" for t in schema.TABLES] + ["meta.quarantine", "meta.source_tables"]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def manifest(warehouse: Path, *, with_time: bool = False) -> list[tuple]:
    cols = "table_name, file_path, size_bytes, sha256, row_count, rows_quarantined"
    cols += ", loaded_at" if with_time else ""
    return rows(warehouse, f"SELECT {cols} FROM meta.ingest_manifest ORDER BY file_path")


def edit_line(path: Path, line: int, edit) -> None:
    """Replace physical line `line` (1-based) of a CSV by edit(old_line_bytes)."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = edit(lines[line - 1])
    path.write_bytes(b"\n".join(lines))


def set_field(index: int, value: bytes):
    def edit(line: bytes) -> bytes:
        fields = line.split(b",")
        fields[index] = value
        return b",".join(fields)

    return edit


def quarantine(warehouse: Path, table: str) -> list[tuple]:
    return rows(
        warehouse,
        "SELECT source_file, source_line, column_name, reason FROM meta.quarantine"
        " WHERE table_name = ? ORDER BY source_line, reason",
        [table],
    )


@pytest.fixture(scope="module")
def ohdsi(real_exports) -> Path:
    return next(p for p in real_exports if p.name.startswith("OHDSI"))


# ---------------------------------------------------------------- real exports


def test_each_real_export_loads_every_row(real_exports, tmp_path):
    for export in real_exports:
        warehouse = tmp_path / f"{export.name}.duckdb"
        summary = run(export, warehouse)
        repeated = {t: repeated_lines(export / f"{t}.csv") for t in schema.TABLES}
        for table in schema.TABLES:
            expected = data_lines(export / f"{table}.csv") - repeated[table]
            assert summary.table_rows[table] == expected, (export.name, table)
            assert rows(warehouse, f"SELECT count(*) FROM raw.{table}") == [(expected,)]
        # exact duplicate lines (Evinett's observations have 14) are kept once, counted
        assert summary.quarantined == {
            t: {"duplicate_record": n} for t, n in repeated.items() if n
        }, export.name
        assert summary.absent_tables == []
        assert "claims.csv" in summary.ignored_files
        files = manifest(warehouse, with_time=True)
        assert len(files) == len(schema.TABLES)
        for table, path, size, sha256, row_count, bad, loaded_at in files:
            data = (export / path).read_bytes()
            assert (path, size, sha256) == (
                f"{table}.csv",
                len(data),
                hashlib.sha256(data).hexdigest(),
            )
            n = repeated[table]
            assert (row_count, bad) == (data_lines(export / path) - n, n)
            assert loaded_at is not None


def test_real_export_columns_are_canonical_and_identifiers_stay_out(real_exports, tmp_path):
    evinett = next(p for p in real_exports if p.name.startswith("Evinett"))
    warehouse = tmp_path / "w.duckdb"
    run(evinett, warehouse)
    columns = rows(
        warehouse,
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'raw' ORDER BY table_name, ordinal_position",
    )
    expected = sorted(
        (t.name, c.name, c.type)
        for t in schema.TABLES.values()
        for c in (*t.columns, *schema.LINEAGE_COLUMNS)
    )
    assert sorted(columns) == expected
    names = {c for _, c, _ in columns}
    assert not names & {"ssn", "first", "last", "address", "drivers", "passport", "lat", "lon"}
    assert rows(warehouse, "SELECT DISTINCT code_system FROM raw.conditions") == [
        ("http://snomed.info/sct",)
    ]  # kept as exported; the SQL layer normalises code systems


def test_missing_system_column_is_null_and_first_rows_have_line_2(ohdsi, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    run(ohdsi, warehouse)
    assert rows(warehouse, "SELECT count(*) FROM raw.conditions WHERE code_system IS NOT NULL") == [
        (0,)
    ]
    first = (ohdsi / "conditions.csv").read_text().splitlines()[1].split(",")
    assert rows(
        warehouse,
        "SELECT CAST(start_date AS VARCHAR), patient_id, code FROM raw.conditions"
        " WHERE source_line = 2",
    ) == [(first[0], first[2], first[4])]


# ---------------------------------------------------------------- malformed rows


@pytest.fixture(scope="module")
def malformed(ohdsi, tmp_path_factory) -> tuple[Path, Path, ingest.IngestSummary]:
    """The OHDSI export with one problem planted per case (MALFORMED_CASES), ingested once."""
    export = copy_export(ohdsi, tmp_path_factory.mktemp("malformed") / "export")
    edit_line(export / "conditions.csv", 5, set_field(0, b"2023-02-30"))  # no such date
    edit_line(export / "conditions.csv", 7, set_field(2, b""))  # missing patient id
    edit_line(export / "conditions.csv", 9, set_field(2, b"no-such-patient"))
    edit_line(export / "encounters.csv", 4, lambda line: line + b",surplus")
    edit_line(export / "encounters.csv", 6, lambda line: b",".join(line.split(b",")[:5]))
    edit_line(export / "medications.csv", 3, set_field(2, b"caf\xe9-patient"))  # Latin-1 byte
    edit_line(export / "medications.csv", 5, set_field(3, b"pay\xe9r"))  # column not loaded
    observations = export / "observations.csv"
    observations.write_bytes(observations.read_bytes().rstrip(b"\n")[:-60])  # cut mid-line
    conditions = export / "conditions.csv"  # cut inside the last value: the line still parses
    conditions.write_bytes(conditions.read_bytes().rstrip(b"\n")[:-4])
    patients = export / "patients.csv"
    patients.write_bytes(patients.read_bytes() + patients.read_bytes().split(b"\n")[1] + b"\n")
    warehouse = tmp_path_factory.mktemp("malformed") / "w.duckdb"
    return export, warehouse, run(export, warehouse)


LAST = -1  # the file's last line
# case -> (table, line, column, reason) of the one quarantined line it plants
MALFORMED_CASES = {
    "unparseable_date": ("conditions", 5, "start_date", "unparseable_date"),
    "missing_patient_id": ("conditions", 7, "patient_id", "missing_value"),
    "unknown_patient": ("conditions", 9, "patient_id", "unknown_patient"),
    "too_many_fields": ("encounters", 4, None, "wrong_field_count"),
    "too_few_fields": ("encounters", 6, None, "wrong_field_count"),
    "non_utf8_bytes": ("medications", 3, "patient_id", "invalid_encoding"),
    "truncated_last_line": ("observations", LAST, None, "truncated_last_line"),
    "truncated_inside_last_value": ("conditions", LAST, None, "truncated_last_line"),
    "duplicate_patient_id": ("patients", LAST, "patient_id", "duplicate_patient_id"),
}


def _expected_line(ohdsi: Path, table: str, line: int) -> int:
    return (
        data_lines(ohdsi / f"{table}.csv") + (2 if table == "patients" else 1)
        if line == LAST
        else line
    )


@pytest.mark.parametrize("case", MALFORMED_CASES)
def test_each_malformed_case_is_quarantined_with_file_line_and_reason(malformed, ohdsi, case):
    _, warehouse, _ = malformed
    table, line, column, reason = MALFORMED_CASES[case]
    line = _expected_line(ohdsi, table, line)
    assert (f"{table}.csv", line, column, reason) in quarantine(warehouse, table)
    raw_line = rows(
        warehouse,
        "SELECT raw_line FROM meta.quarantine WHERE source_file = ? AND source_line = ?",
        [f"{table}.csv", line],
    )
    assert raw_line and raw_line[0][0]  # the offending text is kept for the analyst


def test_nothing_but_the_planted_lines_is_quarantined(malformed, ohdsi):
    _, warehouse, _ = malformed
    expected = sorted(
        (f"{t}.csv", _expected_line(ohdsi, t, line), c, r)
        for t, line, c, r in MALFORMED_CASES.values()
    )
    found = rows(
        warehouse, "SELECT source_file, source_line, column_name, reason FROM meta.quarantine"
    )
    assert sorted(found, key=repr) == sorted(expected, key=repr)


def test_non_utf8_bytes_in_a_column_that_is_not_loaded_are_harmless(malformed):
    _, warehouse, _ = malformed
    assert rows(warehouse, "SELECT count(*) FROM raw.medications WHERE source_line = 5") == [(1,)]


def test_a_truncated_value_never_reaches_raw(malformed, ohdsi):
    _, warehouse, _ = malformed
    last = _expected_line(ohdsi, "conditions", LAST)
    assert rows(warehouse, "SELECT count(*) FROM raw.conditions WHERE source_line = ?", [last]) == [
        (0,)
    ]
    cut = (ohdsi / "conditions.csv").read_text().rstrip("\n").rsplit("\n", 1)[1][:-4]
    assert rows(
        warehouse,
        "SELECT raw_line FROM meta.quarantine WHERE source_file = 'conditions.csv'"
        " AND reason = 'truncated_last_line'",
    ) == [(cut,)]


def test_no_good_row_is_lost(malformed, ohdsi):
    export, warehouse, summary = malformed
    bad = {"conditions": 4, "encounters": 2, "medications": 1, "observations": 1}
    for table in schema.TABLES:
        expected = data_lines(ohdsi / f"{table}.csv") - bad.get(table, 0)
        assert summary.table_rows[table] == expected, table
    assert summary.quarantined["conditions"] == {
        "missing_value": 1,
        "truncated_last_line": 1,
        "unknown_patient": 1,
        "unparseable_date": 1,
    }
    per_file = {r[1]: (r[4], r[5]) for r in manifest(warehouse)}
    assert per_file["conditions.csv"] == (data_lines(ohdsi / "conditions.csv") - 4, 4)
    assert per_file["patients.csv"] == (data_lines(ohdsi / "patients.csv"), 1)


def test_every_loaded_row_points_at_its_line(malformed):
    export, warehouse, _ = malformed
    for table in ("conditions", "encounters", "medications", "patients"):
        lines = (export / f"{table}.csv").read_bytes().decode("utf-8", "replace").split("\n")
        loaded = rows(warehouse, f"SELECT patient_id, source_file, source_line FROM raw.{table}")
        for patient_id, source_file, source_line in loaded:
            assert source_file == f"{table}.csv"
            assert patient_id in lines[source_line - 1].split(","), (table, source_line)


def test_line_numbers_agree_when_many_lines_are_rejected(malformed, tmp_path, monkeypatch):
    export, warehouse, _ = malformed
    monkeypatch.setattr(ingest_parse, "MAX_CASE_OFFSETS", 0)  # use the ASOF join path
    other = tmp_path / "asof.duckdb"
    run(export, other)
    assert snapshot(other) == snapshot(warehouse)


def test_summary_shows_counts_not_row_contents(malformed):
    _, warehouse, summary = malformed
    text = summary.format()
    assert "unparseable_date 1" in text and "truncated_last_line 1" in text
    patient_ids = [r[0] for r in rows(warehouse, "SELECT patient_id FROM raw.patients")]
    assert not any(p in text for p in [*patient_ids, "no-such-patient", "2023-02-30"])
    assert rows(warehouse, "SELECT count(*) FROM meta.quarantine WHERE raw_line IS NULL") == [(0,)]


# ---------------------------------------------------------------- files and layouts


def test_missing_required_file_is_an_error(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    (export / "conditions.csv").unlink()
    with pytest.raises(IngestError, match=r"required file\(s\) missing: conditions\.csv"):
        run(export, tmp_path / "w.duckdb")


def test_missing_required_column_names_file_column_and_header(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    edit_line(export / "encounters.csv", 1, lambda h: h.replace(b",PATIENT,", b",PERSON,"))
    with pytest.raises(IngestError) as error:
        run(export, tmp_path / "w.duckdb")
    message = str(error.value)
    assert "encounters.csv" in message and "patient_id" in message and "PATIENT" in message
    assert "found: Id,START,STOP,PERSON" in message.replace(", ", ",")


@pytest.mark.parametrize("problem", ["no header line", "not a Synthea file"])
def test_unknown_header_is_an_error_that_names_the_file_without_echoing_values(
    ohdsi, tmp_path, problem
):
    export = copy_export(ohdsi, tmp_path / "export")
    conditions = export / "conditions.csv"
    if problem == "no header line":
        conditions.write_bytes(conditions.read_bytes().split(b"\n", 1)[1])
    else:  # e.g. an OMOP table saved under a Synthea name
        edit_line(
            conditions, 1, lambda h: b"condition_occurrence_id,person_id,condition_concept_id"
        )
    with pytest.raises(IngestError) as error:
        run(export, tmp_path / "w.duckdb")
    message = str(error.value)
    assert message.startswith("conditions.csv: unknown header")
    assert "PATIENT" in message and "START" in message and "CODE" in message
    first_row = (ohdsi / "conditions.csv").read_text().splitlines()[1].split(",")
    assert first_row[2] not in message  # a patient id from line 1 is not echoed
    assert not (tmp_path / "w.duckdb").exists()


def test_a_file_without_a_final_newline_whose_last_line_is_complete(ohdsi, tmp_path):
    """Synthea ends every line with a newline, so an unterminated last line is treated as cut:
    it is quarantined (with its text) rather than loaded with a possibly cut value."""
    export = copy_export(ohdsi, tmp_path / "export")
    encounters = export / "encounters.csv"
    encounters.write_bytes(encounters.read_bytes().rstrip(b"\n"))
    summary = run(export, tmp_path / "w.duckdb")
    n = data_lines(ohdsi / "encounters.csv")
    assert summary.table_rows["encounters"] == n - 1
    assert quarantine(tmp_path / "w.duckdb", "encounters") == [
        ("encounters.csv", n + 1, None, "truncated_last_line")
    ]
    # the header-only file without a newline has no row to lose (all of procedures' rows
    # go: a shrink the ingest must be told to accept, docs/operations.md)
    procedures = export / "procedures.csv"
    procedures.write_bytes(procedures.read_bytes().split(b"\n")[0])
    summary = ingest_export(export, tmp_path / "w.duckdb", log=quiet, accept_shrink=True)
    assert summary.table_rows["procedures"] == 0


def test_empty_required_file_is_an_error(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    (export / "patients.csv").write_bytes(b"")
    with pytest.raises(IngestError, match="patients.csv: file is empty"):
        run(export, tmp_path / "w.duckdb")


def test_absent_empty_and_header_only_optional_tables(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    (export / "imaging_studies.csv").unlink()
    (export / "observations.csv").write_bytes(b"")
    procedures = export / "procedures.csv"
    procedures.write_bytes(procedures.read_bytes().split(b"\n")[0] + b"\n")
    warehouse = tmp_path / "w.duckdb"
    summary = run(export, warehouse)
    assert summary.absent_tables == ["observations", "imaging_studies"]
    assert "observations.csv: empty file" in " ".join(summary.notes)
    present = dict(rows(warehouse, "SELECT table_name, is_present FROM meta.source_tables"))
    assert present["imaging_studies"] is False and present["observations"] is False
    assert present["procedures"] is True
    for table in ("imaging_studies", "observations", "procedures"):
        assert rows(warehouse, f"SELECT count(*) FROM raw.{table}") == [(0,)]
    note = rows(
        warehouse, "SELECT note FROM meta.source_tables WHERE table_name = 'imaging_studies'"
    )
    assert "not ascertainable" in note[0][0]


def test_other_files_are_ignored_with_a_note(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    (export / "truth.json").write_text("{}")
    (export / "conditions-copy.csv").write_text("x\n")
    summary = run(export, tmp_path / "w.duckdb")
    assert {"truth.json", "conditions-copy.csv", "allergies.csv"} <= set(summary.ignored_files)
    assert "ignored (not used by the study)" in summary.format()


def _rewrite_csv(path: Path, transform) -> None:
    lines = path.read_text().splitlines()
    rows_ = [line.split(",") for line in lines]
    path.write_text("\n".join(",".join(r) for r in transform(rows_)) + "\n")


def test_other_layouts_load_the_same_rows(ohdsi, tmp_path):
    """Synthea 2.x procedures (DATE only), upper/lower-case headers, reordered and extra columns."""
    export = copy_export(ohdsi, tmp_path / "export")

    def date_only(rs):  # START -> DATE, drop STOP
        rs[0][0] = "DATE"
        return [r[:1] + r[2:] for r in rs]

    def reorder(rs):
        return [[r[3], "extra", *r[:3], *r[4:]] for r in rs]

    _rewrite_csv(export / "procedures.csv", date_only)
    _rewrite_csv(export / "conditions.csv", reorder)
    edit_line(export / "patients.csv", 1, lambda h: h.replace(b"Id,", b"ID,"))
    edit_line(export / "encounters.csv", 1, lambda h: h.lower())
    warehouse, baseline = tmp_path / "w.duckdb", tmp_path / "baseline.duckdb"
    run(export, warehouse)
    run(ohdsi, baseline)
    same = "SELECT * EXCLUDE (stop_at) FROM raw.procedures"
    assert sorted_rows(warehouse, same) == sorted_rows(baseline, same)
    assert rows(warehouse, "SELECT count(*) FROM raw.procedures WHERE stop_at IS NOT NULL") == [
        (0,)
    ]
    for table in ("patients", "encounters", "conditions"):
        sql = f"SELECT * FROM raw.{table}"
        assert sorted_rows(warehouse, sql) == sorted_rows(baseline, sql), table
    assert rows(warehouse, "SELECT count(*) FROM meta.quarantine") == [(0,)]


def test_system_spellings_load_as_exported(real_exports, tmp_path):
    """`SNOMED-CT` (Synthea 2.x-3.2) and `http://snomed.info/sct` (3.3+) both load unchanged;
    pipelines/codesystems.py maps them to one system in the SQL layer."""
    evinett = next(p for p in real_exports if p.name.startswith("Evinett"))
    export = copy_export(evinett, tmp_path / "export")
    conditions = export / "conditions.csv"
    conditions.write_bytes(
        conditions.read_bytes().replace(b",http://snomed.info/sct,", b",SNOMED-CT,")
    )
    warehouse, baseline = tmp_path / "w.duckdb", tmp_path / "baseline.duckdb"
    run(export, warehouse)
    run(evinett, baseline)
    assert rows(warehouse, "SELECT DISTINCT code_system FROM raw.conditions") == [("SNOMED-CT",)]
    sql = "SELECT * EXCLUDE (code_system) FROM raw.conditions"
    assert sorted_rows(warehouse, sql) == sorted_rows(baseline, sql)
    # Evinett's observations repeat 14 lines exactly: kept once, nothing else quarantined
    assert rows(
        warehouse, "SELECT count(*) FROM meta.quarantine WHERE reason <> 'duplicate_record'"
    ) == [(0,)]


def test_split_and_gzip_files(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    lines = (export / "conditions.csv").read_bytes().split(b"\n")
    header, body = lines[0], [line for line in lines[1:] if line]
    (export / "conditions.csv").unlink()
    (export / "conditions-1.csv").write_bytes(b"\n".join([header, *body[:200]]) + b"\n")
    with gzip.open(export / "conditions-2.csv.gz", "wb") as out:
        out.write(b"\n".join([header, *body[200:]]) + b"\n")
    observations = export / "observations.csv"
    with gzip.open(export / "observations.csv.gz", "wb") as out:
        out.write(observations.read_bytes())
    observations.unlink()
    warehouse, baseline = tmp_path / "w.duckdb", tmp_path / "baseline.duckdb"
    summary = run(export, warehouse)
    run(ohdsi, baseline)
    for table in ("conditions", "observations"):
        sql = f"SELECT * EXCLUDE (source_file, source_line) FROM raw.{table}"
        assert sorted_rows(warehouse, sql) == sorted_rows(baseline, sql), table
    assert rows(
        warehouse,
        "SELECT source_file, min(source_line), max(source_line) FROM raw.conditions GROUP BY ALL"
        " ORDER BY 1",
    ) == [("conditions-1.csv", 2, 201), ("conditions-2.csv.gz", 2, len(body) - 199)]
    assert summary.quarantined == {}


def test_two_copies_of_one_part_are_an_error(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    with gzip.open(export / "conditions.csv.gz", "wb") as out:
        out.write((export / "conditions.csv").read_bytes())
    with pytest.raises(IngestError, match="hold the same part of conditions"):
        run(export, tmp_path / "w.duckdb")


# ---------------------------------------------------------------- reruns


def test_ingesting_twice_changes_nothing(ohdsi, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    run(ohdsi, warehouse)
    before, files = snapshot(warehouse), manifest(warehouse, with_time=True)
    again = run(ohdsi, warehouse)
    assert again.files_loaded == [] and len(again.files_skipped) == len(schema.TABLES)
    assert again.tables_updated == []
    assert snapshot(warehouse) == before
    assert manifest(warehouse, with_time=True) == files


def test_changed_new_and_vanished_files(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    warehouse = tmp_path / "w.duckdb"
    run(export, warehouse)
    n = data_lines(export / "conditions.csv")
    conditions = export / "conditions.csv"
    conditions.write_bytes(  # a new line (an exact copy of a line would be kept once)
        conditions.read_bytes() + conditions.read_bytes().split(b"\n")[1] + b" again\n"
    )
    summary = run(export, warehouse)
    assert summary.files_loaded == ["conditions.csv"]
    assert summary.tables_updated == ["conditions"]
    assert summary.table_rows["conditions"] == n + 1

    header = conditions.read_bytes().split(b"\n")[0]
    (export / "conditions-2.csv").write_bytes(
        header + b"\n" + conditions.read_bytes().split(b"\n")[2] + b"\n"
    )
    summary = run(export, warehouse)
    assert summary.files_loaded == ["conditions-2.csv"]
    assert summary.table_rows["conditions"] == n + 2

    (export / "conditions-2.csv").unlink()
    summary = run(export, warehouse)
    assert summary.files_removed == ["conditions-2.csv"] and summary.files_loaded == []
    assert summary.table_rows["conditions"] == n + 1
    assert [r[1] for r in manifest(warehouse) if r[0] == "conditions"] == ["conditions.csv"]


def test_growing_export_ends_like_one_ingest_of_the_final_export(ohdsi, tmp_path):
    """Patients arrive in two parts: records of not-yet-known patients wait in quarantine."""
    final = copy_export(ohdsi, tmp_path / "final")
    lines = (final / "patients.csv").read_bytes().split(b"\n")
    header, body = lines[0], [line for line in lines[1:] if line]
    (final / "patients.csv").unlink()
    (final / "patients-1.csv").write_bytes(b"\n".join([header, *body[:10]]) + b"\n")
    (final / "patients-2.csv").write_bytes(b"\n".join([header, *body[10:]]) + b"\n")

    growing = tmp_path / "growing"
    growing.mkdir()
    for name in ("patients-1.csv", "encounters.csv", "conditions.csv"):
        shutil.copy(final / name, growing / name)
    warehouse = tmp_path / "w.duckdb"
    first = run(growing, warehouse)
    assert first.quarantined["conditions"]["unknown_patient"] > 0
    for name in sorted(p.name for p in final.iterdir()):
        shutil.copy(final / name, growing / name)
    second = run(growing, warehouse)
    assert "encounters.csv" in second.files_skipped

    single = tmp_path / "single.duckdb"
    run(final, single)
    assert snapshot(warehouse) == snapshot(single)
    assert manifest(warehouse) == manifest(single)


def test_failed_ingest_leaves_previous_tables(ohdsi, tmp_path, monkeypatch):
    export = copy_export(ohdsi, tmp_path / "export")
    warehouse = tmp_path / "w.duckdb"
    run(export, warehouse)
    before, files = snapshot(warehouse), manifest(warehouse, with_time=True)

    # 1. an error found before loading
    edit_line(export / "conditions.csv", 1, lambda h: h.replace(b"CODE,", b"KODE,"))
    with pytest.raises(IngestError, match="conditions.csv: required column code"):
        run(export, warehouse)
    assert snapshot(warehouse) == before

    # 2. an exception in the middle of the rebuild, after patients were rebuilt
    shutil.copy(ohdsi / "conditions.csv", export / "conditions.csv")
    patients = export / "patients.csv"
    patients.write_bytes(b"\n".join(patients.read_bytes().split(b"\n")[:-3]) + b"\n")
    real_update = ingest_update.update_table

    def failing_update(con, table, *args):
        if table == "conditions":
            raise RuntimeError("disk full")
        return real_update(con, table, *args)

    monkeypatch.setattr(ingest_update, "update_table", failing_update)
    with pytest.raises(RuntimeError, match="disk full"):
        run(export, warehouse)
    assert snapshot(warehouse) == before
    assert manifest(warehouse, with_time=True) == files

    # 3. the next successful run catches up as if the failed one never happened
    monkeypatch.setattr(ingest_update, "update_table", real_update)
    run(export, warehouse)
    fresh = tmp_path / "fresh.duckdb"
    run(export, fresh)
    assert snapshot(warehouse) == snapshot(fresh)
    assert snapshot(warehouse) != before


def test_ingest_module_imports_neither_prefect_nor_gx():
    code = (
        "import sys, pipelines.ingest; "
        "assert not {'prefect', 'great_expectations'} & set(sys.modules), 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.parametrize(
    ("layout", "split", "gzip_files"), [("3.3", 1, False), ("3.0", 3, False), ("2.x", 2, True)]
)
def test_every_generator_layout_ingests_cleanly(layout, split, gzip_files, tmp_path):
    from pipelines.generator import generate

    result = generate(
        tmp_path / "export", patients=40, seed=11, layout=layout, split=split, gzip=gzip_files
    )
    summary = run(tmp_path / "export", tmp_path / "w.duckdb")
    # like Synthea, the generator writes some condition lines twice: kept once, counted
    repeated = {
        t: sum(repeated_lines(p) for p in (tmp_path / "export").glob(f"{t}[.-]*"))
        for t in schema.TABLES
    }
    assert summary.quarantined == {t: {"duplicate_record": n} for t, n in repeated.items() if n}
    assert summary.table_rows == {t: result.rows[t] - repeated[t] for t in schema.TABLES}
    assert len(summary.files_loaded) == len(schema.TABLES) * split
    assert set(summary.ignored_files) == {"truth.json", "truth_episodes.csv"}


def test_a_corrupt_gzip_file_is_an_error_that_names_it(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    data = gzip.compress((export / "medications.csv").read_bytes())
    (export / "medications.csv").unlink()
    (export / "medications.csv.gz").write_bytes(data[: len(data) // 2])  # cut short
    warehouse = tmp_path / "w.duckdb"
    with pytest.raises(IngestError, match=r"medications\.csv\.gz: cannot be"):
        run(export, warehouse)


def test_crlf_and_byte_order_mark(ohdsi, tmp_path):
    export = copy_export(ohdsi, tmp_path / "export")
    conditions = export / "conditions.csv"
    conditions.write_bytes(b"\xef\xbb\xbf" + conditions.read_bytes().replace(b"\n", b"\r\n"))
    warehouse, baseline = tmp_path / "w.duckdb", tmp_path / "baseline.duckdb"
    run(export, warehouse)
    run(ohdsi, baseline)
    assert snapshot(warehouse)["raw.conditions"] == snapshot(baseline)["raw.conditions"]


def test_a_new_schema_or_parser_version_reloads(ohdsi, tmp_path, monkeypatch):
    warehouse = tmp_path / "w.duckdb"
    run(ohdsi, warehouse)
    before = snapshot(warehouse)
    with duckdb.connect(str(warehouse)) as con:  # a raw table of an older shape
        con.execute("ALTER TABLE raw.conditions DROP COLUMN description")
    summary = run(ohdsi, warehouse)
    # raw.conditions is rebuilt by parsing its file again (no landing copy is kept)
    assert summary.files_loaded == ["conditions.csv"] and summary.tables_updated == ["conditions"]
    assert snapshot(warehouse) == before
    monkeypatch.setattr(ingest_parse, "LANDING_FORMAT", "test")
    summary = run(ohdsi, warehouse)
    assert len(summary.files_loaded) == len(schema.TABLES)
    assert snapshot(warehouse) == before


def test_connections_get_a_memory_budget_from_the_environment(tmp_path, monkeypatch):
    from pipelines import warehouse as wh

    monkeypatch.setenv(wh.MEMORY_LIMIT_ENV, "700MB")
    with wh.open_warehouse(tmp_path / "w.duckdb") as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.startswith("667") or limit.startswith("700")  # DuckDB shows MiB
    monkeypatch.setenv(wh.MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=wh.MEMORY_LIMIT_ENV):
        wh.connect(tmp_path / "w.duckdb")
    monkeypatch.delenv(wh.MEMORY_LIMIT_ENV)
    assert wh.default_memory_limit().endswith("MB")


def test_the_ingest_keeps_a_smaller_budget_unless_the_user_sets_one(ohdsi, tmp_path, monkeypatch):
    """The ingest's DuckDB budget is capped at INGEST_MEMORY_LIMIT_MB (it only caches blocks it
    already wrote beyond that: docs/ingest.md, "Memory budget"); REDFLAGS_MEMORY_LIMIT wins.
    Read from the ingest's own connection, through DuckDB's settings, while it runs."""
    from pipelines import warehouse as wh
    from pipelines.ingest import tables

    seen = []
    real_ensure = tables.ensure_tables

    def ensure_and_read(con):  # the ingest's first statement on its connection
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
        real_ensure(con)

    monkeypatch.setattr("pipelines.ingest.run.ensure_tables", ensure_and_read)
    export = ohdsi
    monkeypatch.delenv(wh.MEMORY_LIMIT_ENV, raising=False)
    run(export, tmp_path / "a.duckdb")
    monkeypatch.setenv(wh.MEMORY_LIMIT_ENV, "3GB")
    run(export, tmp_path / "b.duckdb")
    mib = [float(v.split()[0]) * (1024 if "GiB" in v else 1) for v in seen]
    assert mib[0] <= wh.INGEST_MEMORY_LIMIT_MB < 2000, seen  # 1.5 GiB, not 25% of RAM
    assert mib[1] > 2500, seen  # the user's 3GB (2.7 GiB)
