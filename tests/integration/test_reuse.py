"""The nightly run on an unchanged export: nothing rebuilt, a new run recorded, same outputs.

Real Prefect flows (test harness), a real DuckDB warehouse, a generated export. A run whose
export, settings, value sets and code are those of the last successful run is `reused`
(pipelines/reuse.py); one changed setting, one changed input row or `force` rebuild.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import duckdb
import pytest
from snapshots import snapshot

from pipelines.generator import generate
from pipelines.reuse import published_by

FULL_RUN = ["ingest", "input contracts", "models", "statistics", "sensitivity",
            "output contracts", "release", "publish", "report", "parquet"]  # fmt: skip


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reuse") / "export"
    generate(out, patients=200, seed=5)
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def mtimes(folder: Path, pattern: str = "**/*") -> dict[str, int]:
    """Each file's modification time (ns) under `folder`: a file written again, even with
    the same bytes, changes it."""
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.glob(pattern)) if p.is_file()}


def meta(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def run(export: Path, tmp_path: Path, config: str = "", **kwargs):
    from pipelines.flows import study_flow

    path = tmp_path / "study.toml"
    path.write_text("sensitivity_analyses = []\n" + config)  # the rebuilds are tested elsewhere
    return study_flow(
        source=str(export),
        warehouse=str(tmp_path / "wh.duckdb"),
        config=str(path),
        report=kwargs.pop("report", str(tmp_path / "report.html")),
        parquet_dir=str(tmp_path / "release"),
        **kwargs,
    )


def test_a_run_over_an_unchanged_export_reuses_the_last_run_and_writes_the_same_bytes(
    prefect_harness, export, tmp_path
):
    warehouse = tmp_path / "wh.duckdb"
    first = run(export, tmp_path)
    assert [s.stage for s in first.stages] == FULL_RUN
    tables, report = snapshot(warehouse), (tmp_path / "report.html").read_bytes()
    parquet = files(tmp_path / "release")

    written = mtimes(tmp_path / "release") | mtimes(tmp_path, "report.html")
    second = run(export, tmp_path)
    assert second.status == "reused"
    # the report and the Parquet folder are already that run's: nothing written again
    assert [s.stage for s in second.stages] == ["reuse"]
    assert mtimes(tmp_path / "release") | mtimes(tmp_path, "report.html") == written
    assert f"reused from run {first.run_id}" in second.stages[0].detail
    assert second.row_counts == first.row_counts
    assert snapshot(warehouse) == tables
    assert (tmp_path / "report.html").read_bytes() == report
    assert files(tmp_path / "release") == parquet
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert published_by(con) == {first.run_id}  # the tables were not rebuilt
    assert meta(warehouse, "SELECT run_id, status FROM meta.runs ORDER BY started_at") == [
        (first.run_id, "succeeded"),
        (second.run_id, "reused"),
    ]
    fingerprints = meta(
        warehouse, "SELECT run_id, fingerprint, reused_from FROM meta.run_fingerprints"
    )
    assert {r[0]: r[2] for r in fingerprints} == {first.run_id: None, second.run_id: first.run_id}
    assert len({r[1] for r in fingerprints}) == 1

    # a third unchanged night still points at the run that built the tables, and writes
    # the report again when it is gone
    (tmp_path / "report.html").unlink()
    third = run(export, tmp_path)
    assert third.status == "reused"
    assert [s.stage for s in third.stages] == ["reuse", "report"]
    assert f"reused from run {first.run_id}" in third.stages[0].detail
    assert f"<td>{first.run_id}</td>" in (tmp_path / "report.html").read_text()
    assert snapshot(warehouse) == tables


@pytest.mark.parametrize(
    "damage", ["delete a file", "edit a csv", "another run's manifest", "no folder"]
)
def test_a_reused_run_writes_the_parquet_folder_again_only_when_it_is_not_whole(
    prefect_harness, export, tmp_path, damage
):
    first = run(export, tmp_path)
    release = tmp_path / "release"
    parquet = files(release)
    if damage == "delete a file":  # a figure's drawing when there is one
        (sorted(release.rglob("*.png")) or sorted(release.glob("*.parquet")))[0].unlink()
    elif damage == "edit a csv":
        csv_file = sorted(release.glob("*.csv"))[0]
        csv_file.write_text(csv_file.read_text() + "1,2,3\n")
    elif damage == "another run's manifest":
        manifest = (release / "manifest.json").read_text()
        (release / "manifest.json").write_text(manifest.replace(first.run_id, "another-run"))
    else:
        shutil.rmtree(release)
    again = run(export, tmp_path)
    assert again.status == "reused"
    assert [s.stage for s in again.stages] == ["reuse", "parquet"]
    assert files(release) == parquet  # whole again, the same bytes
    assert meta(tmp_path / "wh.duckdb", "SELECT status FROM meta.runs ORDER BY started_at") == [
        ("succeeded",),
        ("reused",),
    ]
    assert f"reused from run {first.run_id}" in again.stages[0].detail


def test_a_changed_setting_a_changed_row_or_force_rebuild(prefect_harness, export, tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    first = run(export, tmp_path)

    setting = run(export, tmp_path, config="min_cell = 12\n")
    assert setting.status == "succeeded" and [s.stage for s in setting.stages] == FULL_RUN

    changed = shutil.copytree(export, tmp_path / "changed")
    with (changed / "conditions.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    column = rows[0].index("DESCRIPTION")
    rows[1][column] += " (edited)"  # one row of one file; loads as before
    with (changed / "conditions.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    row = run(changed, tmp_path, config="min_cell = 12\n")
    assert row.status == "succeeded" and [s.stage for s in row.stages] == FULL_RUN

    forced = run(changed, tmp_path, config="min_cell = 12\n", force=True)
    assert forced.status == "succeeded" and [s.stage for s in forced.stages] == FULL_RUN
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert published_by(con) == {forced.run_id}
    reused = meta(
        warehouse, "SELECT count(*) FROM meta.run_fingerprints WHERE reused_from IS NOT NULL"
    )
    assert reused == [(0,)]
    assert len({first.run_id, setting.run_id, row.run_id, forced.run_id}) == 4


def test_tables_published_by_a_run_that_failed_later_are_not_reused(
    prefect_harness, export, tmp_path
):
    """A run that fails after publishing (here: at its report) leaves its own tables
    published; the next run with the first run's fingerprint must not claim the first
    run's outputs: it rebuilds."""
    first = run(export, tmp_path)
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "report.html").mkdir()  # the report cannot be written there
    with pytest.raises(Exception):  # noqa: B017,PT011 (any failure at the report stage)
        run(export, tmp_path, "min_cell = 12\n", report=str(tmp_path / "blocked" / "report.html"))
    statuses = meta(tmp_path / "wh.duckdb", "SELECT status FROM meta.runs ORDER BY started_at")
    assert statuses == [("succeeded",), ("failed",)]
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert first.run_id not in published_by(con)  # the failed run's tables are out
    again = run(export, tmp_path)
    assert again.status == "succeeded" and [s.stage for s in again.stages] == FULL_RUN
    assert again.run_id != first.run_id


