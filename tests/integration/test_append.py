"""A growing export: files that only grew by appended rows have their new rows parsed alone
(pipelines/ingest/append.py), with raw, meta and every published output identical to a
full load; anything else re-reads the file whole.

Real DuckDB warehouses, a generated export grown by `pipelines.generator.grow.grow_export`,
with bad rows, a duplicate and records of existing and unknown patients appended.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest
from snapshots import snapshot as published

from pipelines import schema
from pipelines.errors import IngestError
from pipelines.generator import generate
from pipelines.generator.grow import grow_export
from pipelines.ingest import digests, ingest_export

DIRECT = [t for t in schema.TABLES if t != "patients"]


def raw_and_meta(warehouse: Path) -> dict[str, list[tuple]]:
    """raw.*, meta.quarantine, the manifest and landing.files, without load times, sorted."""
    tables = [f"raw.{t}" for t in schema.TABLES] + ["meta.quarantine", "landing.rejects"]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        out = {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
        out["manifest"] = con.execute(
            "SELECT * EXCLUDE (loaded_at) FROM meta.ingest_manifest ORDER BY file_path"
        ).fetchall()
        out["files"] = con.execute(
            "SELECT * EXCLUDE (loaded_at, landing_table) FROM landing.files ORDER BY file_path"
        ).fetchall()
        out["source_tables"] = con.execute(
            "SELECT * FROM meta.source_tables ORDER BY ALL"
        ).fetchall()
    return out


def direct_state(state: Path | dict) -> dict[str, list[tuple]]:
    """raw_and_meta without the patients landing cache (landing.files rows and rejects of
    patients files), which a failed ingest may leave ahead of raw by design: the next
    ingest compares it with the manifest and catches up (docs/ingest.md)."""
    state = raw_and_meta(state) if isinstance(state, Path) else state
    out = dict(state)
    out["files"] = [r for r in state["files"] if r[1] != "patients"]
    out["landing.rejects"] = [r for r in state["landing.rejects"] if r[0] != "patients"]
    return out


def query(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def append_line(path: Path, edit) -> int:
    """Append a copy of the file's last line changed by `edit(fields, names)`; its line."""
    header, *_, last = path.read_bytes().rstrip(b"\n").split(b"\n")
    names = [n.lower() for n in header.decode().split(",")]
    fields = last.split(b",")
    edit(fields, names)
    with open(path, "ab") as handle:
        handle.write(b",".join(fields) + b"\n")
    return lines(path)


def set_field(name: str, value: bytes):
    def edit(fields: list[bytes], names: list[str]) -> None:
        fields[names.index(name)] = value

    return edit


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("append") / "base"
    generate(folder, patients=300, seed=5)
    return folder


@pytest.fixture(scope="module")
def grown(base, tmp_path_factory) -> tuple[Path, dict, dict[str, int]]:
    """The base grown by 5% of patients (and 3 encounters of existing patients), then bad
    rows, a duplicate and records of existing and unknown patients appended: (folder, counts,
    line of each planted row)."""
    folder = tmp_path_factory.mktemp("append") / "grown"
    counts = grow_export(base, folder, fraction=0.05, seed=9)
    existing = (base / "patients.csv").read_bytes().split(b"\n")[1].split(b",")[0]

    def seen_again(fields: list[bytes], names: list[str]) -> None:
        fields[names.index("patient")] = existing
        fields[names.index("description")] = b"Seen again"

    planted = {
        # the condition of an existing patient, then a bad date (a DuckDB reject) after it
        "existing_condition": append_line(folder / "conditions.csv", seen_again),
        "bad_date": append_line(folder / "conditions.csv", set_field("start", b"2023-02-30")),
        "no_patient": append_line(folder / "observations.csv", set_field("patient", b"")),
        "short_line": append_line(folder / "encounters.csv", lambda f, _: f.pop()),
        "unknown_patient": append_line(
            folder / "medications.csv", set_field("patient", b"no-such-patient")
        ),
    }
    # an exact duplicate of a new line, among the new lines
    with open(folder / "procedures.csv", "rb+") as handle:
        last = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        handle.write(last + b"\n")
    planted["duplicate"] = lines(folder / "procedures.csv")
    return folder, counts, planted


