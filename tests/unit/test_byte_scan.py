"""The byte scan of every export file (pipelines/ingest/digests.py `ByteScan`), whose newline
count the row accounting checks lines against and whose stray bytes send a file to the slow
path: the same counts as a plain byte-by-byte reference on any bytes and any chunking, and a
plain Synthea chunk (LF line ends, no NUL, no CR) is not walked byte by byte once per byte
class by `bytes.count` (three GIL-holding passes, each costing about as much CPU as the
sha256: docs/benchmark.md, "Synthea ingest: the byte scan")."""

from __future__ import annotations

import random

import pytest

from pipelines.ingest.digests import ByteScan


def reference(data: bytes) -> tuple[int, int, int, int]:
    """newlines, CRLF pairs, bare CRs, NULs of the whole text, byte by byte."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n"), crlf, data.count(b"\r") - crlf, data.count(b"\0")


def scanned(data: bytes, sizes: list[int]) -> ByteScan:
    scan, at = ByteScan(), 0
    for size in sizes:
        if at >= len(data):
            break
        scan.update(data[at : at + size])
        at += size
    if at < len(data):
        scan.update(data[at:])
    return scan


@pytest.mark.parametrize("seed", range(40))
def test_the_scan_counts_as_the_byte_by_byte_reference_in_any_chunking(seed):
    rng = random.Random(seed)
    alphabet = [b"a", b",", b"\n", b"\r", b"\r\n", b"\0", b"\xc3\xa9", b'"']
    weights = [30, 5, 6, 1, 3, 1, 1, 1] if seed % 2 else [30, 5, 6, 0, 0, 0, 1, 1]
    data = b"".join(rng.choices(alphabet, weights, k=rng.randint(0, 3000)))
    sizes = [rng.randint(1, 64) for _ in range(len(data))]  # CRLF pairs split across chunks
    scan = scanned(data, sizes)
    assert (scan.newlines, scan.crlf, scan.bare_cr, scan.nul) == reference(data)
    assert scan.last == data[-1:]
    newlines, crlf, bare_cr, nul = reference(data)
    assert scan.stray_bytes == bool(bare_cr or nul or 0 < crlf < newlines)


@pytest.mark.parametrize(
    ("text", "stray"),
    [
        (b"Id,A\np1,x\n", False),
        (b"Id,A\r\np1,x\r\n", False),  # CRLF throughout
        (b"Id,A\r\np1,x\n", True),  # mixed line ends
        (b"Id,A\np1,\rx\n", True),  # bare CR
        (b"Id,A\np1,\0x\n", True),  # NUL
    ],
)
def test_stray_bytes_of_small_files(text, stray):
    assert scanned(text, [3] * len(text)).stray_bytes is stray
    assert scanned(text, [len(text)]).stray_bytes is stray


class CountingBytes(bytes):
    """A chunk that records every `count` asked of it (the scan itself runs unchanged)."""

    counted: list[bytes]

    def count(self, sub, *args):  # type: ignore[override]
        self.counted.append(bytes(sub))
        return super().count(sub, *args)


def test_a_plain_chunk_is_not_counted_byte_by_byte_per_byte_class():
    chunk = CountingBytes(b"p1,2020-01-01,8302-2,Body Height,170.2,cm,numeric\n" * 2000)
    chunk.counted = []
    scan = ByteScan()
    scan.update(chunk)
    assert scan.newlines == 2000 and not scan.stray_bytes
    # before: count(b"\n"), count(b"\0") and count(b"\r") on every chunk, three full passes
    assert chunk.counted == []


def test_a_chunk_with_carriage_returns_still_counts_them_exactly():
    chunk = CountingBytes(b"a\r\nb\rc\n\0")
    chunk.counted = []
    scan = ByteScan()
    scan.update(chunk)
    assert (scan.newlines, scan.crlf, scan.bare_cr, scan.nul) == (2, 1, 1, 1)
