"""The report's figures as files: one rendering of each matplotlib Figure, as PNG and SVG.

The HTML report embeds the PNG bytes as a data URI (pipelines/report/render.py); the release
folder (pipelines/export.py) writes the same bytes to `figures/<name>.png` and the SVG to
`figures/<name>.svg`. Both are drawn only from release tables, so the files are as safe as
the report. The bytes are reproducible: the same warehouse gives the same files (no
creation date, no software stamp, a fixed SVG id salt).

Within one process the rendered figures of a warehouse state are kept (one entry), so a
run's report and its release folder share one rendering.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipelines.report.text import Chart

FIGURES_DIR = "figures"  # inside the release folder
DPI = 110
SVG_HASHSALT = "redflags"  # matplotlib salts the SVG's clip-path ids with a random value
# The report's figure (its template key) -> the stable file name, without suffix. Names are
# documented in docs/report.md; do not rename (dashboards and slides link to them).
FIGURE_FILES = {
    "cif_figure": "cumulative_incidence",
    "forest_figure": "likelihood_ratios",
    "roc_figure": "roc_curve",
    "calibration_figure": "calibration",
    "decision_figure": "decision_curve",
    "survival_figure": "overall_survival",
}


@dataclass(frozen=True)
class Rendered:
    png: bytes
    svg: str


def render(fig: Figure) -> Rendered:
    """The figure as PNG bytes and SVG text, both reproducible run to run."""
    import matplotlib

    png, svg = io.BytesIO(), io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASHSALT}):
        fig.savefig(png, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
        fig.savefig(svg, format="svg", facecolor="white", metadata={"Date": None})
    return Rendered(png.getvalue(), svg.getvalue().decode("utf-8"))


# --- one rendering per warehouse state, shared by the report and the release folder ------

_cache: dict[tuple, Any] = {}


def warehouse_state(warehouse: Path) -> tuple:
    """What identifies the warehouse's content for the cache: path, size, modification time
    (taken before it is read; a run holds the writers' lock while it writes its files)."""
    stat = Path(warehouse).stat()
    return (str(Path(warehouse).resolve()), stat.st_size, stat.st_mtime_ns)


def cached(key: tuple, build: Callable[[], dict[str, Chart]]) -> dict[str, Chart]:
    """`build()` once per key; only the latest key is kept (figures are a few hundred kB)."""
    if key not in _cache:
        charts = build()
        _cache.clear()
        _cache[key] = charts
    return _cache[key]


def clear_cache() -> None:
    """Forget the kept rendering: the next caller draws the figures afresh (e.g. to check
    that a report drawn on its own gives the bytes of an export)."""
    _cache.clear()


# --- the files ---------------------------------------------------------------------------


def write_figures(charts: dict[str, Chart], folder: Path, run_id: str | None) -> list[dict]:
    """`figures/<name>.png` and `.svg` under `folder` for each drawn chart; a manifest entry
    for every figure. A chart the report shows as a notice in words writes no file: its entry
    has `file: null` and the notice."""
    entries = []
    for key, name in FIGURE_FILES.items():
        chart = charts.get(key)
        if chart is None:
            continue
        entry: dict[str, Any] = {"figure": name, "title": chart.title, "run_id": run_id}
        if chart.png is None or chart.svg is None:
            entries.append({**entry, "file": None, "svg": None, "notice": chart.notice})
            continue
        png, svg = f"{FIGURES_DIR}/{name}.png", f"{FIGURES_DIR}/{name}.svg"
        (folder / FIGURES_DIR).mkdir(exist_ok=True)
        svg_bytes = chart.svg.encode("utf-8")  # bytes: no newline translation
        (folder / png).write_bytes(chart.png)
        (folder / svg).write_bytes(svg_bytes)
        entries.append({**entry, "file": png, "sha256": _sha256(chart.png),
                        "svg": svg, "svg_sha256": _sha256(svg_bytes)})  # fmt: skip
    return entries


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
