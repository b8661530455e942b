"""File digests: each file's sha256 (an unchanged file is not read again) and, in the same
pass, its line statistics (newlines, last line end, stray bytes), which the parse's row
accounting counts lines against (pipelines/ingest/parse.py).

Within a study run (`sharing()`, entered by `pipelines.study.run_study`) a digest is taken
once per file: the run's reuse check (pipelines/reuse.py) hashes the files that changed, and
the ingest that follows gets those digests instead of reading every file again (a +1%
export: 0.6 GB at 10k patients, 5.9 GB at 100k, read once instead of twice). A digest is
served again only while the file keeps its identity (device, inode, size, mtime and ctime
in nanoseconds) and was not modified just before it was read (the racy rule of
pipelines/reuse.py).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipelines.ingest.discover import SourceFile


@dataclass(frozen=True)
class Digest:
    size_bytes: int
    sha256: str
    newlines: int | None  # None for gzip files (counted only when the file is loaded)
    ends_with_newline: bool | None
    # a bare CR (not before \n), CRLF mixed with LF line ends, or a NUL byte: DuckDB's parser
    # stops at the first two (the whole file would fail) and lets the third through, so such
    # a file takes the slow path
    stray_bytes: bool | None = None
    # a file that may have grown by appended rows (pipelines/ingest/append.py): its first
    # `prefix_bytes` bytes (the size it had at its last load), hashed and scanned in the same
    # pass as the whole file
    prefix_bytes: int = 0
    prefix_sha256: str | None = None
    prefix_newlines: int | None = None
    prefix_ends_with_newline: bool | None = None
    prefix_stray_bytes: bool | None = None


@dataclass
class ByteScan:
    """Newlines (LF and CRLF), bare carriage returns and NUL bytes of a byte stream, chunk by
    chunk."""

    newlines: int = 0
    crlf: int = 0
    bare_cr: int = 0
    nul: int = 0
    last: bytes = b""

    def update(self, chunk: bytes) -> None:
        # bytes.count of one byte walks the chunk byte by byte with the GIL held (about as
        # much CPU as the sha256 itself, per count); numpy's comparison is vectorised and
        # releases the GIL, and `in` (memchr) rules out a NUL or CR almost for free, so a
        # plain Synthea file (no NUL, no CR) is scanned about once instead of three times
        self.newlines += int(np.count_nonzero(np.frombuffer(chunk, dtype=np.uint8) == 10))
        if b"\0" in chunk:
            self.nul += chunk.count(b"\0")
        cr = chunk.count(b"\r") if b"\r" in chunk else 0
        crlf = chunk.count(b"\r\n") if cr else 0  # the slower CRLF count only if needed
        self.crlf += crlf
        self.bare_cr += cr - crlf
        if self.last == b"\r" and chunk[:1] == b"\n":  # a CRLF split across two chunks
            self.crlf += 1
            self.bare_cr -= 1
        self.last = chunk[-1:]

    @property
    def stray_bytes(self) -> bool:
        # DuckDB takes the line end of the first lines for the whole file
        mixed_line_ends = 0 < self.crlf < self.newlines
        return bool(self.bare_cr or self.nul or mixed_line_ends)


# The digests taken in the current study run (`sharing`), by file identity; None outside one.
_shared: dict[tuple, Digest] | None = None
_shared_lock = threading.Lock()
# A file modified less than this before it was read is read again when asked again (a second
# write in the same timestamp tick could leave its identity as it was): pipelines/reuse.py.
RACY_NS = 2_000_000_000


@contextmanager
def sharing() -> Iterator[None]:
    """Within this block, a file whose digest was taken and that kept its identity since is
    not read again (the reuse check and the ingest of one run); outside, every call reads."""
    global _shared
    with _shared_lock:
        previous, _shared = _shared, {}
    try:
        yield
    finally:
        with _shared_lock:
            _shared = previous


def _identity(path: Path, stat: os.stat_result) -> tuple:
    return (
        str(path.resolve()),
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
    )


def _split(path: Path, size: int, prefix: int) -> int:
    """The prefix a digest of this file covers (file_digest): 0 when there is none."""
    plain = not path.name.lower().endswith(".gz")
    return prefix if plain and 0 < prefix < size else 0


def file_digest(path: Path, prefix: int = 0) -> Digest:
    """sha256 of the file's bytes; for plain CSV also its line statistics, in the same pass.

    With `prefix` (the size a plain file had when it was last loaded), a file that is now
    larger also gets the sha256 and line statistics of its first `prefix` bytes, from the
    same read (hashlib's state is copied at that offset): whether the old bytes are still
    there, unchanged, costs no second read (pipelines/ingest/append.py).

    Within `sharing()`, a digest this run already took of the same file (same identity) is
    returned without reading: as it was when it covers the same prefix, without its prefix
    fields when none is asked for."""
    path = Path(path)
    stat = path.stat()
    key, split = _identity(path, stat), _split(path, stat.st_size, prefix)
    with _shared_lock:
        taken = None if _shared is None else _shared.get(key)
    if taken is not None and taken.prefix_bytes == split:
        return taken
    if taken is not None and split == 0:
        return _without_prefix(taken)
    read_at = time.time_ns()
    digest = _read_digest(path, prefix)
    after = path.stat()
    settled = stat.st_mtime_ns < read_at - RACY_NS  # as pipelines/reuse.py's FileDigest
    if settled and _identity(path, after) == key:
        with _shared_lock:
            if _shared is not None:
                _shared[key] = digest
    return digest


def _without_prefix(digest: Digest) -> Digest:
    return replace(
        digest,
        prefix_bytes=0,
        prefix_sha256=None,
        prefix_newlines=None,
        prefix_ends_with_newline=None,
        prefix_stray_bytes=None,
    )


def _read_digest(path: Path, prefix: int = 0) -> Digest:
    """`file_digest`, the file read."""
    sha, scan = hashlib.sha256(), ByteScan()
    plain = not path.name.lower().endswith(".gz")
    size = path.stat().st_size
    split = prefix if plain and 0 < prefix < size else 0
    before = None  # (sha256, scan) of the first `split` bytes
    with open(path, "rb") as handle:
        position = 0
        while chunk := handle.read(
            min(1 << 22, split - position) if before is None and split else 1 << 22
        ):
            sha.update(chunk)
            if plain:
                scan.update(chunk)
            position += len(chunk)
            if split and before is None and position == split:
                before = (sha.copy().hexdigest(), replace(scan))
    if not plain:
        return Digest(size, sha.hexdigest(), None, None)
    digest = Digest(size, sha.hexdigest(), scan.newlines, scan.last == b"\n", scan.stray_bytes)
    if before is None:
        return digest
    old_sha, old = before
    return replace(
        digest,
        prefix_bytes=split,
        prefix_sha256=old_sha,
        prefix_newlines=old.newlines,
        prefix_ends_with_newline=old.last == b"\n",
        prefix_stray_bytes=old.stray_bytes,
    )


def text_line_stats(path: Path) -> ByteScan:
    """Line statistics of the decompressed text of a gzip file."""
    scan = ByteScan()
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            scan.update(chunk)
    return scan


def digest_files(
    files: list[SourceFile], prefixes: dict[str, int] | None = None
) -> dict[str, Digest]:
    """Digests of all files, a few at a time (hashlib releases the GIL). `prefixes`: the
    size each file had at its last load, for the append check (file_digest)."""
    prefixes = prefixes or {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = pool.map(lambda f: file_digest(f.path, prefixes.get(f.relative, 0)), files)
        return {f.relative: d for f, d in zip(files, digests, strict=True)}
