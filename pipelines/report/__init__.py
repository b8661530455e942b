"""The study report (`redflags report`, docs/report.md): one self-contained HTML page, and
its figures as files, drawn only from the release tables. One module per concern:

- `render.py`: the entry point (`write_report`) and the page (`render_html`, the template
  `pipelines/templates/report.html.j2`);
- `load.py`: reading one run's release, run record and data-quality profile (`Released`);
- `text.py`: the words (labels of codes), values as text, and the page model;
- `tables.py`: the result tables; `clinical.py`: the clinical tables (Table 1, care,
  prognosis); `methods.py`: model validation and the STARD checklist; `provenance.py`:
  the run record and input data quality;
- `plots.py`: the figures drawn with matplotlib; `figures.py`: their PNG/SVG bytes, the
  one rendering per warehouse state, and the files of the release folder.

The names below are what callers use (`from pipelines.report import write_report`).
"""

from pipelines.report.figures import FIGURE_FILES, write_figures
from pipelines.report.load import load_released
from pipelines.report.plots import charts, release_charts
from pipelines.report.render import render_html, write_report
from pipelines.report.text import (
    ANALYSIS_LABELS,
    CIF_DAYS,
    COLOURS,
    DASH,
    FIGURE_STYLE,
    GROUP_STYLE,
    KEY_LABELS,
    MEASURE_LABELS,
    MIN_CALIBRATION_BINS,
    MODALITY_LABELS,
    POPULATION_STEPS,
    RULES,
    STEP_LABELS,
    SUBGROUP_LABELS,
    SUPPRESSED,
    Box,
    Chart,
    Fmt,
    Released,
    Table,
)

__all__ = [
    "ANALYSIS_LABELS",
    "CIF_DAYS",
    "COLOURS",
    "DASH",
    "FIGURE_FILES",
    "FIGURE_STYLE",
    "GROUP_STYLE",
    "KEY_LABELS",
    "MEASURE_LABELS",
    "MIN_CALIBRATION_BINS",
    "MODALITY_LABELS",
    "POPULATION_STEPS",
    "RULES",
    "STEP_LABELS",
    "SUBGROUP_LABELS",
    "SUPPRESSED",
    "Box",
    "Chart",
    "Fmt",
    "Released",
    "Table",
    "charts",
    "load_released",
    "release_charts",
    "render_html",
    "write_figures",
    "write_report",
]
