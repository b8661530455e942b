"""Fault matrix of ingest, malformed records (issue 11, items 1, 8 and part of 9): each case
plants one fault in a generated or real export and asserts its outcome class (loaded /
quarantined with reason and line / clear error) and that no good row is lost.

Good rows are judged against a clean ingest of the same export: every line the fault did
not touch must be in raw with the same line number and the same values."""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines import ingest, resync, schema
from pipelines.errors import IngestError
from pipelines.generator import generate
from pipelines.ingest import parse

CSV_FILES = [f"{t}.csv" for t in schema.TABLES]


def quiet(_message: str) -> None:
    pass


def ingest_copy(export: Path, tmp: Path, edit=None, *, log=quiet) -> tuple[Path, Path]:
    """Copy `export` to tmp, apply edit(folder), ingest; returns (folder, warehouse)."""
    folder = tmp / "export"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(export, folder)
    if edit:
        edit(folder)
    warehouse = tmp / "w.duckdb"
    warehouse.unlink(missing_ok=True)
    ingest.ingest_export(folder, warehouse, log=log)
    return folder, warehouse


def query(warehouse: Path, sql: str, params: list | dict | None = None) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def loaded_rows(warehouse: Path) -> dict[tuple[str, int], tuple]:
    """(source_file, source_line) -> the row's canonical values, over every raw table."""
    found = {}
    for table in schema.TABLES:
        columns = ", ".join(c.name for c in schema.TABLES[table].columns)
        for row in query(warehouse, f"SELECT source_file, source_line, {columns} FROM raw.{table}"):
            found[row[0], row[1]] = row[2:]
    return found


def quarantined(warehouse: Path) -> list[tuple]:
    """The quarantined lines, but for exact repeats of an earlier line (duplicate_record):
    the generator, like Synthea, writes some lines twice; the clean fixture checks those."""
    return query(
        warehouse,
        "SELECT DISTINCT source_file, source_line, reason FROM meta.quarantine"
        " WHERE reason <> 'duplicate_record' ORDER BY ALL",
    )


def edit_line(path: Path, line: int, edit) -> None:
    """Replace physical line `line` (1-based) of a file by edit(old_line_bytes)."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = edit(lines[line - 1])
    path.write_bytes(b"\n".join(lines))


def quote_field(name: str, header: bytes):
    """An edit that puts a stray quote at the start of the field `name`."""
    index = header.split(b",").index(name.encode())

    def edit(line: bytes) -> bytes:
        fields = line.split(b",")
        fields[index] = b'"' + fields[index]
        return b",".join(fields)

    return edit


def header_of(path: Path) -> bytes:
    return path.read_bytes().split(b"\n", 1)[0]


def data_lines(path: Path) -> int:
    """Physical lines after the header, counted on the bytes (a final \\n ends the last one)."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1) - 1


def assert_nothing_else_lost(clean: dict, warehouse: Path, touched: set[tuple[str, int]]):
    """Every line of the clean ingest that no fault touched is loaded, with the same values."""
    found = loaded_rows(warehouse)
    lost = {key for key in clean if key not in touched and found.get(key) != clean[key]}
    assert not lost, sorted(lost)[:5]


def assert_every_line_counted(folder: Path, warehouse: Path) -> None:
    """Per file: rows loaded + lines quarantined + blank + continuation lines = data lines."""
    for name in CSV_FILES:
        path = folder / name
        if not path.exists():
            continue
        table = name.removesuffix(".csv")
        loaded = query(warehouse, f"SELECT count(*) FROM raw.{table} WHERE source_file = ?", [name])
        bad = query(
            warehouse,
            "SELECT count(DISTINCT source_line) FROM meta.quarantine WHERE source_file = ?",
            [name],
        )
        other = query(
            warehouse,
            "SELECT blank_lines + continuation_lines FROM landing.files WHERE file_path = ?",
            [name],
        )
        assert loaded[0][0] + bad[0][0] + other[0][0] == data_lines(path), name


