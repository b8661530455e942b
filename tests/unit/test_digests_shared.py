"""Each export file read once per study run (issue 16 item 3): the run's reuse check
(pipelines/reuse.py) hashes the files that changed with the ingest's digest
(pipelines/ingest/digests.py), and within the run (`digests.sharing()`, entered by
`run_study`) the ingest gets that digest instead of reading the file again. A digest is
served again only while the file keeps its identity (inode, size, mtime, ctime) and was not
modified just before it was read; anything else reads the file again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipelines import reuse
from pipelines.ingest import digests
from pipelines.ingest.discover import SourceFile

HOUR_NS = 3600 * 10**9
READ = digests._read_digest  # the real reader, for reference digests (not spied on)


def settled(path: Path) -> None:
    """An mtime an hour ago: not modified just before it is read (not racy)."""
    past = time.time_ns() - HOUR_NS
    os.utime(path, ns=(past, past))


@pytest.fixture
def export(tmp_path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "patients.csv").write_bytes(b"Id,BIRTHDATE\n" + b"p1,1970-01-01\n" * 500)
    (folder / "conditions.csv").write_bytes(b"START,PATIENT\n" + b"2020-01-01,p1\n" * 900)
    for path in folder.iterdir():
        settled(path)
    return folder


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files `file_digest` actually reads (a spy on the real reader)."""
    seen: list[str] = []

    def spy(path, prefix=0):
        seen.append(Path(path).name)
        return READ(path, prefix)

    monkeypatch.setattr(digests, "_read_digest", spy)
    return seen


def source_files(folder: Path) -> list[SourceFile]:
    return [SourceFile(p, p.name, p.stem, 0, False, (), ()) for p in sorted(folder.iterdir())]


def test_within_a_run_the_ingest_reads_no_file_the_reuse_check_hashed(export, reads):
    fresh = {f.relative: digests.file_digest(f.path) for f in source_files(export)}
    reads.clear()
    with digests.sharing():
        checked = reuse.file_digests(export)
        assert sorted(reads) == ["conditions.csv", "patients.csv"]
        taken = digests.digest_files(source_files(export))
        assert sorted(reads) == ["conditions.csv", "patients.csv"]  # nothing read again
    assert taken == fresh  # the same digests as reading the files
    assert [d.sha256 for d in checked] == [fresh[d.path].sha256 for d in checked]
    # outside a run, every call reads (as before)
    digests.file_digest(export / "patients.csv")
    assert reads.count("patients.csv") == 2


def test_a_grown_file_keeps_the_prefix_of_its_recorded_size_from_the_same_read(export, reads):
    """The reuse check hashes a grown file up to the size it recorded, as the ingest asks
    for the size it last loaded: the ingest's append check gets the prefix without a read.
    A digest asked without a prefix is served without its prefix fields; another prefix
    reads the file again."""
    conditions = export / "conditions.csv"
    known = {d.path: d for d in reuse.file_digests(export)}
    old_size = conditions.stat().st_size
    with conditions.open("ab") as handle:
        handle.write(b"2021-01-01,p2\n" * 10)
    settled(conditions)
    reads.clear()
    with digests.sharing():
        reuse.file_digests(export, known)
        assert reads == ["conditions.csv"]  # patients.csv kept its recorded digest
        grown = digests.file_digest(conditions, old_size)
        assert reads == ["conditions.csv"]
        assert grown.prefix_bytes == old_size
        assert grown == READ(conditions, old_size)
        whole = digests.file_digest(conditions)
        assert reads == ["conditions.csv"]
        assert whole == READ(conditions)
        assert whole.prefix_sha256 is None
        other = digests.file_digest(conditions, old_size - 14)
        assert reads == ["conditions.csv", "conditions.csv"]  # another prefix: read
        assert other == READ(conditions, old_size - 14)


@pytest.mark.parametrize("change", ["same_size_mtime_put_back", "replaced", "racy"])
def test_a_file_changed_after_its_digest_was_taken_is_read_again(export, reads, change):
    """The key is the file's identity: an edit to the same size with the mtime put back
    still moves the ctime, a replaced file has a new inode, and a file modified just before
    it was read is never served again. A cache keyed on size and mtime alone would serve
    the stale digest in the first case and this test would fail."""
    path = export / "patients.csv"
    with digests.sharing():
        if change == "racy":
            now = time.time_ns()
            os.utime(path, ns=(now, now))
        before = digests.file_digest(path)
        stat = path.stat()
        if change == "same_size_mtime_put_back":
            time.sleep(0.01)
            data = path.read_bytes()
            path.write_bytes(data.replace(b"p1,1970", b"p9,1970", 1))
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            assert path.stat().st_size == stat.st_size
            assert path.stat().st_mtime_ns == stat.st_mtime_ns
        elif change == "replaced":
            copy = path.with_suffix(".tmp")
            copy.write_bytes(path.read_bytes().replace(b"p1,1970", b"p9,1970", 1))
            os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            os.replace(copy, path)
        reads.clear()
        after = digests.file_digest(path)
        assert reads == ["patients.csv"]
        assert after == READ(path)
        if change != "racy":
            assert after.sha256 != before.sha256
