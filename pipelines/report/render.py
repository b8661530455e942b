"""`redflags report`: one self-contained HTML page from the release tables.

The report reads only `release.*` (already under disclosure control) and `meta.runs` (for
provenance); it never touches `mart.*` or row-level data, so the page can leave the secure
environment. Figures are embedded as base64 PNG, CSS is inline, nothing is fetched.
Empty or suppressed results are said in words, never drawn as if they were findings.

This module owns the entry point and the page: it reads the release (`load`), draws the
figures (`plots`), builds the sections (`tables`, `clinical`, `methods`, `provenance`) and
renders the template `pipelines/templates/report.html.j2`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pipelines.report.clinical import (
    care_table,
    caution,
    prognosis_table,
    sre_table,
    table_one_tables,
)
from pipelines.report.load import load_released
from pipelines.report.plots import charts, release_charts
from pipelines.report.provenance import provenance, quality_tables
from pipelines.report.tables import (
    accuracy_tables,
    at_risk_table,
    attrition,
    default_parameters,
    headline,
    pathway_table,
    performance_table,
    sensitivity_table,
    ttd_table,
    two_by_two_tables,
)
from pipelines.report.text import Chart, Fmt, Released

# --- the entry point -------------------------------------------------------------------


def write_report(warehouse: Path, out: Path, run_id: str | None = None) -> Path:
    """Render the report of `run_id` (default: the latest released run) to `out`."""
    from pipelines.errors import UserFacingError
    from pipelines.report.figures import warehouse_state
    from pipelines.warehouse import open_warehouse

    warehouse, out = Path(warehouse), Path(out)
    if not warehouse.exists():
        raise UserFacingError(f"warehouse not found: {warehouse}")
    state = warehouse_state(warehouse)  # before reading: the key of what is read
    with open_warehouse(warehouse, read_only=True) as con:
        data = load_released(con, run_id)
    html = render_html(data, release_charts(data, state))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out


def render_html(data: Released, figures: dict[str, Chart] | None = None) -> str:
    """The whole page as one HTML string (`figures`: `charts(data)`, drawn when not given)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("pipelines", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    from pipelines.report import methods  # issue 14: model validation, STARD checklist

    fmt = Fmt()
    figures = charts(data) if figures is None else figures
    context = figures | {
        "title": "Back pain as a red flag for bone metastasis of breast cancer",
        "run_id": data.run_id,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "min_cell": data.min_cell,
        "suppressed": fmt.suppressed,
        "headline": headline(data, fmt),
        "attrition": attrition(data, fmt),
        "at_risk_table": at_risk_table(data, fmt),
        "ttd_table": ttd_table(data, fmt),
        "pathway_table": pathway_table(data, fmt),
        "two_by_two": two_by_two_tables(data, fmt),
        "accuracy_tables": accuracy_tables(data, fmt),
        "performance_table": performance_table(data, fmt),
        "validation_tables": methods.model_validation_tables(data, fmt),
        "indeterminate_table": methods.indeterminate_table(data, fmt, data.min_cell),
        "stard_table": methods.stard_checklist(data, fmt, default_parameters() | data.parameters),
        "sensitivity_table": sensitivity_table(data, fmt),
        "table_one_tables": table_one_tables(data, fmt),
        "care_table": care_table(data, fmt),
        "sre_table": sre_table(data, fmt),
        "prognosis_table": prognosis_table(data, fmt),
        "caution": caution(),
        "provenance": provenance(data),
        "quality_tables": quality_tables(data),
    }
    return env.get_template("report.html.j2").render(**context)