# ---------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A small generated export (conditions.csv has well over 101 lines)."""
    folder = tmp_path_factory.mktemp("generated") / "export"
    generate(folder, patients=60, seed=11)
    return folder


@pytest.fixture(scope="module")
def clean(generated, tmp_path_factory) -> dict[tuple[str, int], tuple]:
    """Rows of a clean ingest of the generated export, by (file, line)."""
    _, warehouse = ingest_copy(generated, tmp_path_factory.mktemp("clean"))
    assert not quarantined(warehouse)
    # the only other quarantined lines repeat an earlier line of their file exactly
    for name, line in query(
        warehouse, "SELECT source_file, source_line FROM meta.quarantine ORDER BY ALL"
    ):
        lines = (generated / name).read_bytes().split(b"\n")
        assert lines[line - 1] in lines[1 : line - 1], (name, line)
    return loaded_rows(warehouse)


@pytest.fixture(scope="module")
def ohdsi(real_exports) -> Path:
    return next(p for p in real_exports if p.name.startswith("OHDSI"))


# ---------------------------------------------------------------- stray quotes


def test_a_stray_quote_quarantines_its_line_only(generated, clean, tmp_path):
    def edit(folder):
        path = folder / "conditions.csv"
        edit_line(path, 101, quote_field("DESCRIPTION", header_of(path)))

    folder, warehouse = ingest_copy(generated, tmp_path, edit)
    assert quarantined(warehouse) == [("conditions.csv", 101, "malformed_quotes")]
    raw_line = query(warehouse, "SELECT raw_line FROM meta.quarantine")[0][0]
    assert raw_line == (folder / "conditions.csv").read_text().split("\n")[100]
    assert_nothing_else_lost(clean, warehouse, {("conditions.csv", 101)})
    assert_every_line_counted(folder, warehouse)


def test_two_stray_quotes_quarantine_their_two_lines(generated, clean, tmp_path):
    def edit(folder):
        path = folder / "conditions.csv"
        for line in (101, 140):
            edit_line(path, line, quote_field("DESCRIPTION", header_of(path)))

    folder, warehouse = ingest_copy(generated, tmp_path, edit)
    assert quarantined(warehouse) == [
        ("conditions.csv", 101, "malformed_quotes"),
        ("conditions.csv", 140, "malformed_quotes"),
    ]
    assert_nothing_else_lost(clean, warehouse, {("conditions.csv", 101), ("conditions.csv", 140)})


def test_a_stray_quote_in_a_patients_file_quarantines_that_patient_only(generated, clean, tmp_path):
    def edit(folder):
        path = folder / "patients.csv"
        edit_line(path, 20, quote_field("FIRST", header_of(path)))

    folder, warehouse = ingest_copy(generated, tmp_path, edit)
    bad = [q for q in quarantined(warehouse) if q[2] != "unknown_patient"]
    assert bad == [("patients.csv", 20, "malformed_quotes")]
    patient = clean["patients.csv", 20][0]
    # the patient's records wait for them (cascade); every other record loads
    cascade = {k for k, row in clean.items() if patient in row}
    assert_nothing_else_lost(clean, warehouse, {("patients.csv", 20), *cascade})
    assert_every_line_counted(folder, warehouse)


