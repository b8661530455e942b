"""The report's figures drawn with matplotlib from the release tables (cumulative incidence,
likelihood ratios, ROC, calibration, decision curve, survival), each a `Chart`: an image, or
a notice in words when there is nothing honest to draw. Rendering to PNG/SVG bytes and the
one rendering per warehouse state shared with the release folder: `pipelines/report/figures.py`.
"""

from __future__ import annotations

import base64
import math
from typing import TYPE_CHECKING, Any

from pipelines.report.text import (
    COLOURS,
    FIGURE_STYLE,
    GROUP_STYLE,
    MIN_CALIBRATION_BINS,
    RULES,
    Chart,
    Fmt,
    Released,
    brier,
    is_missing,
    rule_label,
    rule_order,
    stratum_label,
    subgroup_rows,
)

if TYPE_CHECKING:  # heavy imports stay inside the functions: `redflags --help` stays quick
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
    from pipelines.report.figures import cached

    return cached((*state, data.run_id), lambda: charts(data))


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    fig.patch.set_facecolor("white")
    return fig


def _images(fig: Figure) -> dict[str, Any]:
    """A Chart's drawing: rendered once as PNG and SVG (pipelines/report/figures.py); the page
    embeds the PNG bytes that the release folder writes to figures/<name>.png."""
    from pipelines.report.figures import render

    drawn = render(fig)
    uri = "data:image/png;base64," + base64.b64encode(drawn.png).decode("ascii")
    return {"image": uri, "png": drawn.png, "svg": drawn.svg}


def _style(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


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
    caption += time_zero_note(cif)
    ttd = data.table("time_to_diagnosis")
    overall = ttd[ttd["stratum_variable"] == "overall"].to_dict("records") if len(ttd) else []
    episodes = overall[0]["n_episodes"] if overall else None
    if not is_missing(episodes) and episodes == 0:
        return Chart(
            title,
            caption,
            notice="The cohort is empty: no back-pain episode met the study criteria.",
        )
    diagnosed = overall[0]["n_diagnosed"] if overall else None
    if (not is_missing(diagnosed) and diagnosed == 0) or (
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


def time_zero_note(cif: pd.DataFrame) -> str:
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
        label = stratum_label(variable, stratum)
        ax.plot(s["day"], s["estimate"], drawstyle="steps-post", color=colour, label=label, lw=1.8)
        ax.fill_between(
            s["day"], s["lower"], s["upper"], step="post", color=colour, alpha=0.18, lw=0
        )
    ax.set_xlim(0, max(365, float(df["day"].max())))
    ax.set_xticks([0, 90, 180, 270, 365])
    top = df["upper"].max(skipna=True)
    ax.set_ylim(0, max(0.01, 1.15 * float(top if not is_missing(top) else 0)))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    _style(ax)
    ax.legend(loc="upper left", frameon=False)


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
    acc = subgroup_rows(data.table("flag_accuracy"), "all")
    if not len(acc):
        return Chart(title, caption, notice="No accuracy estimates were released.")
    if acc["lr_positive"].isna().all() and acc["lr_negative"].isna().all():
        return Chart(title, caption, notice=_no_events_text(acc))
    acc = acc.assign(order=acc["rule"].map(rule_order)).sort_values("order", ascending=False)
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
    axes[0].set_yticks(y, [rule_label(r) for r in acc["rule"]])
    axes[0].set_ylim(-0.7, len(acc) - 0.3)
    return Chart(title, caption, **_images(fig), alt="Forest plot of likelihood ratios")


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
        if is_missing(e):
            ax.text(math.sqrt(left * right), yi, why, ha="center",
                    va="center", fontsize=9, color="#777777", style="italic",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # fmt: skip
            continue
        if not is_missing(a) and not is_missing(b):
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
    if any(is_missing(row.get(c)) for c in ("tp", "fp", "fn", "tn")):
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
    roc = subgroup_rows(data.table("roc_points"), "all")
    score = subgroup_rows(data.table("score_performance"), "all")
    auroc = score.iloc[0] if len(score) else None
    if auroc is None or is_missing(auroc["auroc"]):
        events = auroc["n_events"] if auroc is not None else None
        why = "no events" if not is_missing(events) and events == 0 else "not released"
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
    cal = subgroup_rows(data.table("calibration"), "all")
    smooth = subgroup_rows(data.table("calibration_smoothed"), "all")
    perf = subgroup_rows(data.table("model_performance"), "all")
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
            f"Brier score {brier(p['brier_score'])}"
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


def _model_notice(perf: pd.DataFrame, what: str) -> str:
    if not len(perf) or is_missing(perf.iloc[0].get("n_events")) or perf.iloc[0]["n_events"] == 0:
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
    dc = subgroup_rows(data.table("decision_curve"), "all")
    perf = subgroup_rows(data.table("model_performance"), "all")
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
