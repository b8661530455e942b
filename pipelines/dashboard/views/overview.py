"""Overview: headline figures and the participant flow (release.attrition)."""

from __future__ import annotations

import streamlit as st

from pipelines.dashboard import session
from pipelines.dashboard.display import estimable, value_text, with_status

COHORT_STEP = "no_prevalent_bone_metastasis"
ACCURACY_STEP = "reference_standard_known"


def headline(rel, limit: int) -> list[tuple[str, str]]:
    """(label, text) of the figures a reader wants first, each by its status."""
    figures = []
    attrition = rel.table("attrition")
    for step, label in ((COHORT_STEP, "Episodes in the cohort"), (ACCURACY_STEP, "Accuracy population")):  # fmt: skip
        row = attrition[attrition["step"] == step] if not attrition.empty else attrition
        if len(row):
            r = row.iloc[0]
            figures.append((label, value_text(r["n_remaining"], r.get("n_remaining_status"), min_cell=limit)))  # fmt: skip
    ttd = rel.table("time_to_diagnosis")
    overall = ttd[ttd["stratum_variable"] == "overall"] if not ttd.empty else ttd
    if len(overall):
        r = overall.iloc[0]
        figures.append(("Diagnosed with bone metastasis", value_text(r["n_diagnosed"], r.get("n_diagnosed_status"), min_cell=limit)))  # fmt: skip
        figures.append(("Median days to diagnosis", value_text(r["median_days"], r.get("median_days_status"), digits=0, min_cell=limit)))  # fmt: skip
    for table, label in (("score_performance", "AUROC, red-flag count"), ("model_performance", "AUROC, model")):  # fmt: skip
        perf = rel.table(table)
        row = perf[perf["subgroup"] == "all"] if not perf.empty else perf
        if len(row):
            r = row.iloc[0]
            figures.append((label, value_text(r["auroc"], r.get("auroc_status"), min_cell=limit)))
    return figures


def metric(col, label: str, text: str) -> None:
    """A headline figure; a hidden one reads "suppressed" large and its full reason below
    (a metric's value is cut after a dozen characters)."""
    if text.startswith("suppressed") or text == "not estimable":
        col.metric(label, text.split(" (")[0])
        col.caption(text)
    else:
        col.metric(label, text)


def flow_figure(rel, attrition, limit: int):
    """Participant flow as bars of the patients/episodes remaining after each step."""
    fig, ax = session.figure(9, 0.45 * len(attrition) + 1)
    labels = [rel.label("step", s) for s in attrition["step"]]
    ok = estimable(attrition, "n_remaining")
    values = attrition["n_remaining"].where(ok, 0).astype(float)
    y = list(range(len(attrition)))[::-1]
    ax.barh(y, values, color="#0072B2")
    for yi, v, s, shown in zip(y, attrition["n_remaining"], attrition.get("n_remaining_status", [None] * len(y)), ok, strict=True):  # fmt: skip
        ax.text(v if shown else 0, yi, " " + value_text(v, s, min_cell=limit), va="center", fontsize=9)  # fmt: skip
    ax.set_yticks(y, [label[:70] for label in labels], fontsize=8)
    ax.set_xlabel("patients / episodes remaining")
    ax.set_xlim(0, max(float(values.max()), 1) * 1.35)
    fig.tight_layout()
    return fig


def render(rel) -> None:
    st.title("Overview")
    st.caption(f"Source: {rel.source.description}. Run: {', '.join(rel.run_ids()) or 'unknown'}.")
    limit = session.min_cell(rel)
    figures = headline(rel, limit)
    if not figures:
        st.warning("No headline figures: the release tables are missing.")
    for col, (label, text) in zip(st.columns(3) * 3, figures, strict=False):
        metric(col, label, text)
    st.header("Participant flow")
    if not rel.has("attrition"):
        session.missing_table("attrition")
        return
    attrition = rel.table("attrition").sort_values("step_order")
    session.show(flow_figure(rel, attrition, limit))
    table = with_status(attrition, limit)
    table.insert(1, "label", [rel.label("step", s) for s in attrition["step"]])
    st.dataframe(table, hide_index=True)


if __name__ == "__main__":
    session.run_page(render)