def test_a_stray_quote_in_a_gzip_file(generated, clean, tmp_path):
    def edit(folder):
        path = folder / "conditions.csv"
        edit_line(path, 30, quote_field("DESCRIPTION", header_of(path)))
        (folder / "conditions.csv.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()

    _, warehouse = ingest_copy(generated, tmp_path, edit)
    assert quarantined(warehouse) == [("conditions.csv.gz", 30, "malformed_quotes")]
    found = query(warehouse, "SELECT count(*) FROM raw.conditions")[0][0]
    assert found == sum(1 for k in clean if k[0] == "conditions.csv") - 1


def test_a_stray_quote_in_a_real_export(ohdsi, tmp_path):
    def edit(folder):
        path = folder / "medications.csv"
        edit_line(path, 10, quote_field("DESCRIPTION", header_of(path)))

    folder, warehouse = ingest_copy(ohdsi, tmp_path, edit)
    assert quarantined(warehouse) == [("medications.csv", 10, "malformed_quotes")]
    loaded = query(warehouse, "SELECT count(*) FROM raw.medications")[0][0]
    assert loaded == data_lines(folder / "medications.csv") - 1
    # the lines after it keep their numbers
    assert query(warehouse, "SELECT min(source_line) FROM raw.medications WHERE source_line > 10")[
        0
    ] == (11,)


def test_a_quoted_value_spanning_lines_loads_and_later_lines_keep_their_numbers(
    generated, clean, tmp_path
):
    """Legal CSV: a quoted DESCRIPTION with a line break; the record counts two lines."""

    def edit(folder):
        path = folder / "conditions.csv"
        index = header_of(path).split(b",").index(b"DESCRIPTION")

        def split_value(line: bytes) -> bytes:
            fields = line.split(b",")
            fields[index] = b'"first half\nsecond half"'
            return b",".join(fields)

        edit_line(path, 50, split_value)

    folder, warehouse = ingest_copy(generated, tmp_path, edit)
    assert quarantined(warehouse) == []
    description = query(warehouse, "SELECT description FROM raw.conditions WHERE source_line = 50")
    assert description == [("first half\nsecond half",)]
    # every later line moved down by one; its values are unchanged
    shifted = {
        (f, line + 1 if f == "conditions.csv" and line > 50 else line): row
        for (f, line), row in clean.items()
    }
    assert_nothing_else_lost(shifted, warehouse, {("conditions.csv", 50)})
    assert_every_line_counted(folder, warehouse)


def test_blank_lines_are_skipped_and_later_lines_keep_their_numbers(generated, clean, tmp_path):
    def edit(folder):
        edit_line(folder / "encounters.csv", 40, lambda line: line + b"\n\n")

    folder, warehouse = ingest_copy(generated, tmp_path, edit)
    assert quarantined(warehouse) == []
    shifted = {
        (f, line + 2 if f == "encounters.csv" and line > 40 else line): row
        for (f, line), row in clean.items()
    }
    assert_nothing_else_lost(shifted, warehouse, set())
    assert query(
        warehouse, "SELECT blank_lines FROM landing.files WHERE file_path = 'encounters.csv'"
    ) == [(2,)]


# ---------------------------------------------------------------- bad bytes


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (b"\r", "bare_carriage_return"),
        (b"\0", "nul_byte"),
        (b"\xff\xfe", "invalid_encoding"),
    ],
)
def test_one_bad_byte_quarantines_its_line_only(generated, clean, tmp_path, fault, reason):
    def edit(folder):
        path = folder / "conditions.csv"
        index = header_of(path).split(b",").index(b"PATIENT")

        def insert(line: bytes) -> bytes:
            fields = line.split(b",")
            fields[index] = fields[index][:5] + fault + fields[index][5:]
            return b",".join(fields)

        edit_line(path, 77, insert)

    folder, warehouse = ingest_copy(generated, tmp_path, edit)
    assert quarantined(warehouse) == [("conditions.csv", 77, reason)]
    assert_nothing_else_lost(clean, warehouse, {("conditions.csv", 77)})
    assert_every_line_counted(folder, warehouse)


def test_a_file_cut_inside_a_quoted_value(generated, clean, tmp_path):
    def edit(folder):
        path = folder / "procedures.csv"
        lines = path.read_bytes().split(b"\n")
        path.write_bytes(b"\n".join(lines[:60]) + b'\n2020-01-01,"cut her')

    folder, warehouse = ingest_copy(generated, tmp_path, edit)
    assert quarantined(warehouse) == [("procedures.csv", 61, "truncated_last_line")]
    kept = {k: v for k, v in clean.items() if k[0] != "procedures.csv" or k[1] <= 60}
    assert_nothing_else_lost(kept, warehouse, set())
    assert query(warehouse, "SELECT count(*) FROM raw.procedures") == [(59,)]


