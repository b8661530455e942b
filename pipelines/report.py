"""`redflags report`: one self-contained HTML page from the release tables.

The report reads only `release.*` (already under disclosure control) and `meta.runs` (for
provenance); it never touches `mart.*` or row-level data, so the page can leave the secure
environment. Figures are embedded as base64 PNG, CSS is inline, nothing is fetched.
Empty or suppressed results are said in words, never drawn as if they were findings.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.report_text import (  # noqa: F401 (re-exported: report.RULES, ...)
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
    _json,
    _missing,
    _none_if_na,
    _rule_label,
    _sig,
    _stratum_label,
)

if TYPE_CHECKING:  # heavy imports stay inside the functions: `redflags --help` stays quick
    import duckdb
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
# --- the entry point -------------------------------------------------------------------


def write_report(warehouse: Path, out: Path, run_id: str | None = None) -> Path:
    """Render the report of `run_id` (default: the latest released run) to `out`."""
    from pipelines.errors import UserFacingError
    from pipelines.figures import warehouse_state
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


def load_released(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> Released:
    """Read the release tables of one run, and that run's record from meta.runs."""
    from pipelines.errors import UserFacingError
    from pipelines.settings import StudySettings
    from pipelines.warehouse import tables_in

    present = tables_in(con, "release")
    if not present:
        raise UserFacingError(
            "the warehouse has no release tables yet: run the study first (redflags run)"
        )
    released_ids = _released_run_ids(con, present)
    runs = _runs(con)
    if run_id is None:
        candidates = [r for r in runs if not released_ids or r["run_id"] in released_ids]
        run_id = candidates[0]["run_id"] if candidates else max(released_ids, default=None)
    elif released_ids and run_id not in released_ids:
        raise UserFacingError(
            f"run {run_id} has no release tables; released: {', '.join(sorted(released_ids))}"
        )
    tables = {t: _read_release(con, t, run_id) for t in present}
    run = next((r for r in runs if r["run_id"] == run_id), {})
    params = _json(run.get("parameters")) or {}
    min_cell = int(params.get("min_cell", StudySettings().min_cell))
    params = params if isinstance(params, dict) else {}
    return Released(tables, run, run_id, min_cell, params, quality=_read_quality(con, run_id))


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?"
        " ORDER BY column_index",
        [schema, table],
    ).fetchall()
    return [r[0] for r in rows]


def _released_run_ids(con: duckdb.DuckDBPyConnection, tables: list[str]) -> set[str]:
    ids: set[str] = set()
    for t in tables:
        # run_history lists every earlier run too (pipelines/history.py): not this release's
        if t != "run_history" and "run_id" in _columns(con, "release", t):
            rows = con.execute(f'SELECT DISTINCT run_id FROM release."{t}"').fetchall()
            ids.update(r[0] for r in rows if r[0] is not None)
    return ids


def _runs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    from pipelines.warehouse import table_exists

    if not table_exists(con, "meta", "runs"):
        return []
    df = con.execute("SELECT * FROM meta.runs ORDER BY started_at DESC NULLS LAST").df()
    return [{k: _none_if_na(v) for k, v in row.items()} for row in df.to_dict("records")]


def _read_release(con: duckdb.DuckDBPyConnection, table: str, run_id: str | None) -> pd.DataFrame:
    if run_id is not None and "run_id" in _columns(con, "release", table):
        return con.execute(f'SELECT * FROM release."{table}" WHERE run_id = ?', [run_id]).df()
    return con.execute(f'SELECT * FROM release."{table}"').df()


def charts(data: Released) -> dict[str, Chart]:
    """Every figure of the page (template key -> Chart), each drawn once as PNG and SVG."""
    import matplotlib

    fmt = Fmt()
    with matplotlib.rc_context(FIGURE_STYLE):
        return {
            "cif_figure": _cif_figure(data),
            "forest_figure": _forest_figure(data, fmt),
            "roc_figure": _roc_figure(data, fmt),
            "calibration_figure": _calibration_figure(data, fmt),
            "decision_figure": _decision_figure(data),
            "survival_figure": _survival_figure(data),
        }


def release_charts(data: Released, state: tuple) -> dict[str, Chart]:
    """`charts(data)`, rendered once per warehouse state (`figures.warehouse_state`, taken
    before `data` was read) and run: a run's report and release folder share the drawing."""
    from pipelines.figures import cached

    return cached((*state, data.run_id), lambda: charts(data))