def live_copy(source: Path, folder: Path) -> Path:
    """Copy every file of `source` into `folder` (an export folder a run reads)."""
    folder.mkdir(exist_ok=True)
    for path in source.iterdir():
        shutil.copyfile(path, folder / path.name)
    return folder


def settle(folder: Path, hours: int) -> None:
    """Every file's mtime `hours` ago (not modified just before a run reads it)."""
    past = time.time_ns() - hours * 3600 * 10**9
    for path in folder.iterdir():
        os.utime(path, ns=(past, past))


def spy_on_reads(monkeypatch) -> list[str]:
    """The names of the files the digests actually read from now on (a spy on the reader)."""
    reads: list[str] = []
    read = digests._read_digest
    monkeypatch.setattr(
        digests,
        "_read_digest",
        lambda path, prefix=0: reads.append(path.name) or read(path, prefix),
    )
    return reads


def test_grow_export_appends_new_patients_and_keeps_the_base(base, grown):
    folder, counts, _ = grown
    assert counts["patients_added"] == 15
    for path in base.iterdir():
        old, new = path.read_bytes(), (folder / path.name).read_bytes()
        assert new.startswith(old)  # the old bytes are kept as they were
        if path.name.endswith(".csv") and not path.name.startswith("truth"):
            assert new.count(b"\n") > old.count(b"\n")
    assert counts["rows_added"]["patients"] == 15
    assert counts["rows_added"]["encounters"] > counts["existing_patient_encounters"]
    new_ids = {
        line.split(b",")[0]
        for line in (folder / "patients.csv").read_bytes().split(b"\n")[301:]
        if line
    }
    old_ids = {line.split(b",")[0] for line in (base / "patients.csv").read_bytes().split(b"\n")}
    assert len(new_ids) == 15 and not new_ids & old_ids


def test_a_grown_export_parses_only_its_new_rows_and_equals_a_full_load(base, grown, tmp_path):
    folder, _, planted = grown
    live, warehouse = live_copy(base, tmp_path / "live"), tmp_path / "incremental.duckdb"
    ingest_export(live, warehouse, log=lambda _: None)
    old_lines = {t: lines(base / f"{t}.csv") for t in schema.TABLES}
    live_copy(folder, live)
    said: list[str] = []
    ingest_export(live, warehouse, log=said.append)
    fresh = tmp_path / "fresh.duckdb"
    ingest_export(folder, fresh, log=lambda _: None)

    # only the new lines of each grown file were parsed, numbered as in the whole file
    for table in DIRECT:
        first, last = old_lines[table] + 1, lines(folder / f"{table}.csv")
        assert any(
            m.startswith(f"{table}.csv: appended lines {first}-{last} parsed alone") for m in said
        ), said
    assert raw_and_meta(warehouse) == raw_and_meta(fresh)

    quarantined = {
        (file, line): reason
        for file, line, reason in query(
            warehouse, "SELECT source_file, source_line, reason FROM meta.quarantine"
        )
    }
    assert quarantined[("conditions.csv", planted["bad_date"])] == "unparseable_date"
    assert quarantined[("observations.csv", planted["no_patient"])] == "missing_value"
    assert quarantined[("encounters.csv", planted["short_line"])] == "wrong_field_count"
    assert quarantined[("medications.csv", planted["unknown_patient"])] == "unknown_patient"
    assert quarantined[("procedures.csv", planted["duplicate"])] == "duplicate_record"
    # the condition of an existing patient and a new patient's rows were loaded, each at
    # its own line
    of_old_patients = query(
        warehouse,
        "SELECT c.source_line, c.description FROM raw.conditions c"
        " JOIN raw.patients p USING (patient_id) WHERE c.source_line > ? AND p.source_line <= 301",
        [old_lines["conditions"]],
    )
    assert of_old_patients == [(planted["existing_condition"], "Seen again")]
    assert (
        query(
            warehouse,
            "SELECT count(*) FROM raw.conditions c JOIN raw.patients p USING (patient_id)"
            " WHERE p.source_line > 301",
        )[0][0]
        > 0
    )
    # rows read = rows loaded + lines quarantined, file by file
    for file, loaded, bad in query(
        warehouse, "SELECT file_path, row_count, rows_quarantined FROM meta.ingest_manifest"
    ):
        assert loaded + bad == lines(folder / file) - 1, file

    # the same export again: nothing parsed
    again: list[str] = []
    summary = ingest_export(live, warehouse, log=again.append)
    assert summary.files_loaded == [] and raw_and_meta(warehouse) == raw_and_meta(fresh)