def test_crlf_mixed_with_lf_line_ends_loads_every_line(generated, clean, tmp_path):
    """DuckDB takes the line end of the first lines for the whole file and stops at the
    first other one ("state machine reached an invalid state"); a copy edited on Windows
    can mix them. Every line loads, and a CRLF-only line counts as blank."""

    def edit(folder):
        path = folder / "conditions.csv"
        lines = path.read_bytes().split(b"\n")
        for i in range(40, 60, 3):
            lines[i] += b"\r"
        lines.insert(70, b"\r")  # line 71: blank
        path.write_bytes(b"\n".join(lines))

    folder, warehouse = ingest_copy(generated, tmp_path, edit)
    assert quarantined(warehouse) == []
    shifted = {
        (f, line + 1 if f == "conditions.csv" and line > 70 else line): row
        for (f, line), row in clean.items()
    }
    assert_nothing_else_lost(shifted, warehouse, set())
    assert_every_line_counted(folder, warehouse)


def test_a_parser_error_is_one_line(generated, tmp_path, monkeypatch):
    """Should DuckDB's parser still stop at a file, the error is one line naming the file."""
    line_stats = parse.line_stats

    def hide_stray_bytes(f, digest):  # as if the byte scan missed the bare CR
        newlines, ends_with_newline, _ = line_stats(f, digest)
        return newlines, ends_with_newline, False

    monkeypatch.setattr(parse, "line_stats", hide_stray_bytes)

    def edit(folder):
        edit_line(folder / "conditions.csv", 5, lambda line: line[:9] + b"\r" + line[9:])

    with pytest.raises(IngestError) as error:
        ingest_copy(generated, tmp_path, edit)
    assert str(error.value).startswith("conditions.csv: cannot be read: ")
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- the accounting itself


def test_a_row_lost_between_parse_and_load_fails_the_ingest(generated, tmp_path, monkeypatch):
    """The accounting is checked against the byte scan, not against the parser's own counts:
    a row that vanishes (here: a simulated bug deletes one) is an error naming the file."""
    _, warehouse = ingest_copy(generated, tmp_path)
    before = query(warehouse, "SELECT count(*) FROM raw.conditions")
    number_lines = parse.number_lines

    def lose_a_row(con, f, target):
        number_lines(con, f, target)
        if f.table == "conditions":
            con.execute(f"DELETE FROM {target} WHERE source_line = 42")

    monkeypatch.setattr(parse, "number_lines", lose_a_row)
    changed = tmp_path / "export" / "conditions.csv"
    changed.write_bytes(changed.read_bytes() + changed.read_bytes().split(b"\n")[1] + b"\n")
    with pytest.raises(IngestError, match=r"conditions\.csv: rows do not add up for lines 2-"):
        ingest.ingest_export(tmp_path / "export", warehouse, log=quiet)
    assert query(warehouse, "SELECT count(*) FROM raw.conditions") == before


@pytest.mark.parametrize(
    ("wrong", "message"),
    [("source_line = 43", "1 lines counted twice"), ("source_line = 10**6", "1 outside the file")],
)
def test_a_row_with_a_wrong_line_number_fails_the_ingest(
    generated, tmp_path, monkeypatch, wrong, message
):
    """The counts add up, but row 42 got the number of another line, or of no line at all."""
    number_lines = parse.number_lines

    def misnumber(con, f, target):
        number_lines(con, f, target)
        if f.table == "conditions":
            con.execute(f"UPDATE {target} SET {wrong} WHERE source_line = 42")

    monkeypatch.setattr(parse, "number_lines", misnumber)
    with pytest.raises(IngestError, match=rf"conditions\.csv: rows do not add up .*{message}"):
        ingest_copy(generated, tmp_path)