def render_html(data: Released, figures: dict[str, Chart] | None = None) -> str:
    """The whole page as one HTML string (`figures`: `charts(data)`, drawn when not given)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("pipelines", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    from pipelines import report_methods  # issue 14: model validation, STARD checklist

    fmt = Fmt()
    figures = charts(data) if figures is None else figures
    context = figures | {
        "title": "Back pain as a red flag for bone metastasis of breast cancer",
        "run_id": data.run_id,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "min_cell": data.min_cell,
        "suppressed": fmt.suppressed,
        "headline": _headline(data, fmt),
        "attrition": _attrition(data, fmt),
        "at_risk_table": _at_risk_table(data, fmt),
        "ttd_table": _ttd_table(data, fmt),
        "pathway_table": _pathway_table(data, fmt),
        "two_by_two": _two_by_two_tables(data, fmt),
        "accuracy_tables": _accuracy_tables(data, fmt),
        "performance_table": _performance_table(data, fmt),
        "validation_tables": report_methods.model_validation_tables(data, fmt),
        "indeterminate_table": report_methods.indeterminate_table(data, fmt, data.min_cell),
        "stard_table": report_methods.stard_checklist(
            data, fmt, _default_parameters() | data.parameters
        ),
        "sensitivity_table": _sensitivity_table(data, fmt),
        "table_one_tables": _table_one_tables(data, fmt),
        "care_table": _care_table(data, fmt),
        "sre_table": _sre_table(data, fmt),
        "prognosis_table": _prognosis_table(data, fmt),
        "caution": _caution(),
        "provenance": _provenance(data),
        "quality_tables": _quality_tables(data),
    }
    return env.get_template("report.html.j2").render(**context)


# --- summary and attrition -------------------------------------------------------------


def _headline(data: Released, fmt: Fmt) -> list[tuple[str, str]]:
    ttd = data.table("time_to_diagnosis")
    overall = ttd[ttd["stratum_variable"] == "overall"] if len(ttd) else ttd
    items = []
    if len(overall):
        row = overall.iloc[0]
        items += [
            ("Back-pain episodes in the cohort", fmt.count(row["n_episodes"])),
            ("Diagnosed with bone metastasis in follow-up", fmt.count(row["n_diagnosed"])),
            ("Median days from back-pain onset to diagnosis (IQR)", _days_or_none(row, fmt)),
        ]
    score = _subgroup(data.table("score_performance"), "all")
    if len(score):
        row = score.iloc[0]
        items += [
            ("Episodes in the landmark population (accuracy analyses)", fmt.count(row["n"])),
            ("AUROC of the red-flag count (95% CI)", _auroc_text(row, fmt)),
        ]
    return items


def _auroc_text(row: Any, fmt: Fmt) -> str:
    if not _missing(row["auroc"]):
        return fmt.ratio(row["auroc"], row["auroc_lower"], row["auroc_upper"])
    if not _missing(row["n_events"]) and row["n_events"] == 0:
        return "not estimable (no events)"
    return "not estimable" if row.get("note") else "suppressed"


def _days_or_none(row: Any, fmt: Fmt) -> str:
    if not _missing(row["n_diagnosed"]) and row["n_diagnosed"] == 0:
        return "no diagnoses"
    return fmt.days(row["median_days"], row["q1_days"], row["q3_days"])


def _attrition(data: Released, fmt: Fmt) -> list[Box]:
    from pipelines.report_methods import EXCLUSION_REASONS

    df = data.table("attrition")
    if not len(df):
        return []
    params = _default_parameters() | data.parameters
    params["sexes"] = ", ".join(params.get("sexes") or [])
    boxes = []
    for i, row in enumerate(df.sort_values("step_order").to_dict("records")):
        step = str(row["step"])
        template = STEP_LABELS.get(step)
        label = template.format(**params) if template else step.replace("_", " ").capitalize()
        boxes.append(
            Box(
                label=label,
                n=fmt.count(row["n_remaining"]),
                excluded=None if i == 0 else fmt.count(row["n_excluded"]),
                is_population=step in POPULATION_STEPS,
                reason=EXCLUSION_REASONS[step].format(**params)
                if step in EXCLUSION_REASONS
                else None,
            )
        )
    return boxes


def _default_parameters() -> dict[str, Any]:
    from pipelines.settings import StudySettings

    return StudySettings().as_dict()


# --- figures ---------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    fig.patch.set_facecolor("white")
    return fig


def _images(fig: Figure) -> dict[str, Any]:
    """A Chart's drawing: rendered once as PNG and SVG (pipelines/figures.py); the page
    embeds the PNG bytes that the release folder writes to figures/<name>.png."""
    from pipelines.figures import render

    drawn = render(fig)
    uri = "data:image/png;base64," + base64.b64encode(drawn.png).decode("ascii")
    return {"image": uri, "png": drawn.png, "svg": drawn.svg}


def _style(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


def _subgroup(df: pd.DataFrame, subgroup: str) -> pd.DataFrame:
    return df[df["subgroup"] == subgroup] if len(df) and "subgroup" in df else df.iloc[0:0]


def _cif_figure(data: Released) -> Chart:
    title = "Figure 2. Cumulative incidence of bone-metastasis diagnosis after back-pain onset"
    caption = (
        "Aalen-Johansen estimate with death as a competing risk; shaded bands are 95% "
        "confidence intervals. Day 0 is the first visit of the back-pain episode. Numbers "
        "below give the episodes still at risk (rounded). Disclosure control coarsens the "
        f"curves: a curve steps only once at least {data.min_cell} diagnoses have accumulated "
        "since its previous step (days in between are pooled), it is flat after its last step, "
        f"it has no step where fewer than {data.min_cell} episodes remain at risk, and a "
        "stratum whose number diagnosed is suppressed in Table 1 is not drawn."
    )
    cif = data.table("cumulative_incidence")
    caption += _time_zero_note(cif)
    ttd = data.table("time_to_diagnosis")
    overall = ttd[ttd["stratum_variable"] == "overall"].to_dict("records") if len(ttd) else []
    episodes = overall[0]["n_episodes"] if overall else None
    if not _missing(episodes) and episodes == 0:
        return Chart(
            title,
            caption,
            notice="The cohort is empty: no back-pain episode met the study criteria.",
        )
    diagnosed = overall[0]["n_diagnosed"] if overall else None
    if (not _missing(diagnosed) and diagnosed == 0) or (
        len(cif) and not (cif["estimate"].fillna(0) > 0).any()
    ):
        return Chart(
            title,
            caption,
            notice=(
                "No events: no episode had a bone-metastasis diagnosis during follow-up, so "
                "the cumulative incidence is zero throughout and no curve is drawn. (Plain "
                "Synthea exports contain no bone metastasis.)"
            ),
        )
    if not len(cif):
        return Chart(title, caption, notice="No cumulative-incidence estimates were released.")
    panels = [
        ("overall", "All episodes"),
        ("red_flag_count", "By number of seed red flags"),
        ("breast_cancer_history", "By history of breast cancer"),
    ]
    cif = _drawable_strata(cif, ttd)
    panels = [(v, t) for v, t in panels if (cif["stratum_variable"] == v).any()]
    if not panels:
        return Chart(title, caption, notice="Every stratum's number diagnosed is suppressed.")
    fig = _new_figure(11, 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (variable, panel_title) in zip(axes, panels, strict=True):
        _cif_panel(ax, cif[cif["stratum_variable"] == variable], variable)
        ax.set_title(panel_title)
        ax.set_xlabel("Days since back-pain onset")
    axes[0].set_ylabel("Cumulative incidence of diagnosis")
    return Chart(title, caption, **_images(fig), alt="Cumulative incidence curves by stratum")


def _time_zero_note(cif: pd.DataFrame) -> str:
    """Which time zero each curve uses (PROTOCOL 6.5), from the table's time_zero_day."""
    if "time_zero_day" not in cif.columns or not len(cif):
        return ""
    late = cif[cif["time_zero_day"] > 0]
    if not len(late):
        return ""
    day = int(late["time_zero_day"].iloc[0])
    return (
        f" Time zero: the curves by number of seed red flags start at the landmark (day {day}), "
        "among episodes alive, under observation and undiagnosed then, because the flags are "
        "assessed up to the landmark; the other curves start at day 0."
    )


def _cif_panel(ax: Axes, df: pd.DataFrame, variable: str) -> None:
    import pandas as pd
    from matplotlib.ticker import PercentFormatter

    for colour, stratum in zip(COLOURS, dict.fromkeys(df["stratum"].astype(str)), strict=False):
        s = df[df["stratum"].astype(str) == stratum].sort_values("day")
        # a coarsened curve is flat after its last released step, up to the horizon
        s = pd.concat([s, s.tail(1).assign(day=max(365, int(s["day"].max())))])
        label = _stratum_label(variable, stratum)
        ax.plot(s["day"], s["estimate"], drawstyle="steps-post", color=colour, label=label, lw=1.8)
        ax.fill_between(
            s["day"], s["lower"], s["upper"], step="post", color=colour, alpha=0.18, lw=0
        )
    ax.set_xlim(0, max(365, float(df["day"].max())))
    ax.set_xticks([0, 90, 180, 270, 365])
    top = df["upper"].max(skipna=True)
    ax.set_ylim(0, max(0.01, 1.15 * float(top if not _missing(top) else 0)))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    _style(ax)
    ax.legend(loc="upper left", frameon=False)


