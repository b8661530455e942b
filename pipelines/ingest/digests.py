"""File digests: each file's sha256 (an unchanged file is not read again) and, in the same
pass, its line statistics (newlines, last line end, stray bytes), which the parse's row
accounting counts lines against (pipelines/ingest/parse.py).
"""

from __future__ import annotations

import gzip
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

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
        self.newlines += chunk.count(b"\n")
        self.nul += chunk.count(b"\0")
        cr = chunk.count(b"\r")  # a fast one-byte count; the slower CRLF count only if needed
        crlf = chunk.count(b"\r\n") if cr else 0
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


def file_digest(path: Path, prefix: int = 0) -> Digest:
    """sha256 of the file's bytes; for plain CSV also its line statistics, in the same pass.

    With `prefix` (the size a plain file had when it was last loaded), a file that is now
    larger also gets the sha256 and line statistics of its first `prefix` bytes, from the
    same read (hashlib's state is copied at that offset): whether the old bytes are still
    there, unchanged, costs no second read (pipelines/ingest/append.py)."""
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
