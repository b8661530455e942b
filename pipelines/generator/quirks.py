"""Plant the data-quality quirks of real exports into a generated one (after it is written).

Real Synthea exports carry a few medication rows whose STOP is before their START (e.g.
clopidogrel START 2004-12-26, STOP 2004-12-20), and hand-edited or mis-converted exports carry
dates out of range (year 1850, 2999). The pipeline must keep such rows, list them in
`dq.data_quality_issues` and run to the end. `plant_quirks` rewrites the first part of the
medications and conditions files so a test can check exactly that:

- `stop_before_start` medication rows with a STOP get a STOP 1-30 days before their START
  (rows modified in place: no feature uses a medication's STOP, so the study's results are
  those of the export without quirks);
- `dates_out_of_range` conditions rows are appended: copies of existing background rows
  dated alternately 2999-01-01 (in the future) and 1850-01-01 (before 1900, before birth),
  without STOP (added rather than moved, so every original record stays plausible).

The file lines touched are returned (and written to truth.json under `quirks`).
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

_FUTURE, _PAST = "2999-01-01", "1850-01-01"


@dataclass(frozen=True)
class Quirks:
    stop_before_start: int = 0  # medication rows with STOP before START
    dates_out_of_range: int = 0  # condition rows appended with a date out of range

    def __post_init__(self) -> None:
        if self.stop_before_start < 0 or self.dates_out_of_range < 0:
            raise ValueError("quirk counts must not be negative")

    def any(self) -> bool:
        return bool(self.stop_before_start or self.dates_out_of_range)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def plant_quirks(
    out_dir: Path, files: dict[str, list[str]], quirks: Quirks, seed: int
) -> dict[str, dict[str, list[int]]]:
    """Apply `quirks` to the first medications and conditions file; returns, per file, the
    1-based line numbers (header = 1) of each quirk."""
    rng = np.random.default_rng([seed, 2, 0])
    planted: dict[str, dict[str, list[int]]] = {}
    if quirks.stop_before_start:
        name = files["medications"][0]
        lines = _read(out_dir / name)
        planted[name] = {"stop_before_start": _stop_before_start(rng, lines, quirks)}
        _write(out_dir / name, lines)
    if quirks.dates_out_of_range:
        name = files["conditions"][0]
        lines = _read(out_dir / name)
        planted[name] = {"date_out_of_range": _dates_out_of_range(rng, lines, quirks)}
        _write(out_dir / name, lines)
    return planted


def _stop_before_start(rng: np.random.Generator, lines: list[str], quirks: Quirks) -> list[int]:
    header = lines[0].split(",")
    start, stop = header.index("START"), header.index("STOP")
    candidates = [i for i in range(1, len(lines)) if lines[i] and lines[i].split(",")[stop]]
    if len(candidates) < quirks.stop_before_start:
        raise ValueError(
            f"only {len(candidates)} medication rows have a STOP; "
            f"cannot plant {quirks.stop_before_start} STOP-before-START rows"
        )
    chosen = sorted(rng.choice(candidates, quirks.stop_before_start, replace=False).tolist())
    for i in chosen:
        fields = lines[i].split(",")
        started = dt.datetime.strptime(fields[start], "%Y-%m-%dT%H:%M:%SZ")
        earlier = started - dt.timedelta(days=int(rng.integers(1, 31)))
        fields[stop] = earlier.strftime("%Y-%m-%dT%H:%M:%SZ")
        lines[i] = ",".join(fields)
    return [i + 1 for i in chosen]


def _dates_out_of_range(rng: np.random.Generator, lines: list[str], quirks: Quirks) -> list[int]:
    header = lines[0].split(",")
    start, stop = header.index("START"), header.index("STOP")
    rows = [line for line in lines[1:] if line]
    if not rows:
        raise ValueError("no condition rows to copy for an out-of-range date")
    picks = rng.choice(len(rows), quirks.dates_out_of_range, replace=True).tolist()
    while lines and not lines[-1]:  # the file ends with a newline: keep one at the end
        lines.pop()
    added = []
    for n, pick in enumerate(picks):
        fields = rows[pick].split(",")
        fields[start], fields[stop] = (_FUTURE if n % 2 == 0 else _PAST), ""
        lines.append(",".join(fields))
        added.append(len(lines))
    lines.append("")
    return added


def _read(path: Path) -> list[str]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8").split("\n")


def _write(path: Path, lines: list[str]) -> None:
    data = "\n".join(lines).encode("utf-8")
    if path.suffix == ".gz":  # as the writer does: pyarrow's gzip stream
        with pa.CompressedOutputStream(str(path), "gzip") as stream:
            stream.write(data)
    else:
        path.write_bytes(data)