# --- An unchanged re-run does not read the export again (issue 16, item 3) ---------------

PROBE_BYTES = 48 << 20  # an export file larger than anything else a reused run reads


def bytes_read() -> int:
    """Bytes this process has read so far, all threads (DuckDB's included): /proc/self/io.
    The probe of choice, since root (the tests' user here) can read a file chmod 000."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def landed_earlier(folder: Path, seconds: int = 3600) -> None:
    """Give every file the mtime of an export that landed an hour ago (a file modified
    within 2 s of being hashed is hashed again: reuse.RACY_NS)."""
    for path in folder.rglob("*"):
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - seconds * 10**9))


def edit_one_row(path: Path, new: str) -> None:
    """Replace the first data row's DESCRIPTION in place (same file, same inode)."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index("DESCRIPTION")] = new
    with path.open("r+", newline="") as f:
        f.truncate(0)
        csv.writer(f, lineterminator="\n").writerows(rows)


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_an_unchanged_rerun_reads_no_export_file_and_a_real_change_is_still_seen(
    prefect_harness, export, tmp_path
):
    source = shutil.copytree(export, tmp_path / "export")
    (source / "archive.bin").write_bytes(os.urandom(PROBE_BYTES))  # read only to hash it
    landed_earlier(source)

    before = bytes_read()
    first = run(source, tmp_path)
    assert first.status == "succeeded"
    assert bytes_read() - before > PROBE_BYTES  # the probe sees the first run's hashing

    before = bytes_read()
    second = run(source, tmp_path)
    assert second.status == "reused"
    assert bytes_read() - before < PROBE_BYTES  # no export file was read again in full
    assert meta(tmp_path / "wh.duckdb", "SELECT run_id, status FROM meta.runs ORDER BY started_at")[
        -1
    ] == (second.run_id, "reused")

    # one row edited in place to a text of the same length: same size, new mtime -> rebuilt
    conditions = source / "conditions.csv"
    size = conditions.stat().st_size
    with conditions.open(newline="") as f:
        rows = list(csv.reader(f))
    old = rows[1][rows[0].index("DESCRIPTION")]
    edit_one_row(conditions, old[::-1] if old[::-1] != old else old.swapcase())
    landed_earlier(source)  # an mtime other than the recorded one, and not racy
    assert conditions.stat().st_size == size
    edited = run(source, tmp_path)
    assert edited.status == "succeeded" and [s.stage for s in edited.stages] == FULL_RUN

    # a row changed to a longer text, the mtime the last run recorded put back (as `cp -p`
    # or `rsync -t` would): only the size differs -> rebuilt
    mtime = conditions.stat().st_mtime_ns
    edit_one_row(conditions, old + " (edited)")
    os.utime(conditions, ns=(mtime, mtime))
    assert conditions.stat().st_size != size
    grown = run(source, tmp_path)
    assert grown.status == "succeeded" and [s.stage for s in grown.stages] == FULL_RUN


