"""A grown copy of an export: the nightly export of the next day, for the incremental ingest
(pipelines/ingest/append.py) and the benchmark's `rerun_grown` stage.

`grow_export(base, out, fraction, seed)` copies every file of `base` to `out` (the base is
only read) and appends to each table's CSV the rows of `round(fraction * base patients)` new
patients made by the project's generator with `seed` (their encounters, conditions,
observations, ... as `generate` writes them), plus a few new encounters of existing
patients. Bytes are appended as they are (no CSV is rewritten), so the old content of every
file stays byte for byte what it was, as when Synthea-style exporters add rows.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from pipelines.generator.layouts import TABLES
from pipelines.generator.writer import file_name

# New encounters of existing patients appended to encounters (copies of new patients'
# encounters given a new id and an existing patient).
EXISTING_PATIENT_ENCOUNTERS = 3


def grow_export(base: Path, out: Path, fraction: float = 0.01, seed: int = 1) -> dict:
    """Copy `base` to `out` and append the rows of round(fraction * base patients) new
    patients (generator seed `seed`; ids distinct from the base's) to every table's file,
    the last part of a split export; a `.csv.gz` file gets them as a further gzip member.
    Returns the counts: patients_added, rows_added per table, existing_patient_encounters,
    seconds. The truth files of `out` stay the base's (they do not describe the new
    patients)."""
    started = time.perf_counter()
    base, out = Path(base), Path(out)
    if not base.is_dir():
        raise ValueError(f"base export not found: {base}")
    if out.resolve() == base.resolve():
        raise ValueError("out must be another folder than base (the base is never modified)")
    layout, split, compressed = _layout(base)
    targets = {t: file_name(t, split - 1, split, compressed) for t in TABLES}
    base_ids = _patient_ids(base, split, compressed)
    n = round(fraction * len(base_ids))
    if n < 1:
        raise ValueError(f"fraction {fraction} of {len(base_ids)} patients adds no patient")
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(base.iterdir()):
        if path.is_file():
            shutil.copyfile(path, out / path.name)
    from pipelines.generator import generate

    rows_added = {}
    with tempfile.TemporaryDirectory(prefix="redflags-grow-", dir=out.parent) as tmp:
        generate(Path(tmp), patients=n, seed=seed, layout=layout, progress=lambda _: None)
        new_ids = _patient_ids(Path(tmp), 1, False)
        if new_ids & base_ids:
            raise ValueError(f"seed {seed} repeats patient ids of the base export: take another")
        for table in TABLES:
            header, body = _header_and_body(Path(tmp) / f"{table}.csv")
            if table == "encounters":
                body += _encounters_of(header, body, sorted(base_ids), seed)
            target = out / targets[table]
            if _header(target, compressed) != header:
                raise ValueError(f"{targets[table]}: header differs from the generator's")
            _append(target, body, compressed)
            rows_added[table] = body.count(b"\n")
    return {
        "patients_added": n,
        "rows_added": rows_added,
        "existing_patient_encounters": EXISTING_PATIENT_ENCOUNTERS,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _layout(base: Path) -> tuple[str, int, bool]:
    """The base's generator layout, number of parts and compression (truth.json), else the
    defaults of `generate` as found in the folder."""
    truth = base / "truth.json"
    if truth.is_file():
        generator = json.loads(truth.read_text()).get("generator", {})
        if generator:
            return generator["layout"], generator["split"], generator["gzip"]
    compressed = (base / "patients.csv.gz").is_file()
    parts = len(list(base.glob("patients-*.csv*"))) or 1
    return "3.3", parts, compressed


def _open(path: Path, compressed: bool):
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _header(path: Path, compressed: bool) -> bytes:
    with _open(path, compressed) as handle:
        return handle.readline()


def _header_and_body(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    cut = data.index(b"\n") + 1
    return data[:cut], data[cut:]


def _patient_ids(folder: Path, split: int, compressed: bool) -> set[bytes]:
    ids: set[bytes] = set()
    for part in range(split):
        with _open(folder / file_name("patients", part, split, compressed), compressed) as f:
            f.readline()
            ids.update(line.split(b",", 1)[0] for line in f if line.strip())
    return ids


def _encounters_of(header: bytes, body: bytes, existing: list[bytes], seed: int) -> bytes:
    """Copies of the first new encounters, each given a new id and an existing patient."""
    names = [name.strip().lower() for name in header.decode().split(",")]
    id_at, patient_at = names.index("id"), names.index("patient")
    lines = body.splitlines()[:EXISTING_PATIENT_ENCOUNTERS]
    out = []
    for i, (line, patient) in enumerate(zip(lines, existing, strict=False)):
        fields = line.split(b",")
        h = hashlib.sha256(f"grow_export:{seed}:{i}".encode()).hexdigest()
        fields[id_at] = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}".encode()
        fields[patient_at] = patient
        out.append(b",".join(fields) + b"\n")
    return b"".join(out)


def _append(path: Path, body: bytes, compressed: bool) -> None:
    data = gzip.compress(body, mtime=0) if compressed else body
    with open(path, "ab") as handle:
        if not compressed and handle.tell() and not _ends_with_newline(path):
            handle.write(b"\n")
        handle.write(data)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"