def _read_with_rejects(con, path: Path, parallel: bool) -> int:
    """Rows + rejected lines of a typed read_csv of a one-DATE-column file."""
    con.execute("DROP TABLE IF EXISTS temp.r_errors")
    con.execute("DROP TABLE IF EXISTS temp.r_scans")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE rows AS SELECT * FROM read_csv($path, header = true,"
        " auto_detect = false, delim = ',', columns = {'d': 'DATE', 'x': 'VARCHAR'},"
        " parallel = $parallel, store_rejects = true, rejects_table = 'r_errors',"
        " rejects_scan = 'r_scans')",
        {"path": str(path), "parallel": parallel},
    )
    rows = con.execute("SELECT count(*) FROM temp.rows").fetchone()[0]
    return rows + con.execute("SELECT count(DISTINCT line) FROM temp.r_errors").fetchone()[0]


def test_one_thread_reads_every_line_of_a_file_with_many_rejects(tmp_path):
    """Why the slow path reads with `parallel = false`: of a file with very many unparseable
    dates, DuckDB 2.0's parallel reader often returns fewer rows + rejected lines than the
    file has (here 5 runs of 6 on 2 threads; timing-dependent, so not asserted); one
    thread returns them all."""
    filler = "x" * 150  # the loss shows in a file of several of the reader's buffers
    lines = [f"2020-01-{1 + k % 28:02d},good {k} {filler}" for k in range(2_000)]
    lines += [f"not a date {k},bad {k} {filler}" for k in range(125_000)]
    path = tmp_path / "many_rejects.csv"
    path.write_text("d,x\n" + "\n".join(lines) + "\n")
    with duckdb.connect() as con:
        con.execute("SET threads = 2")
        assert _read_with_rejects(con, path, parallel=True) <= len(lines)
        assert _read_with_rejects(con, path, parallel=False) == len(lines)


# ---------------------------------------------------------------- links and names