def test_recorded_digests_are_trusted_only_while_size_mtime_and_inode_hold(tmp_path):
    """The trade-off, written down in docs/operations.md: a file rewritten to the same size
    with its old mtime put back (same inode) keeps its recorded digest; any change of size,
    mtime or inode, or a file modified just before it was hashed, is read again."""
    from pipelines.reuse import export_digest, file_digests

    (tmp_path / "a.csv").write_text("id\n1\n")
    landed_earlier(tmp_path)
    first = file_digests(tmp_path)
    assert file_digests(tmp_path, {d.path: d for d in first}) == first

    path, mtime = tmp_path / "a.csv", (tmp_path / "a.csv").stat().st_mtime_ns
    path.write_text("id\n2\n")  # same size, same inode
    assert file_digests(tmp_path, {d.path: d for d in first})[0].sha256 != first[0].sha256
    os.utime(path, ns=(mtime, mtime))  # the old mtime put back: not detected (the rare case)
    assert file_digests(tmp_path, {d.path: d for d in first}) == first
    assert export_digest(tmp_path)[0][2] != first[0].sha256  # a full hash sees it

    fresh = file_digests(tmp_path)  # mtime an hour ago: trusted from now on
    path.write_text("id\n3\n")  # modified now, hashed now: racily clean, so hashed again
    racy = file_digests(tmp_path)
    path.write_text("id\n4\n")
    os.utime(path, ns=(racy[0].mtime_ns, racy[0].mtime_ns))
    assert file_digests(tmp_path, {d.path: d for d in racy})[0].sha256 != racy[0].sha256
    assert fresh[0].sha256 != racy[0].sha256


def test_reuse_asks_the_engine_run_whether_it_is_reusable_not_its_name(export, tmp_path):
    """`EngineRun.reusable` decides (pipelines/reuse.py), not a check of the engine's name: a
    DuckDB engine under another name reuses, one whose runs are not reusable rebuilds, and
    Spark runs (whose published views read their own run folder) are not reusable."""
    from dataclasses import replace

    from pipelines.engines import DuckDBEngine
    from pipelines.engines.spark import SparkEngine
    from pipelines.settings import StudySettings
    from pipelines.study import run_study

    warehouse = tmp_path / "wh.duckdb"
    settings = StudySettings(sensitivity_analyses=())

    def study(engine):
        return run_study(export, warehouse, settings, engine=engine, say=lambda message: None)

    renamed = replace(DuckDBEngine(), name="duckdb-renamed")
    first = study(renamed)
    assert study(renamed).status == "reused"
    rebuilt = study(replace(DuckDBEngine(), reusable=False))
    assert rebuilt.status == "succeeded"
    assert [s.stage for s in rebuilt.stages][:3] == ["ingest", "input contracts", "models"]
    assert first.status == "succeeded"
    assert SparkEngine().for_run(warehouse, "a-run").reusable is False
