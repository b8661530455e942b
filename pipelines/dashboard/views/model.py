"""ROC, calibration and decision curve (release.roc_points, calibration, decision_curve)."""

from __future__ import annotations

import streamlit as st

from pipelines.dashboard import session
from pipelines.dashboard.display import estimable, value_text, with_status


def roc_figure(points):
    fig, ax = session.figure(5, 5)
    ok = points[estimable(points, "sensitivity") & estimable(points, "false_positive_rate")]
    ok = ok.sort_values(["false_positive_rate", "sensitivity"])
    ax.plot(ok["false_positive_rate"], ok["sensitivity"], "o-", color="#0072B2", label="red-flag count cut-offs")  # fmt: skip
    for _, r in ok.iterrows():
        ax.annotate(f"\u2265{int(r['threshold'])}", (r["false_positive_rate"], r["sensitivity"]), fontsize=8, xytext=(4, -10), textcoords="offset points")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--")
    ax.set_xlabel("1 \u2212 specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def calibration_figure(bins, points=None):
    """Pooled bins (release.calibration) and, when released, the smoothed observed risk at each
    decile (release.calibration_smoothed)."""
    fig, ax = session.figure(5, 5)
    ok = bins[estimable(bins, "mean_predicted") & estimable(bins, "observed_rate")]
    ax.plot(ok["mean_predicted"], ok["observed_rate"], "s", color="#D55E00", label="pooled bins")
    line = points if points is not None and len(points) else None
    if line is not None:
        line = line[estimable(line, "observed_smoothed")].sort_values("mean_predicted")
        ax.plot(line["mean_predicted"], line["observed_smoothed"], "-o", ms=3, color="#0072B2",
                label="smoothed, at each decile")  # fmt: skip
    smooth = [] if line is None else [*line["mean_predicted"], *line["observed_smoothed"]]
    top = max([0.05, *ok["mean_predicted"], *ok["observed_rate"], *smooth]) * 1.1
    ax.plot([0, top], [0, top], color="#999999", lw=0.8, ls="--", label="ideal")
    ax.set_xlabel("mean predicted risk")
    ax.set_ylabel("observed rate")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def decision_figure(curve):
    fig, ax = session.figure(7, 4.5)
    for column, label, colour in (("net_benefit_model", "model", "#0072B2"), ("net_benefit_treat_all", "image everyone", "#D55E00"), ("net_benefit_treat_none", "image no one", "#000000")):  # fmt: skip
        ok = curve[estimable(curve, column)]
        ax.plot(ok["threshold"], ok[column], label=label, color=colour)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_ylim(bottom=-0.01)
    ax.legend()
    fig.tight_layout()
    return fig


def _subgroup(frame, subgroup: str):
    return frame[frame["subgroup"] == subgroup] if len(frame) else frame


def _auroc_line(rel, table: str, subgroup: str, limit: int) -> str:
    perf = _subgroup(rel.table(table), subgroup)
    if perf.empty:
        return "no row"
    r = perf.iloc[0]
    parts = [value_text(r[c], r.get(f"{c}_status"), min_cell=limit) for c in ("auroc", "auroc_lower", "auroc_upper")]  # fmt: skip
    return f"{parts[0]} (95% CI {parts[1]} to {parts[2]})"


def render(rel) -> None:
    st.title("ROC, calibration and decision curve")
    limit = session.min_cell(rel)
    subgroups = [s for s in ("all", "female", "breast_cancer_history") if s in set(rel.table("roc_points").get("subgroup", []))] or ["all"]  # fmt: skip
    subgroup = st.selectbox("Subgroup", subgroups, format_func=lambda s: rel.label("subgroup", s))
    st.markdown(f"**AUROC, red-flag count:** {_auroc_line(rel, 'score_performance', subgroup, limit)}  \n"
                f"**AUROC, logistic model (cross-validated):** {_auroc_line(rel, 'model_performance', subgroup, limit)}")  # fmt: skip
    sections = (
        ("ROC curve of the red-flag count", "roc_points", roc_figure, "sensitivity"),
        (
            "Calibration of the model",
            "calibration",
            lambda bins: calibration_figure(
                bins, _subgroup(rel.table("calibration_smoothed"), subgroup)
            ),
            "observed_rate",
        ),  # fmt: skip
        ("Decision curve", "decision_curve", decision_figure, "net_benefit_treat_all"),
    )
    for title, table, draw, column in sections:
        st.subheader(title)
        frame = _subgroup(rel.table(table), subgroup)
        if frame.empty or not estimable(frame, column).any():
            st.info(f"Nothing released for this subgroup in `release.{table}` (suppressed below {limit}, not estimable, or the model was not fitted).")  # fmt: skip
            continue
        session.show(draw(frame))
        with st.expander(f"release.{table}"):
            st.dataframe(with_status(frame, limit), hide_index=True)


if __name__ == "__main__":
    session.run_page(render)
