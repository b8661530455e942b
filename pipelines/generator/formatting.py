"""Vectorised text for CSV cells, built as Arrow string arrays without Python loops per row.

Fixed-width text (ids, dates, timestamps, digits) is assembled in numpy from lookup
tables (one flat gather per piece: 2-D fancy indexing is an order of magnitude slower)
and handed to Arrow as one buffer; text from a short list is a dictionary lookup.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX_PAIRS = np.frombuffer(
    b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16
)  # 2 chars each
_UUID = np.dtype(
    [
        ("a", "S8"),
        ("d1", "S1"),
        ("b", "S4"),
        ("d2", "S1"),
        ("c", "S4"),
        ("d3", "S1"),
        ("d", "S4"),
        ("d4", "S1"),
        ("e", "S12"),
    ]
)
_TIMESTAMP = np.dtype([("date", "S10"), ("t", "S1"), ("time", "S8"), ("z", "S1")])
_DATE_BASE = -30_000  # first day number of the date table (1887-11-06)
_DATE_TABLE: np.ndarray | None = None  # "YYYY-MM-DD" per day number, built on first use
_TIME_TABLE = np.array(
    [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)],
    dtype="S8",
)
_DIGIT_TABLES: dict[int, np.ndarray] = {}


def fixed_width(chars: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A 1-D array of fixed-size records (e.g. 'S20' or a structured dtype) as Arrow strings."""
    n, width = chars.shape[0], chars.dtype.itemsize
    offsets = pa.py_buffer(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    data = pa.py_buffer(np.ascontiguousarray(chars))
    bitmap = None
    if valid is not None and not np.all(valid):
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(n, offsets, data, bitmap)


def uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random Synthea-style ids (8-4-4-4-12 hex digits) as an 'S36' array."""
    raw = _HEX_PAIRS[np.frombuffer(rng.bytes(16 * n), dtype=np.uint8)].view(np.uint8).reshape(n, 32)
    out = np.empty(n, dtype=_UUID)
    for name, start, stop in (
        ("a", 0, 8),
        ("b", 8, 12),
        ("c", 12, 16),
        ("d", 16, 20),
        ("e", 20, 32),
    ):
        out[name] = np.ascontiguousarray(raw[:, start:stop]).view(f"S{stop - start}").ravel()
    for dash in ("d1", "d2", "d3", "d4"):
        out[dash] = b"-"
    return out.view("S36")


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as zero-padded digits ('S<width>' array; the last `width` digits)."""
    values = np.asarray(values, dtype=np.int64)
    if width > 4:  # tables up to 10**4 entries; longer numbers in pieces of 4 digits
        out = np.empty(values.size, dtype=[("high", f"S{width - 4}"), ("low", "S4")])
        out["high"], out["low"] = digits(values // 10**4, width - 4), digits(values, 4)
        return out.view(f"S{width}")
    if width not in _DIGIT_TABLES:
        _DIGIT_TABLES[width] = np.array(
            [str(i).zfill(width) for i in range(10**width)], dtype=f"S{width}"
        )
    return _DIGIT_TABLES[width][values % 10**width]


def _ymd(days: np.ndarray) -> np.ndarray:
    global _DATE_TABLE
    if _DATE_TABLE is None:
        _DATE_TABLE = np.arange(_DATE_BASE, 120_000).astype("datetime64[D]").astype("S10")
    return _DATE_TABLE[np.asarray(days, dtype=np.int64) - _DATE_BASE]


def dates(days: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """YYYY-MM-DD (conditions, patients); null where not valid."""
    days = np.asarray(days, dtype=np.int64)
    if valid is not None:
        days = np.where(valid, days, 0)
    return fixed_width(_ymd(days), valid)


def timestamps(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """YYYY-MM-DDTHH:MM:SSZ (UTC, as Synthea writes every other file); null where not valid."""
    seconds = np.asarray(seconds, dtype=np.int64)
    if valid is not None:
        seconds = np.where(valid, seconds, 0)
    days, rest = np.divmod(seconds, 86_400)
    out = np.empty(seconds.size, dtype=_TIMESTAMP)
    out["date"], out["time"] = _ymd(days), _TIME_TABLE[rest]
    out["t"], out["z"] = b"T", b"Z"
    return fixed_width(out.view("S20"), valid)


def decimals(values: np.ndarray, places: int) -> pa.Array:
    """Non-negative numbers with a fixed number of decimals ("85.6", "75.00")."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 10**places).astype(np.int64)
    if scaled.size and scaled.min() < 0:
        raise ValueError("decimals() formats non-negative numbers only")
    whole = pc.cast(pa.array(scaled // 10**places), pa.string())
    if places == 0:
        return whole
    return pc.binary_join_element_wise(whole, fixed_width(digits(scaled % 10**places, places)), ".")


def integers(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def lookup(labels, index: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """labels[index] (null where index < 0 or not valid), as a dictionary array: the CSV
    writer prints it as the text, without materialising a string per row."""
    index = np.asarray(index, dtype=np.int32)
    mask = index < 0 if valid is None else (index < 0) | ~valid
    indices = pa.array(np.where(mask, 0, index), type=pa.int32(), mask=mask if mask.any() else None)
    dictionary = pa.array(list(labels) or [""], type=pa.string())
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def as_strings(array: pa.Array) -> pa.Array:
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def take(ids: np.ndarray, index: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Fixed-width ids (an 'S<n>' array) picked by row number."""
    index = np.asarray(index, dtype=np.int64)
    if valid is not None:
        index = np.where(valid, index, 0)
    return fixed_width(np.take(ids, index), valid)  # np.take: much faster than ids[index] here


def concat(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of string arrays and literal text."""
    n = next(len(p) for p in parts if not isinstance(p, str))
    arrays = [
        pa.array([p] * n, pa.string()) if isinstance(p, str) else as_strings(p) for p in parts
    ]
    return pc.binary_join_element_wise(*arrays, "")


def empty(n: int) -> pa.Array:
    return pa.nulls(n, pa.string())
