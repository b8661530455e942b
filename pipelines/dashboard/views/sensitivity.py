"""Sensitivity analyses: each measure under each cohort variant (release.sensitivity_analyses)."""

from __future__ import annotations

import streamlit as st

from pipelines.dashboard import session
from pipelines.dashboard.display import estimable, with_status


def analyses_figure(rel, rows):
    fig, ax = session.figure(8, 0.6 * len(rows) + 1.2)
    y = list(range(len(rows)))[::-1]
    ok = estimable(rows, "estimate")
    for yi, (_, r), shown in zip(y, rows.iterrows(), ok, strict=True):
        if not shown:
            continue
        lo, hi = r["lower"], r["upper"]
        if estimable(rows.loc[[r.name]], "lower").iloc[0] and estimable(rows.loc[[r.name]], "upper").iloc[0]:  # fmt: skip
            ax.plot([lo, hi], [yi, yi], color="#0072B2")
        ax.plot(r["estimate"], yi, "s", color="#0072B2")
    ax.set_yticks(y, [rel.label("analysis", a) for a in rows["analysis"]], fontsize=8)
    ax.set_xlabel("estimate")
    fig.tight_layout()
    return fig


def render(rel) -> None:
    st.title("Sensitivity analyses")
    st.caption("Each analysis rebuilds the cohort with one parameter changed (PROTOCOL 6.4).")
    if not rel.has("sensitivity_analyses"):
        session.missing_table("sensitivity_analyses")
        return
    limit = session.min_cell(rel)
    sa = rel.table("sensitivity_analyses")
    c1, c2, c3 = st.columns(3)
    measure = c1.selectbox("Measure", list(dict.fromkeys(sa["measure"])), format_func=lambda m: rel.label("measure", m))  # fmt: skip
    sa = sa[sa["measure"] == measure]
    subgroup = c2.selectbox("Subgroup", list(dict.fromkeys(sa["subgroup"])), format_func=lambda s: rel.label("subgroup", s))  # fmt: skip
    sa = sa[sa["subgroup"] == subgroup]
    rule = c3.selectbox("Rule", list(dict.fromkeys(sa["rule"])), format_func=lambda r: rel.label("rule", r))  # fmt: skip
    rows = sa[sa["rule"] == rule].reset_index(drop=True)
    if len(set(rows["analysis"])) < 2:
        st.info("Only the primary analysis is in this release (the run had no sensitivity analyses).")  # fmt: skip
    if estimable(rows, "estimate").any():
        session.show(analyses_figure(rel, rows))
    else:
        st.info("No estimate released for this choice (suppressed or not estimable; see the table).")  # fmt: skip
    table = with_status(rows, limit)
    table.insert(0, "label", [rel.label("analysis", a) for a in rows["analysis"]])
    st.dataframe(table, hide_index=True)


if __name__ == "__main__":
    session.run_page(render)
