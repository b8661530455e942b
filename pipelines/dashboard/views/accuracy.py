"""Accuracy of each red-flag rule: forest plot with CIs and the 2x2 (release.flag_accuracy)."""

from __future__ import annotations

import math

import streamlit as st

from pipelines.dashboard import session
from pipelines.dashboard.display import estimable, value_text

PANELS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "lr_positive": "LR+"}
MEASURES = ("sensitivity", "specificity", "ppv", "npv", "lr_positive", "lr_negative", "diagnostic_odds_ratio")  # fmt: skip


def forest_figure(rel, acc, limit: int):
    """One panel per measure; a rule whose value is hidden says why instead of a point."""
    fig, axes = session.figure(11, 0.42 * len(acc) + 1.5)
    fig.clf()
    axes = fig.subplots(1, len(PANELS), sharey=True)
    y = list(range(len(acc)))[::-1]
    for ax, (measure, title) in zip(axes, PANELS.items(), strict=True):
        ok = estimable(acc, measure) & estimable(acc, f"{measure}_lower") & estimable(acc, f"{measure}_upper")  # fmt: skip
        for yi, (_, row), shown in zip(y, acc.iterrows(), ok, strict=True):
            if shown:
                ax.errorbar(row[measure], yi, xerr=[[row[measure] - row[f"{measure}_lower"]], [row[f"{measure}_upper"] - row[measure]]], fmt="s", color="#0072B2", capsize=2)  # fmt: skip
            else:
                text = value_text(row[measure], row.get(f"{measure}_status"), min_cell=limit)
                ax.text(0.02, yi, text, transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="#666666")  # fmt: skip
        if measure.startswith("lr"):
            ax.set_xscale("log")
            ax.axvline(1, color="#999999", lw=0.8)
        else:
            ax.set_xlim(0, 1)
        ax.set_title(title)
    axes[0].set_ylim(-0.7, len(acc) - 0.3)  # room for the first and last row's text
    axes[0].set_yticks(y, [rel.label("rule", r) for r in acc["rule"]], fontsize=8)
    fig.tight_layout()
    return fig


def two_by_two(row, limit: int):
    """The rule's 2x2 as text by status, with the reference standard in rows."""
    import pandas as pd

    def cell(name: str) -> str:
        return value_text(row[name], row.get(f"{name}_status"), min_cell=limit)

    return pd.DataFrame(
        {"Rule positive": [cell("tp"), cell("fp")], "Rule negative": [cell("fn"), cell("tn")]},
        index=["Metastasis within horizon", "No metastasis"],
    )


def measures_table(row, limit: int):
    import pandas as pd

    rows = []
    for m in MEASURES:
        rows.append({
            "measure": m,
            "estimate": value_text(row[m], row.get(f"{m}_status"), min_cell=limit),
            "lower": value_text(row[f"{m}_lower"], row.get(f"{m}_lower_status"), min_cell=limit),
            "upper": value_text(row[f"{m}_upper"], row.get(f"{m}_upper_status"), min_cell=limit),
        })  # fmt: skip
    return pd.DataFrame(rows)


def render(rel) -> None:
    st.title("Accuracy of the red flags")
    st.caption("Landmark design: episodes alive, under observation and undiagnosed at the "
               "landmark, reference standard = diagnosis within the horizon.")  # fmt: skip
    if not rel.has("flag_accuracy"):
        session.missing_table("flag_accuracy")
        return
    limit = session.min_cell(rel)
    acc = rel.table("flag_accuracy")
    subgroup = st.selectbox("Subgroup", list(dict.fromkeys(acc["subgroup"])), format_func=lambda s: rel.label("subgroup", s))  # fmt: skip
    mine = acc[acc["subgroup"] == subgroup].reset_index(drop=True)
    session.show(forest_figure(rel, mine, limit))
    rule = st.selectbox("Rule", list(mine["rule"]), format_func=lambda r: rel.label("rule", r))
    row = mine[mine["rule"] == rule].iloc[0]
    note = row.get("note")
    if isinstance(note, str) and note:
        st.info(f"Note: {note}")
    left, right = st.columns(2)
    left.subheader("2x2 table")
    left.table(two_by_two(row, limit))
    right.subheader("Measures")
    right.dataframe(measures_table(row, limit), hide_index=True)
    if all(isinstance(row[c], float) and math.isnan(row[c]) for c in ("sensitivity", "specificity")):  # fmt: skip
        st.caption("Estimates are hidden by disclosure control or not estimable; statuses above say which.")  # fmt: skip


if __name__ == "__main__":
    session.run_page(render)