def _at_risk_table(data: Released, fmt: Fmt) -> Table:
    """Number at risk under the curves, as in a Kaplan-Meier figure."""
    cif = data.table("cumulative_incidence")
    days = (0, 90, 180, 270, 365)
    rows = []
    if len(cif):
        keys = cif[["stratum_variable", "stratum"]].astype(str).drop_duplicates()
        for variable, stratum in keys.itertuples(index=False):
            s = cif[(cif["stratum_variable"] == variable) & (cif["stratum"].astype(str) == stratum)]
            s = s.sort_values("day")
            # after its last released day a curve has ended: no number at risk is known
            cells = [
                fmt.count(s[s["day"] <= d].iloc[-1]["at_risk"])
                if s["day"].min() <= d <= s["day"].max()
                else DASH  # before a curve's time zero (landmark) or after its end
                for d in days
            ]
            rows.append([_stratum_label(variable, stratum), *cells])
    return Table(["Number at risk", *(f"Day {d}" for d in days)], rows)


def _forest_figure(data: Released, fmt: Fmt) -> Chart:
    title = "Figure 3. Likelihood ratios of each red flag (all episodes)"
    caption = (
        "Positive (LR+) and negative (LR\u2212) likelihood ratios with 95% confidence intervals "
        "(log method, 0.5 added to every cell of a table with a zero cell), on a log scale. "
        "LR+ above 1 raises and LR\u2212 below 1 lowers the probability of metastasis; "
        "the dashed line (1) is no information. Blue: the six seed red flags; orange: flags "
        "from the literature; black: combinations. Reference standard: bone-metastasis diagnosis "
        "within the horizon, among episodes alive and undiagnosed at the landmark. "
        f"'Suppressed' marks a ratio built on a count below {data.min_cell} (or on a count "
        "hidden so that a small one cannot be worked out)."
    )
    acc = _subgroup(data.table("flag_accuracy"), "all")
    if not len(acc):
        return Chart(title, caption, notice="No accuracy estimates were released.")
    if acc["lr_positive"].isna().all() and acc["lr_negative"].isna().all():
        return Chart(title, caption, notice=_no_events_text(acc))
    acc = acc.assign(order=acc["rule"].map(_rule_order)).sort_values("order", ascending=False)
    fig = _new_figure(11, 0.42 * len(acc) + 1.4)
    axes = fig.subplots(1, 2, sharey=True)
    y = list(range(len(acc)))
    for ax, measure, name in (
        (axes[0], "lr_positive", "LR+"),
        (axes[1], "lr_negative", "LR\u2212"),
    ):
        _forest_panel(ax, acc, measure, y)
        ax.set_title(f"{name} (95% CI)")
        ax.set_xlabel(f"{name}, log scale")
    axes[0].set_yticks(y, [_rule_label(r) for r in acc["rule"]])
    axes[0].set_ylim(-0.7, len(acc) - 0.3)
    return Chart(title, caption, **_images(fig), alt="Forest plot of likelihood ratios")


def _rule_order(rule: str) -> int:
    order = list(RULES)
    return order.index(rule) if rule in order else len(order)