def grow_again(source: Path, folder: Path, edit) -> None:
    """`folder` := `source` with one more line appended to conditions.csv, then `edit`."""
    live_copy(source, folder)
    append_line(folder / "conditions.csv", set_field("description", b"Appended once more"))
    edit(folder / "conditions.csv")


def changed_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = data.index(b",", len(data) // 2) + 1  # the first byte of a field
    data[middle : middle + 1] = b"X" if data[middle : middle + 1] != b"X" else b"Y"
    path.write_bytes(bytes(data))


def repeated_old_line(path: Path) -> None:
    old_line = path.read_bytes().split(b"\n")[5]
    with open(path, "ab") as handle:
        handle.write(old_line + b"\n")


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (changed_in_the_middle, "grew, but its first"),
        (repeated_old_line, "a new row repeats an old row of the file; re-read whole"),
    ],
    ids=["middle-changed", "old-row-repeated"],
)
def test_a_grown_file_that_is_not_only_appended_to_is_re_read_whole(base, tmp_path, edit, why):
    live, warehouse = live_copy(base, tmp_path / "live"), tmp_path / "incremental.duckdb"
    ingest_export(live, warehouse, log=lambda _: None)
    grow_again(base, live, edit)
    assert lines(live / "conditions.csv") > lines(base / "conditions.csv")
    said: list[str] = []
    ingest_export(live, warehouse, log=said.append)
    fresh = tmp_path / "fresh.duckdb"
    ingest_export(live, fresh, log=lambda _: None)

    assert any(m.startswith("conditions.csv: ") and why in m for m in said), said
    assert any(m.startswith("conditions.csv: ") and " rows parsed, " in m and "appended" not in m
               for m in said)  # fmt: skip
    assert raw_and_meta(warehouse) == raw_and_meta(fresh)
    if edit is repeated_old_line:
        assert (lines(live / "conditions.csv"), "duplicate_record") in query(
            warehouse,
            "SELECT source_line, reason FROM meta.quarantine WHERE source_file = 'conditions.csv'",
        )


def test_a_fault_while_appending_leaves_raw_meta_and_the_published_outputs_intact(
    base, grown, tmp_path, monkeypatch
):
    """A run whose ingest fails after some grown files had their new rows loaded (in its one
    transaction) changes nothing; the next run appends them all."""
    from pipelines.ingest import append
    from pipelines.settings import StudySettings
    from pipelines.study import run_study

    folder = grown[0]
    settings = StudySettings(sensitivity_analyses=())
    live, warehouse = live_copy(base, tmp_path / "live"), tmp_path / "wh.duckdb"
    run_study(live, warehouse, settings, say=lambda _: None)
    before_raw, before_published = raw_and_meta(warehouse), published(warehouse)
    assert before_raw["raw.observations"]

    live_copy(folder, live)
    real, calls = append.record_file, []

    def failing_record_file(*args, **kwargs):
        calls.append(args[1].relative)
        if len(calls) == 3:
            raise IngestError("disk full (planted)")
        return real(*args, **kwargs)

    monkeypatch.setattr(append, "record_file", failing_record_file)
    with pytest.raises(IngestError, match="planted"):
        run_study(live, warehouse, settings, say=lambda _: None)
    assert len(calls) == 3  # two grown files had been appended to when it failed
    assert direct_state(warehouse) == direct_state(before_raw)
    assert published(warehouse) == before_published

    monkeypatch.setattr(append, "record_file", real)
    said: list[str] = []
    assert run_study(live, warehouse, settings, say=said.append).status == "succeeded"
    assert sum("parsed alone" in m for m in said) == len(DIRECT)
    fresh = tmp_path / "fresh.duckdb"
    ingest_export(folder, fresh, log=lambda _: None)
    assert raw_and_meta(warehouse) == raw_and_meta(fresh)