def test_a_link_out_of_the_export_is_refused(generated, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(generated / "procedures.csv", outside / "procedures.csv")

    def link_file(folder):
        (folder / "procedures.csv").unlink()
        (folder / "procedures.csv").symlink_to(outside / "procedures.csv")

    with pytest.raises(IngestError, match=r"procedures\.csv: symbolic link to a path outside"):
        ingest_copy(generated, tmp_path / "a", link_file)

    def link_folder(folder):
        (folder / "more").symlink_to(outside, target_is_directory=True)

    with pytest.raises(IngestError, match=r"more: symbolic link to a path outside"):
        ingest_copy(generated, tmp_path / "b", link_folder)


def test_a_link_inside_the_export_is_followed(generated, clean, tmp_path):
    def link_inside(folder):
        (folder / "originals").mkdir()
        (folder / "procedures.csv").rename(folder / "originals" / "procedures.csv")
        (folder / "procedures.csv").symlink_to(folder / "originals" / "procedures.csv")

    _, warehouse = ingest_copy(generated, tmp_path, link_inside)
    assert loaded_rows(warehouse) == clean


def test_a_file_name_cannot_fake_a_log_line(generated, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fake = "x.csv\nredflags ingest: all checks passed\x1b[2K"
    messages: list[str] = []

    def add_odd_names(folder):
        (folder / fake).write_text("not a Synthea file\n")
        shutil.copy(folder / "procedures.csv", folder / "procedures.csv\n")

    ingest_copy(generated, tmp_path / "a", add_odd_names, log=messages.append)
    lines = "\n".join(messages).split("\n")
    assert "redflags ingest: all checks passed\x1b[2K" not in lines
    assert not any("\x1b" in line for line in lines)
    assert any(repr(fake) in line and repr("procedures.csv\n") in line for line in lines)

    def only_odd_conditions(folder):
        (folder / "conditions.csv").rename(folder / "conditions.csv\n")

    with pytest.raises(IngestError) as error:
        ingest_copy(generated, tmp_path / "b", only_odd_conditions)
    assert "\n" not in str(error.value) and repr("conditions.csv\n") in str(error.value)


# ---------------------------------------------------------------- property


def _corruption(draw_line: bytes, kind: str, position: int, junk: bytes) -> bytes:
    at = position % (len(draw_line) + 1)
    if kind == "crlf":  # this line alone ends with CRLF
        return draw_line + b"\r"
    if kind == "drop_comma":
        commas = [i for i, byte in enumerate(draw_line) if byte == ord(",")]
        if not commas:
            return draw_line + b","
        cut = commas[position % len(commas)]
        return draw_line[:cut] + draw_line[cut + 1 :]
    inserted = {"quote": b'"', "cr": b"\r", "nul": b"\0", "comma": b",", "bytes": junk}[kind]
    return draw_line[:at] + inserted + draw_line[at:]


KINDS = ["quote", "quote", "cr", "crlf", "nul", "comma", "drop_comma", "bytes", "truncate"]
faults = st.lists(
    st.tuples(
        st.sampled_from(CSV_FILES),
        st.integers(min_value=2, max_value=10_000),
        st.sampled_from(KINDS),
        st.integers(min_value=0, max_value=10_000),
        st.binary(min_size=1, max_size=4).filter(lambda b: b"\n" not in b),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=15,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example([("conditions.csv", 101, "quote", 0, b"x"), ("conditions.csv", 140, "quote", 0, b"x")])
@example([("observations.csv", 7, "cr", 3, b"x"), ("medications.csv", 5, "truncate", 9, b"x")])
@given(planted=faults)
def test_random_faults_lose_no_untouched_line(generated, clean, tmp_path_factory, planted):
    """Random stray quotes, bytes, bare CRs, NULs, extra or missing commas and truncation
    in random lines of random files: every line is counted once and every untouched line
    loads as in the clean ingest (records of a patient whose own line broke excepted)."""
    touched: set[tuple[str, int]] = set()

    def corrupt(folder):
        for name, line, kind, position, junk in planted:
            path = folder / name
            lines = path.read_bytes().split(b"\n")
            line = 2 + line % (len(lines) - 2)  # a data line (the last element is b"")
            if kind == "truncate":
                line = max(line, min(10, len(lines) - 1))  # keep a few rows in every table
                cut = lines[line - 1][: position % max(1, len(lines[line - 1]))]
                path.write_bytes(b"\n".join([*lines[: line - 1], cut]))
                touched.update((name, n) for n in range(line, len(lines) + 1))
                continue
            lines[line - 1] = _corruption(lines[line - 1], kind, position, junk)
            path.write_bytes(b"\n".join(lines))
            touched.add((name, line))

    folder, warehouse = ingest_copy(generated, tmp_path_factory.mktemp("random"), corrupt)
    assert_every_line_counted(folder, warehouse)
    broken_patients = {clean[k][0] for k in touched if k[0] == "patients.csv" and k in clean}
    cascade = {k for k, row in clean.items() if broken_patients & set(row)}
    assert_nothing_else_lost(clean, warehouse, touched | cascade)


def test_an_export_path_cannot_fake_a_summary_line(generated, tmp_path):
    folder = tmp_path / "export\nredflags ingest: fake line"
    shutil.copytree(generated, folder)
    summary = ingest.ingest_export(folder, tmp_path / "w.duckdb", log=quiet)
    assert "redflags ingest: fake line" not in summary.format().split("\n")
    assert repr(str(folder)) in summary.format()


# ---------------------------------------------------------------- the slow path on small texts

RESYNC_CASES = {
    # name: (file bytes, loaded lines, {bad line: reason}, blank lines, continuation lines)
    "stray quote": (b'A,B,C\n1,x,y\n2,"x,y\n3,x,y\n', [2, 4], {3: "malformed_quotes"}, 0, 0),
    "two stray quotes": (
        b'A,B,C\n1,"x,y\n2,x,y\n3,"x,y\n4,x,y\n',
        [3, 5],
        {2: "malformed_quotes", 4: "malformed_quotes"},
        0,
        0,
    ),
    "value over two lines": (b'A,B,C\n1,"x\ny",z\n3,x,y\n', [2, 4], {}, 0, 1),
    "value over three lines, one blank": (b'A,B,C\n1,"x\n\ny",z\n3,x,y\n', [2, 5], {}, 0, 2),
    "blank line": (b"A,B,C\n1,x,y\n\n3,x,y\n", [2, 4], {}, 1, 0),
    "text after a closing quote": (b'A,B,C\n1,"x"y,z\n3,x,y\n', [3], {2: "malformed_quotes"}, 0, 0),
    "bare CR": (b"A,B,C\n1,x\ry,z\n3,x,y\n", [3], {2: "bare_carriage_return"}, 0, 0),
    "NUL": (b"A,B,C\n1,x\0y,z\n3,x,y\n", [3], {2: "nul_byte"}, 0, 0),
    "CRLF": (b"A,B,C\r\n1,x,y\r\n2,x,y\r\n", [2, 3], {}, 0, 0),
    "cut inside a quote": (b'A,B,C\n1,x,y\n2,"x', [2], {3: "truncated_last_line"}, 0, 0),
    "cut after a value": (b"A,B,C\n1,x,y\n2,x,y", [2], {3: "truncated_last_line"}, 0, 0),
}


@pytest.mark.parametrize("case", RESYNC_CASES)
def test_the_slow_path_resynchronises_at_the_next_line(tmp_path, case):
    text, loaded, bad, blank, continued = RESYNC_CASES[case]

    (tmp_path / "in.csv").write_bytes(text)
    split = resync.split_file(tmp_path / "in.csv", 3, tmp_path / "clean.csv")
    clean = (tmp_path / "clean.csv").read_text().split("\n")[1:]
    assert [int(line.split(",")[0]) for line in clean if line[:1].isdigit()] == loaded
    assert {b.line: b.reason for b in split.bad} == bad
    assert (split.blank_lines, split.extra_lines) == (blank, continued)


good_line = st.lists(st.text("abc 019-:", min_size=0, max_size=6), min_size=3, max_size=3).map(
    lambda fields: ",".join(fields).encode()
)
junk_line = st.binary(max_size=12).filter(lambda b: b"\n" not in b) | st.sampled_from(
    [b'"', b'1,"x,y', b'"a""b",c,d', b'x,"y', b'z",1,2', b"\r", b"a\0b,c,d"]
)


@settings(max_examples=200, deadline=None, derandomize=bool(os.environ.get("CI")))
@given(
    lines=st.lists(st.tuples(st.booleans(), good_line, junk_line), min_size=1, max_size=30),
    cut=st.booleans(),
)
def test_the_slow_path_never_swallows_a_good_line(tmp_path_factory, lines, cut):
    """Any mix of good lines and junk: every line is counted once, and every good line that
    is not the file's cut last line is loaded as a record of its own."""
    text = [b"A,B,C", *(good if is_good else junk for is_good, good, junk in lines)]
    data = b"\n".join(text) + (b"" if cut else b"\n")
    folder = tmp_path_factory.mktemp("split")
    (folder / "in.csv").write_bytes(data)
    split = resync.split_file(folder / "in.csv", 3, folder / "clean.csv")
    lines_read = data.count(b"\n") + (0 if data.endswith(b"\n") else 1) - 1
    assert split.records + len(split.bad) + split.blank_lines + split.extra_lines == lines_read
    with open(folder / "clean.csv", newline="", errors="surrogateescape") as handle:
        written = {int(row[0]): row[1:] for row in list(csv.reader(handle))[1:]}
    for number, (is_good, good, _) in enumerate(lines, start=2):
        if is_good and good and not (cut and number == len(lines) + 1):
            assert written.get(number) == good.decode().split(","), number