def _forest_panel(ax: Axes, acc: pd.DataFrame, measure: str, y: list[int]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    est, lo, hi = acc[measure], acc[f"{measure}_lower"], acc[f"{measure}_upper"]
    finite = [v for v in (*lo.dropna(), *hi.dropna(), *est.dropna()) if v > 0]
    left, right = (min(finite + [0.5]) / 1.6, max(finite + [2.0]) * 1.6) if finite else (0.1, 10)
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.axvline(1, color="#555555", ls="--", lw=0.9)
    reasons = [_why_missing(r) for r in acc.to_dict("records")]
    for yi, e, a, b, rule, why in zip(y, est, lo, hi, acc["rule"], reasons, strict=True):
        colour, marker = GROUP_STYLE[RULES.get(rule, ("", "literature"))[1]]
        if _missing(e):
            ax.text(math.sqrt(left * right), yi, why, ha="center",
                    va="center", fontsize=9, color="#777777", style="italic",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # fmt: skip
            continue
        if not _missing(a) and not _missing(b):
            ax.plot([a, b], [yi, yi], color=colour, lw=1.6)
        ax.plot([e], [yi], marker=marker, color=colour, ms=6)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    _style(ax)
    ax.grid(False, axis="y")


def _why_missing(row: dict) -> str:
    """Why an accuracy estimate is absent: no events, suppression, or a degenerate table."""
    note = str(row.get("note") or "")
    if "not applicable" in note:  # a tautology in this subgroup (issue 14 item 6)
        return "not applicable (the rule contains the subgroup's defining flag)"
    if "no events" in note:
        return "not estimable (no events)"
    if "not ascertainable" in note and "partly" not in note:
        return "not ascertainable in these data"
    if any(_missing(row.get(c)) for c in ("tp", "fp", "fn", "tn")):
        return "suppressed (small counts)"
    return "not estimable"


def _no_events_text(acc: pd.DataFrame) -> str:
    notes = acc["note"].fillna("").astype(str) if "note" in acc else None
    no_events = notes.str.contains("no events").all() if notes is not None else False
    events = acc["tp"] + acc["fn"]
    if no_events or (events.notna().all() and (events == 0).all()):
        return (
            "No events: no episode in the landmark population had a bone-metastasis diagnosis "
            "within the horizon, so sensitivity and likelihood ratios cannot be estimated. "
            "The 2x2 tables below show the counts."
        )
    return (
        "Every likelihood ratio is suppressed: each 2x2 table has a count below the "
        "disclosure threshold (or one hidden to protect such a count)."
    )


def _drawable_strata(cif: pd.DataFrame, ttd: pd.DataFrame) -> pd.DataFrame:
    """Curves of strata whose number diagnosed is released: the figure agrees with Table 1."""
    if not len(ttd):
        return cif
    shown = ttd.loc[ttd["n_diagnosed"].notna(), ["stratum_variable", "stratum"]].astype(str)
    keys = set(shown.itertuples(index=False, name=None))
    pairs = zip(cif["stratum_variable"].astype(str), cif["stratum"].astype(str), strict=True)
    return cif[[p in keys for p in pairs]]


def _roc_figure(data: Released, fmt: Fmt) -> Chart:
    title = "Figure 4. ROC curve of the red-flag count (all episodes)"
    caption = (
        "Each point is a cut-off 'at least k of the six seed red flags'; the diagonal is a "
        "test with no discrimination. AUROC with DeLong 95% CI. Disclosure control releases a "
        f"cut-off only where at least {data.min_cell} cases and non-cases (or none) lie between "
        "it and its released neighbours; lines join the released points."
    )
    roc = _subgroup(data.table("roc_points"), "all")
    score = _subgroup(data.table("score_performance"), "all")
    auroc = score.iloc[0] if len(score) else None
    if auroc is None or _missing(auroc["auroc"]):
        events = auroc["n_events"] if auroc is not None else None
        why = "no events" if not _missing(events) and events == 0 else "not released"
        return Chart(title, caption, notice=f"ROC curve and AUROC not estimable ({why}).")
    pts = roc.dropna(subset=["sensitivity", "false_positive_rate"]).sort_values(
        ["false_positive_rate", "sensitivity"]
    )
    inner = (pts["false_positive_rate"].between(0, 1, inclusive="neither")) | (
        pts["sensitivity"].between(0, 1, inclusive="neither")
    )
    if not inner.any():  # only the corners: a straight line would look like a result
        auc = fmt.ratio(auroc["auroc"], auroc["auroc_lower"], auroc["auroc_upper"])
        return Chart(
            title,
            caption,
            notice=f"Every ROC point is suppressed (small counts), so no curve is drawn. AUROC {auc}.",
        )
    fig = _new_figure(6.4, 5.2)
    ax = fig.subplots()
    x = [0.0, *pts["false_positive_rate"], 1.0]
    y = [0.0, *pts["sensitivity"], 1.0]
    label = f"Red-flag count: AUROC {fmt.ratio(auroc['auroc'], auroc['auroc_lower'], auroc['auroc_upper'])}"
    ax.plot(x, y, color=COLOURS[0], marker="o", ms=4, lw=1.8, label=label)
    for row in pts.itertuples(index=False):
        if 0 < row.false_positive_rate < 1 or 0 < row.sensitivity < 1:
            ax.annotate(f"\u2265{row.threshold:g}", (row.false_positive_rate, row.sensitivity),
                        xytext=(6, -12), textcoords="offset points")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="#888888", ls="--", lw=0.9, label="No discrimination")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("1 \u2212 specificity (false-positive rate)")
    ax.set_ylabel("Sensitivity")
    ax.legend(loc="lower right")
    _style(ax)
    return Chart(title, caption, **_images(fig), alt="ROC curve of the red-flag count")


def _calibration_figure(data: Released, fmt: Fmt) -> Chart:
    title = "Figure 5. Calibration of the logistic model on all flags (all episodes)"
    caption = (
        "Cross-validated predicted risk against the observed proportion with metastasis. "
        "Line: smoothed observed risk (tricube kernel on the logit of predicted risk) at each "
        "decile's mean predicted risk, each point averaging over a window that weighs at least "
        f"{data.min_cell} events and {data.min_cell} non-events. Markers: bins of predicted "
        "risk (area proportional to the number of episodes), neighbouring deciles pooled until "
        f"each bin holds no events or at least {data.min_cell} events, and no or at least "
        f"{data.min_cell} non-events (disclosure control). The dashed line is perfect calibration."
    )
    cal = _subgroup(data.table("calibration"), "all")
    smooth = _subgroup(data.table("calibration_smoothed"), "all")
    perf = _subgroup(data.table("model_performance"), "all")
    pts = cal.dropna(subset=["mean_predicted", "observed_rate"]) if len(cal) else cal
    line = smooth.dropna(subset=["mean_predicted", "observed_smoothed"]) if len(smooth) else smooth
    if not len(cal) and not len(smooth):
        return Chart(title, caption, notice=_model_notice(perf, "calibration plot"))
    if len(pts) < MIN_CALIBRATION_BINS and len(line) < MIN_CALIBRATION_BINS:
        return Chart(
            title,
            caption,
            notice=(
                f"Only {len(pts)} of {len(cal)} bins and {len(line)} of {len(smooth)} smoothed "
                "points of predicted risk are released (the others rest on suppressed counts), "
                "too few to judge calibration; see Table 3."
            ),
        )
    from matplotlib.ticker import PercentFormatter

    fig = _new_figure(6.4, 5.2)
    ax = fig.subplots()
    values = [*pts["mean_predicted"], *pts["observed_rate"], *line["mean_predicted"],
              *line["observed_smoothed"], 0.01]  # fmt: skip
    top = max(float(v) for v in values) * 1.1
    ax.plot([0, top], [0, top], color="#888888", ls="--", lw=0.9, label="Perfect calibration")
    if len(line):
        line = line.sort_values("mean_predicted")
        ax.plot(line["mean_predicted"], line["observed_smoothed"], "-o", ms=4, lw=1.4,
                color=COLOURS[1], label="Smoothed, at each decile", zorder=4)  # fmt: skip
    if len(pts):
        sizes = 20 + 200 * pts["n"].fillna(0) / max(float(pts["n"].max() or 1), 1)
        ax.scatter(pts["mean_predicted"], pts["observed_rate"], s=sizes, color=COLOURS[0],
                   alpha=0.6, label="Pooled bins of predicted risk", zorder=3)  # fmt: skip
    if len(perf):
        p = perf.iloc[0]
        text = (
            f"Calibration intercept {fmt.ratio(p['calibration_intercept'])}\n"
            f"Calibration slope {fmt.ratio(p['calibration_slope'])}\n"
            f"Brier score {_brier(p['brier_score'])}"
        )
        ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("Predicted risk of metastasis")
    ax.set_ylabel("Observed proportion with metastasis")
    ax.legend(loc="lower right")
    _style(ax)
    return Chart(title, caption, **_images(fig), alt="Calibration plot")


def _brier(v: Any) -> str:
    return DASH if _missing(v) else f"{v:.3f}"


def _model_notice(perf: pd.DataFrame, what: str) -> str:
    if not len(perf) or _missing(perf.iloc[0].get("n_events")) or perf.iloc[0]["n_events"] == 0:
        return f"No {what}: the model was not fitted (no events in the landmark population)."
    return f"No {what}: every bin rests on a count below the disclosure threshold."


def _decision_figure(data: Released) -> Chart:
    title = "Figure 6. Decision curve (all episodes)"
    caption = (
        "Net benefit of referring for spinal imaging when the model's predicted risk exceeds "
        "the threshold, compared with imaging everyone (treat all) and no one (treat none). "
        "Net benefit = true positives/N \u2212 false positives/N \u00d7 t/(1\u2212t). "
        "Disclosure control coarsens the model's curve: at each threshold the model refers at "
        "the nearest released cut-off (treat all counts as a cut-off of 0), where "
        "released cut-offs are at least "
        f"{data.min_cell} cases and non-cases (or none) apart."
    )
    dc = _subgroup(data.table("decision_curve"), "all")
    perf = _subgroup(data.table("model_performance"), "all")
    if not len(dc) or dc["net_benefit_model"].isna().all():
        return Chart(title, caption, notice=_model_notice(perf, "decision curve"))
    from matplotlib.ticker import PercentFormatter

    dc = dc.sort_values("threshold")
    fig = _new_figure(6.4, 5.2)
    ax = fig.subplots()
    lines = (
        ("net_benefit_model", "Logistic model (all flags)", COLOURS[0], "-"),
        ("net_benefit_treat_all", "Treat all (image everyone)", COLOURS[1], "--"),
        ("net_benefit_treat_none", "Treat none", "#555555", ":"),
    )
    for column, label, colour, style in lines:
        ax.plot(dc["threshold"], dc[column], color=colour, ls=style, lw=1.8, label=label)
    if "step_threshold" in dc.columns:  # the released cut-offs of the coarsened curve
        steps = dc[(dc["threshold"] - dc["step_threshold"]).abs() < 1e-9]
        ax.plot(steps["threshold"], steps["net_benefit_model"], "o", color=COLOURS[0], ms=5,
                label="Released cut-off")  # fmt: skip
    peak = max(float(dc[[c for c, *_ in lines]].max(skipna=True).max()), 0.005)
    ax.set_ylim(-0.25 * peak, 1.15 * peak)
    ax.set_xlim(float(dc["threshold"].min()), float(dc["threshold"].max()))
    ax.set_xticks(
        [t for t in (0.01, 0.05, 0.10, 0.15, 0.20) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    )
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("Threshold probability of metastasis")
    ax.set_ylabel("Net benefit")
    ax.legend(loc="upper right")
    _style(ax)
    return Chart(title, caption, **_images(fig), alt="Decision curve")


# --- tables ----------------------------------------------------------------------------


def _ttd_table(data: Released, fmt: Fmt) -> Table:
    ttd = data.table("time_to_diagnosis")
    columns = ["Stratum", "Episodes", "Diagnosed", "Died (competing)", "Censored",
               "Days to diagnosis, median (IQR)"]  # fmt: skip
    columns += [f"Cumulative incidence at {d} days, % (95% CI) [at risk]" for d in CIF_DAYS]
    rows = []
    for row in ttd.to_dict("records"):
        cells = [
            _stratum_label(row["stratum_variable"], str(row["stratum"])),
            fmt.count(row["n_episodes"]),
            fmt.count(row["n_diagnosed"]),
            fmt.count(row["n_died"]),
            fmt.count(row["n_censored"]),
            _days_or_none(row, fmt),
        ]
        for d in CIF_DAYS:
            est = fmt.pct(row.get(f"cif_{d}"), row.get(f"cif_{d}_lower"), row.get(f"cif_{d}_upper"))
            cells.append(f"{est} [{fmt.count(row.get(f'at_risk_{d}'))}]")
        rows.append(cells)
    return Table(
        columns,
        rows,
        title="Table 1. Time from back-pain onset to diagnosis of bone metastasis",
        caption=(
            "Follow-up runs from the first visit of the episode to the earliest of diagnosis, "
            "death, end of observation and the horizon. Median and IQR are among those "
            "diagnosed. Cumulative incidence treats death as a competing risk. Time zero: "
            "the index date, except for the strata by number of seed red flags (assessed up "
            "to the landmark), which contain only episodes alive, observed and undiagnosed at "
            "the landmark and start there (no estimate before it)."
        ),
    )


def _pathway_table(data: Released, fmt: Fmt) -> Table:
    df = data.table("diagnostic_pathway")
    rows = []
    for row in df.to_dict("records"):
        measure, category = str(row["measure"]), str(row["category"])
        modality = MODALITY_LABELS.get(category, category)
        if measure == "days_onset_to_first_imaging":
            label = "Back-pain onset to first spine imaging" + (
                "" if category == "all" else f", first imaging {modality}"
            )
        elif measure == "days_imaging_to_diagnosis":
            label = "First spine imaging to diagnosis (imaged before diagnosis)"
        elif measure == "first_modality" and category == "all":
            label = "Diagnosed episodes: first spine imaging before diagnosis"
        elif measure == "first_modality" and category == "none":
            label = "\u2003No spine imaging before diagnosis"
        elif measure == "first_modality":
            label = f"\u2003{modality} first"
        else:
            label = f"{measure}: {category}"
        days = (
            ""
            if measure == "first_modality"
            else fmt.days(row["median_days"], row["q1_days"], row["q3_days"])
        )
        rows.append([label, fmt.count(row["n"]), days])
    return Table(
        ["Measure", "Episodes", "Days, median (IQR)"],
        rows,
        title="Table 2. Diagnostic pathway: spine imaging (X-ray, CT, MRI, bone scan)",
        caption="Spine imaging from procedures and imaging studies; episodes without imaging data are not ascertainable and left out. Days from onset count imaging within follow-up.",
    )  # fmt: skip


def _two_by_two_tables(data: Released, fmt: Fmt) -> list[Table]:
    acc = _subgroup(data.table("flag_accuracy"), "all")
    if not len(acc):
        return []
    acc = acc.assign(order=acc["rule"].map(_rule_order)).sort_values("order")
    tables = []
    for row in acc.to_dict("records"):
        cells = {k: row[k] for k in ("tp", "fp", "fn", "tn")}
        total = {k: _sum(cells[a], cells[b]) for k, (a, b) in
                 {"pos": ("tp", "fp"), "neg": ("fn", "tn"), "d": ("tp", "fn"), "nd": ("fp", "tn")}.items()}  # fmt: skip
        grand = _sum(total["pos"], total["neg"])
        rows = [
            [
                "Flag present",
                fmt.count(cells["tp"]),
                fmt.count(cells["fp"]),
                _total(total["pos"]),
            ],
            [
                "Flag absent",
                fmt.count(cells["fn"]),
                fmt.count(cells["tn"]),
                _total(total["neg"]),
            ],
            ["Total", _total(total["d"]), _total(total["nd"]), _total(grand)],
        ]
        caption = (
            f"Sensitivity {fmt.pct(row['sensitivity'], row['sensitivity_lower'], row['sensitivity_upper'])}; "
            f"specificity {fmt.pct(row['specificity'], row['specificity_lower'], row['specificity_upper'])}; "
            f"PPV {fmt.pct(row['ppv'], row['ppv_lower'], row['ppv_upper'])}; "
            f"NPV {fmt.pct(row['npv'], row['npv_lower'], row['npv_upper'])}."
        )
        tables.append(
            Table(
                ["", "Metastasis", "No metastasis", "Total"],
                rows,
                title=_rule_label(row["rule"]),
                caption=caption,
            )
        )
    return tables


def _total(v: Any) -> str:
    """A total that includes a hidden cell is not shown (it is not necessarily small)."""
    return DASH if v is None else f"{v:,}"


def _sum(a: Any, b: Any) -> Any:
    """A total only from shown cells: a total must never reveal a hidden one."""
    return None if _missing(a) or _missing(b) else int(a) + int(b)


def _accuracy_tables(data: Released, fmt: Fmt) -> list[Table]:
    acc = data.table("flag_accuracy")
    columns = ["Rule", "TP", "FP", "FN", "TN", "Sensitivity", "Specificity", "PPV", "NPV",
               "LR+", "LR\u2212", "Diagnostic odds ratio", "Note"]  # fmt: skip
    tables = []
    for subgroup in ("all", "female", "breast_cancer_history"):
        sub = _subgroup(acc, subgroup)
        if not len(sub):
            continue
        sub = sub.assign(order=sub["rule"].map(_rule_order)).sort_values("order")
        rows = [
            [
                _rule_label(r["rule"]),
                *(fmt.count(r[k]) for k in ("tp", "fp", "fn", "tn")),
                *(fmt.pct(r[m], r[f"{m}_lower"], r[f"{m}_upper"]) for m in ("sensitivity", "specificity", "ppv", "npv")),
                *(fmt.ratio(r[m], r[f"{m}_lower"], r[f"{m}_upper"]) for m in ("lr_positive", "lr_negative", "diagnostic_odds_ratio")),
                str(r.get("note") or ""),
            ]
            for r in sub.to_dict("records")
        ]  # fmt: skip
        tables.append(
            Table(
                columns,
                rows,
                title=f"Accuracy of each rule: {SUBGROUP_LABELS.get(subgroup, subgroup)}",
                caption="TP/FP/FN/TN: true/false positives/negatives. Proportions with Wilson 95% CIs; ratios with log-method 95% CIs. 'Partly ascertainable': the flag needs data some episodes lack; those episodes are left out of its table.",
            )
        )
    return tables


def _performance_table(data: Released, fmt: Fmt) -> Table:
    rows = []
    for r in data.table("score_performance").to_dict("records"):
        subgroup = SUBGROUP_LABELS.get(r["subgroup"], r["subgroup"])
        rows.append(
            [f"Red-flag count ({subgroup})", fmt.count(r["n"]), fmt.count(r["n_events"]),
             fmt.ratio(r["auroc"], r["auroc_lower"], r["auroc_upper"]), DASH, DASH, DASH,
             str(r.get("note") or "")]
        )  # fmt: skip
    for r in data.table("model_performance").to_dict("records"):
        subgroup = SUBGROUP_LABELS.get(r["subgroup"], r["subgroup"])
        folds = "" if _missing(r["cv_folds"]) else f", {r['cv_folds']:.0f}-fold CV"
        rows.append(
            [f"Logistic model on all flags{folds} ({subgroup})", fmt.count(r["n"]),
             fmt.count(r["n_events"]), fmt.ratio(r["auroc"], r["auroc_lower"], r["auroc_upper"]),
             fmt.ratio(r["calibration_intercept"]), fmt.ratio(r["calibration_slope"]),
             _brier(r["brier_score"]), str(r.get("note") or "")]
        )  # fmt: skip
    return Table(
        ["Score", "Episodes", "Events", "AUROC (95% CI)", "Calibration intercept",
         "Calibration slope", "Brier score", "Note"],
        rows,
        title="Table 3. Discrimination and calibration",
        caption="Landmark population. AUROC with a DeLong 95% CI; the model's metrics come from cross-validated (out-of-fold) predictions. Calibration intercept 0 and slope 1 are ideal; a lower Brier score is better.",
    )  # fmt: skip


def _sensitivity_table(data: Released, fmt: Fmt) -> Table:
    """Key results of each sensitivity analysis beside the primary analysis (all episodes)."""
    df = _subgroup(data.table("sensitivity_analyses"), "all")
    shown = [
        (rule, m)
        for rule in ("any_seed_flag", "two_or_more_seed_flags")
        for m in ("sensitivity", "specificity", "lr_positive", "lr_negative")
    ]
    shown += [("red_flag_count", "auroc"), ("model", "auroc")]  # fmt: skip
    analyses = (
        sorted(dict.fromkeys(df["analysis"]), key=lambda a: (a != "primary", a)) if len(df) else []
    )
    rows = []
    for rule, measure in shown:
        cells = []
        for a in analyses:
            hit = df[(df["analysis"] == a) & (df["rule"] == rule) & (df["measure"] == measure)]
            if not len(hit):
                cells.append(DASH)
                continue
            r = hit.iloc[0]
            show = fmt.pct if measure in ("sensitivity", "specificity") else fmt.ratio
            cells.append(show(r["estimate"], r["lower"], r["upper"]))
        label = {"red_flag_count": "Red-flag count", "model": "Logistic model"}.get(
            rule, _rule_label(rule)
        )
        rows.append([f"{label}: {MEASURE_LABELS.get(measure, measure)}", *cells])
    if analyses:
        sizes = []
        for a in analyses:
            hit = df[(df["analysis"] == a) & (df["rule"] == "red_flag_count")]
            r = hit.iloc[0] if len(hit) else df[df["analysis"] == a].iloc[0]
            sizes.append(f"{fmt.count(r['n_episodes'])} ({fmt.count(r['n_events'])})")
        rows.insert(0, ["Episodes (events) in the landmark population", *sizes])
    return Table(
        ["Rule: measure (95% CI)", *(ANALYSIS_LABELS.get(a, a) for a in analyses)],
        rows,
        title="Table 4. Sensitivity analyses (all episodes)",
        caption="Each analysis rebuilds the cohort with one parameter changed (protocol section 6.4). Every rule, measure and subgroup is in the release table sensitivity_analyses.",
    )  # fmt: skip


# --- provenance ------------------------------------------------------------------------


def _provenance(data: Released) -> dict[str, Any]:
    run = data.run
    if not run:
        return {"missing": True, "run_id": data.run_id}
    status = str(run.get("status") or "unknown")
    if status == "running":
        status = "running (report written before the run record was closed)"
    summary = [
        ("Run ID", str(run.get("run_id"))),
        ("Prefect flow run", str(run.get("flow_run_id") or DASH)),
        ("Status", status),
        ("Started (UTC)", _when(run.get("started_at"))),
        ("Ended (UTC)", _when(run.get("ended_at"))),
        ("Source export", str(run.get("source") or DASH)),
        ("Code version", str(run.get("code_version") or DASH)),
    ]
    return {
        "missing": False,
        "summary": Table(["Item", "Value"], [list(x) for x in summary], title="Run"),
        "parameters": _json_table(run.get("parameters"), "Study parameters", ["Parameter", "Value"]),
        "inputs": _json_table(run.get("input_manifest"), "Input files (SHA-256)", ["File"]),
        "value_sets": _json_table(run.get("value_set_hashes"), "Value sets (SHA-256)", ["Value set", "Hash"]),
        "row_counts": _json_table(run.get("output_row_counts"), "Output tables (rows)", ["Table", "Rows"]),
    }  # fmt: skip


def _when(value: Any) -> str:
    if _missing(value):
        return DASH
    return str(value)[:19].replace("T", " ")


def _json_table(value: Any, title: str, columns: list[str]) -> Table:
    """A JSON object (key -> value) or array of objects as a table."""
    obj = _json(value)
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        keys = list(dict.fromkeys(k for x in obj for k in x))
        rows = [[_text(x.get(k)) for k in keys] for x in obj]
        return Table(
            [KEY_LABELS.get(k, k.replace("_", " ").capitalize()) for k in keys], rows, title=title
        )
    if isinstance(obj, dict) and obj:
        return Table(columns[:2], [[str(k), _text(v)] for k, v in obj.items()], title=title)
    return Table(columns[:1], [], title=title, caption="Not recorded for this run.")


def _text(v: Any) -> str:
    if isinstance(v, list | dict):
        return json.dumps(v)
    return DASH if v is None else str(v)


# --- input data quality (dq.data_quality_profile; pipelines/contracts.py) ---------------


def _read_quality(con: duckdb.DuckDBPyConnection, run_id: str | None) -> pd.DataFrame | None:
    """The run's data-quality profile: one row per input check, counts only (no values)."""
    from pipelines.warehouse import tables_in

    if "data_quality_profile" not in tables_in(con, "dq"):
        return None
    return con.execute(
        "SELECT * FROM dq.data_quality_profile WHERE run_id = ? OR ? IS NULL"
        " ORDER BY table_name, check_name, column_name",
        [run_id, run_id],
    ).df()


def _quality_tables(data: Released) -> list[Table]:
    """Per DQD category: checks run, passed, warned, failed and rows flagged; then the checks
    that flagged rows or did not pass, one row each. Nothing when the run has no profile."""
    df = data.quality
    if df is None or df.empty:
        return []
    summary = [
        [
            str(category), f"{len(g):,}", f"{(g['status'] == 'pass').sum():,}",
            f"{(g['status'] == 'warn').sum():,}", f"{(g['status'] == 'fail').sum():,}",
            f"{int(g['rows_failed'].fillna(0).sum()):,}",
        ]
        for category, g in df.groupby("category", sort=True)
    ]  # fmt: skip
    tables = [
        Table(
            ["Category", "Checks", "Passed", "Warned", "Failed", "Rows flagged"],
            summary,
            title="Input data quality",
            caption=(
                "Checks of the input tables (data_contracts/raw, OHDSI Data Quality Dashboard"
                " categories). A check passes while its failed rows stay within its threshold;"
                " flagged records stay in raw, are listed by file and line in"
                " dq.data_quality_issues and are left out only of the features they would"
                " corrupt (docs/study-definitions.md)."
            ),
        )
    ]
    shown = df[(df["rows_failed"].fillna(0) > 0) | (df["status"] != "pass")]
    if not shown.empty:
        rows = [
            [
                str(r.table_name), _text(_none_if_na(r.column_name)), str(r.check_name),
                str(r.category), str(r.severity), f"{100 * r.threshold:g}%",
                _text(_none_if_na(r.rows_checked)), _text(_none_if_na(r.rows_failed)),
                Fmt().pct(_none_if_na(r.fraction_failed), digits=2), str(r.status),
            ]
            for r in shown.itertuples()
        ]  # fmt: skip
        tables.append(
            Table(
                [
                    "Table",
                    "Column",
                    "Check",
                    "Category",
                    "Severity",
                    "Threshold",
                    "Rows checked",
                    "Rows failed",
                    "Failed",
                    "Status",
                ],
                rows,
                title="Input checks with flagged rows",
                text_columns=5,
            )  # fmt: skip
        )
    return tables


# --- clinical tables (issue 14): Table 1, after diagnosis, prognosis ----------------------

TABLE_ONE_COMPARISONS = (
    ("landmark", "reference_standard", "Landmark population, by reference standard",
     ("positive", "Metastasis within the horizon"), ("negative", "No metastasis")),
    ("cohort", "reference_standard", "Cohort, by diagnosis within follow-up",
     ("positive", "Diagnosed"), ("negative", "Not diagnosed")),
    ("cohort", "breast_cancer_history", "Cohort, by breast cancer history",
     ("yes", "History"), ("no", "No history")),
)  # fmt: skip
CARE_LABELS = {
    "non_opioid_analgesic": "Non-opioid analgesic",
    "opioid": "Opioid",
    "neuropathic_agent": "Neuropathic agent",
    "corticosteroid": "Corticosteroid",
    "radiotherapy": "Radiotherapy",
    "bone_targeted_agent": "Bone-targeted agent",
    "chemotherapy": "Chemotherapy",
    "endocrine_therapy": "Endocrine therapy",
    "targeted_therapy": "Targeted therapy",
    "spine_imaging_xray": "Spine imaging: X-ray",
    "spine_imaging_ct": "Spine imaging: CT",
    "spine_imaging_mri": "Spine imaging: MRI",
    "spine_imaging_bone_scan": "Spine imaging: bone scan",
    "bone_biopsy": "Bone biopsy",
    "surgical_stabilisation": "Surgical stabilisation or decompression",
}
PROGNOSIS_LABELS = {
    "median_survival_days": "Median survival, days (95% CI)",
    "survival_1_year": "Survival at 1 year, % (95% CI)",
    "hazard_ratio_per_30_days_age_adjusted": "Hazard ratio of death per 30 days of interval, "
    "adjusted for age (95% CI)",
    "sre_odds_ratio_per_30_days": "Odds ratio of an SRE per 30 days of interval (95% CI)",
}


def _variable_label(variable: str) -> str:
    return {"age_at_index": "Age at index, years", "age_band": "Age band", "sex": "Sex",
            "n_encounters_lookback": "Encounters in the year before"}.get(
        variable, _rule_label(variable))  # fmt: skip


def _table_one_cell(row: dict, fmt: Fmt) -> str:
    if row.get("count_status") == "not_estimable":  # a continuous variable
        return fmt.days(row.get("median"), row.get("q1"), row.get("q3"))
    if _missing(row.get("count")):
        return SUPPRESSED
    pct = row.get("percent")
    return f"{fmt.count(row['count'])} ({DASH if _missing(pct) else f'{pct:.1f}%'})"


def _table_one_tables(data: Released, fmt: Fmt) -> list[Table]:
    """Table 1 per population and comparison: overall, the two groups, SMD."""
    t1 = data.table("table_one")
    if not len(t1):
        return []
    t1 = t1.assign(level=t1["level"].fillna("").astype(str))
    tables = []
    for population, comparison, title, *groups in TABLE_ONE_COMPARISONS:
        part = t1[t1["population"] == population]
        overall = part[part["comparison"] == "overall"]
        split = part[part["comparison"] == comparison]
        if not len(overall):
            continue
        columns, rows = ["Characteristic"], []
        sizes = [overall] + [split[split["group"] == g] for g, _ in groups]
        for label, rows_of in zip(("Overall", *(lb for _, lb in groups)), sizes, strict=True):
            n = rows_of["n_group"].iloc[0] if len(rows_of) else None
            columns.append(f"{label} (N = {fmt.count(n)})")
        columns.append("SMD")
        for variable in dict.fromkeys(overall["variable"]):
            for level in dict.fromkeys(overall.loc[overall["variable"] == variable, "level"]):
                cells = []
                for rows_of in sizes:
                    hit = rows_of[(rows_of["variable"] == variable) & (rows_of["level"] == level)]
                    cells.append(_table_one_cell(hit.iloc[0].to_dict(), fmt) if len(hit) else DASH)
                smd = split.loc[split["variable"] == variable, "smd"]
                smd_text = (
                    DASH if not len(smd) or _missing(smd.iloc[0]) else _sig(float(smd.iloc[0]))
                )
                name = _variable_label(variable) + (f": {level}" if level else ", median (IQR)")
                rows.append(
                    [
                        name,
                        *cells,
                        smd_text if level in ("", _first_level(overall, variable)) else "",
                    ]
                )
        tables.append(Table(columns, rows, title=f"Baseline characteristics (Table 1). {title}",
                            caption=_TABLE_ONE_CAPTION))  # fmt: skip
    return tables


def _first_level(overall: pd.DataFrame, variable: str) -> str:
    return str(overall.loc[overall["variable"] == variable, "level"].iloc[0])


_TABLE_ONE_CAPTION = (
    "Counts (percent of episodes with the variable known); continuous variables as median "
    "(IQR). SMD: standardized mean difference between the two groups (Yang & Dalton for "
    "categories; inf when a level is in one group only). 'suppressed': hidden by disclosure "
    "control (a small count, or a count that would reveal one); an SMD is not shown when a "
    "count of its variable is hidden."
)


def _care_table(data: Released, fmt: Fmt) -> Table:
    care = data.table("care_after_diagnosis_summary")
    rows = []
    for row in care.to_dict("records"):
        rows.append([
            CARE_LABELS.get(row["care_category"], row["care_category"]),
            f"{fmt.count(row['n_received'])} / {fmt.count(row['n_diagnosed'])}",
            fmt.pct(row["proportion"], row["lower"], row["upper"]),
            fmt.days(row["median_days"], row["q1_days"], row["q3_days"]),
        ])  # fmt: skip
    return Table(
        ["Care", "Received / diagnosed", "% (95% CI)", "Days to first record, median (IQR)"],
        rows,
        title="Care after diagnosis",
        caption=(
            "Among episodes diagnosed with bone metastasis: a medication, procedure or spine "
            "imaging of the category from the diagnosis date to the end of the care window. "
            "Wilson 95% CIs. Days among those who received it."
        ),
    )


def _sre_table(data: Released, fmt: Fmt) -> Table:
    sre = data.table("presentation_by_interval")
    labels = {"all": "All diagnosed", "first": "Shortest third", "second": "Middle third",
              "third": "Longest third"}  # fmt: skip
    rows = [
        [labels.get(r["interval_third"], r["interval_third"]), fmt.count(r["n"]),
         fmt.count(r["n_sre"]), fmt.pct(r["proportion"], r["lower"], r["upper"])]
        for r in sre.to_dict("records")
    ]  # fmt: skip
    return Table(
        ["Diagnostic interval", "Diagnosed", "With an SRE", "% (95% CI)"],
        rows,
        title="Skeletal-related events (SRE) at presentation, by third of the diagnostic interval",
        caption=(
            "Thirds of the days from back-pain onset to diagnosis (equal-sized, by rank). "
            "SRE: spinal cord compression or pathological vertebral fracture around diagnosis."
        ),
    )


def _prognosis_table(data: Released, fmt: Fmt) -> Table:
    summary = data.table("prognosis_summary")
    rows = []
    for r in summary.to_dict("records"):
        measure = r["measure"]
        if measure == "survival_1_year":
            value = fmt.pct(r["estimate"], r["lower"], r["upper"])
        elif measure == "median_survival_days":
            value = fmt.days(r["estimate"]) + (
                f" ({fmt.days(r['lower'])}{DASH}{fmt.days(r['upper'])})"
                if not _missing(r["estimate"]) else "")  # fmt: skip
            if not _missing(r["estimate"]) and not math.isfinite(float(r["estimate"])):
                value = "not reached"
        else:
            value = fmt.ratio(r["estimate"], r["lower"], r["upper"])
        note = "" if not _missing(r["estimate"]) else _prognosis_why(r)
        rows.append([PROGNOSIS_LABELS.get(measure, measure), value, fmt.count(r["n"]),
                     fmt.count(r["n_events"]), note])  # fmt: skip
    return Table(["Measure", "Estimate", "Diagnosed", "Events", "Note"], rows,
                 title="Prognosis after diagnosis")  # fmt: skip


def _prognosis_why(row: dict) -> str:
    if row.get("estimate_status") in ("suppressed_small", "suppressed_complement"):
        return "hidden: its events or non-events are fewer than min_cell (disclosure control)"
    return str(row.get("note") or "not estimable")


def _survival_figure(data: Released) -> Chart:
    from pipelines.stats.prognosis import CAUTION

    title = "Overall survival from diagnosis (Kaplan-Meier)"
    caption = (
        "Kaplan-Meier estimate with 95% CI (log(-log)). Disclosure control pools the curve: "
        f"each drawn step holds at least {data.min_cell} deaths; numbers at risk are rounded. "
        + CAUTION
    )
    km = data.table("survival_after_diagnosis")
    if not len(km) or km["estimate"].isna().all():
        return Chart(title, caption, notice=(
            "No survival curve was released: with fewer than min_cell deaths, or fewer than "
            "min_cell diagnosed episodes alive at the end, the curve would reveal a small count."
        ))  # fmt: skip
    km = km.sort_values("day")
    fig = _new_figure(6.4, 4.4)
    ax = fig.subplots()
    days = km["day"].astype(float)
    ax.step(days, km["estimate"].astype(float), where="post", color=COLOURS[0], lw=1.8,
            label="Overall survival")  # fmt: skip
    ax.fill_between(days, km["lower"].astype(float), km["upper"].astype(float), step="post",
                    color=COLOURS[0], alpha=0.18, label="95% CI")  # fmt: skip
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Days since diagnosis")
    ax.set_ylabel("Survival")
    ax.legend(loc="upper right")
    _style(ax)
    return Chart(title, caption, **_images(fig), alt="Kaplan-Meier overall survival")


def _caution() -> str:
    from pipelines.stats.prognosis import CAUTION

    return CAUTION