def test_published_outputs_of_an_appended_run_equal_those_of_a_full_reload(
    base, grown, tmp_path, monkeypatch
):
    """Two warehouses with the same history (base export, then the grown one): one appends
    the new rows, the other re-reads every changed file whole (the append detection turned
    off). Every published table (mart, release, dq) and raw/meta are the same; mart and dq
    are also those of one run over the grown export in a fresh warehouse."""
    from pipelines.ingest import update
    from pipelines.settings import StudySettings
    from pipelines.study import run_study

    folder = grown[0]
    settings = StudySettings()

    def two_runs(name: str) -> tuple[Path, list[str]]:
        live, warehouse = live_copy(base, tmp_path / f"{name}-live"), tmp_path / f"{name}.duckdb"
        settle(live, hours=2)
        assert run_study(live, warehouse, settings, say=lambda _: None).status == "succeeded"
        live_copy(folder, live)
        settle(live, hours=1)  # written well before the run, as a nightly export is
        said: list[str] = []
        reads.clear()
        assert run_study(live, warehouse, settings, say=said.append).status == "succeeded"
        return warehouse, said

    # each export file read once by the grown run: its reuse check's digest serves the ingest
    reads = spy_on_reads(monkeypatch)
    appended, said = two_runs("appended")
    assert sum("parsed alone" in m for m in said) == len(DIRECT)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert sorted(r for r in reads if r in names) == names  # (not the new rows' spill files)
    with monkeypatch.context() as patch:
        patch.setattr(update, "find_tails", lambda con, plan: None)
        reloaded, said_full = two_runs("reloaded")
    assert not any("parsed alone" in m for m in said_full)

    assert raw_and_meta(appended) == raw_and_meta(reloaded)
    outputs = published(appended)
    assert outputs == published(reloaded)
    assert outputs["mart.cohort"]  # a study with episodes, not an empty comparison
    fresh = tmp_path / "fresh.duckdb"
    assert run_study(folder, fresh, settings, say=lambda _: None).status == "succeeded"
    in_fresh = published(fresh, ("mart", "dq"))
    assert {k: v for k, v in outputs.items() if k.split(".")[0] in ("mart", "dq")} == in_fresh


def test_a_grown_export_in_another_folder_is_still_read_once_per_run(
    base, grown, tmp_path, monkeypatch
):
    """The nightly export written to a new folder (or the benchmark's grown copy): the reuse
    check has no digests recorded for that folder, so it hashes each file up to the size the
    warehouse last loaded (landing.files), the prefix the ingest's append check asks for,
    and the ingest reads no file again. Before, it hashed without that prefix and the ingest
    read every grown file a second time (at 100k patients 5.9 GB, about 7 s)."""
    from pipelines.settings import StudySettings
    from pipelines.study import run_study

    settings = StudySettings()
    first, second = live_copy(base, tmp_path / "night-1"), live_copy(grown[0], tmp_path / "night-2")
    settle(first, hours=2)
    settle(second, hours=1)
    warehouse = tmp_path / "warehouse.duckdb"
    assert run_study(first, warehouse, settings, say=lambda _: None).status == "succeeded"

    reads = spy_on_reads(monkeypatch)
    said: list[str] = []
    assert run_study(second, warehouse, settings, say=said.append).status == "succeeded"
    assert sum("parsed alone" in m for m in said) == len(DIRECT)  # appended rows only
    names = sorted(p.name for p in second.iterdir() if p.is_file())
    assert sorted(r for r in reads if r in names) == names  # each file read once
