"""File digests: each file's sha256 (an unchanged file is not read again) and, in the same
pass, its line statistics (newlines, last line end, stray bytes), which the parse's row
accounting counts lines against (pipelines/ingest/parse.py).
"""

from __future__ import annotations

import gzip
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


def file_digest(path: Path) -> Digest:
    """sha256 of the file's bytes; for plain CSV also its line statistics, in the same pass."""
    sha, scan = hashlib.sha256(), ByteScan()
    plain = not path.name.lower().endswith(".gz")
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            sha.update(chunk)
            if plain:
                scan.update(chunk)
    if not plain:
        return Digest(path.stat().st_size, sha.hexdigest(), None, None)
    size = path.stat().st_size
    return Digest(size, sha.hexdigest(), scan.newlines, scan.last == b"\n", scan.stray_bytes)


def text_line_stats(path: Path) -> ByteScan:
    """Line statistics of the decompressed text of a gzip file."""
    scan = ByteScan()
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            scan.update(chunk)
    return scan


def digest_files(files: list[SourceFile]) -> dict[str, Digest]:
    """Digests of all files, a few at a time (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = pool.map(file_digest, [f.path for f in files])
        return {f.relative: d for f, d in zip(files, digests, strict=True)}
