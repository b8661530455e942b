"""Time to diagnosis: coarsened cumulative-incidence curves, by stratum (release only)."""

from __future__ import annotations

import streamlit as st

from pipelines.dashboard import session
from pipelines.dashboard.display import estimable, with_status

VARIABLES = {
    "overall": "All episodes",
    "red_flag_count": "Number of seed red flags",
    "breast_cancer_history": "History of breast cancer",
}
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")


def curve_figure(rel, curves, strata: list[str], variable: str):
    """One step curve per stratum, flat between released steps, with its confidence band."""
    fig, ax = session.figure()
    end = int(curves["day"].max()) if len(curves) else 0
    for colour, stratum in zip(COLOURS, strata, strict=False):
        c = curves[curves["stratum"] == stratum].sort_values("day")
        c = c[estimable(c, "estimate")]
        if c.empty:
            continue
        days, est = [*c["day"], end], [*c["estimate"], c["estimate"].iloc[-1]]
        label = rel.label("stratum", f"{variable}={stratum}")
        ax.step(days, est, where="post", color=colour, label=label)
        band = c[estimable(c, "lower") & estimable(c, "upper")]
        if len(band):
            ax.fill_between(band["day"], band["lower"], band["upper"], step="post", color=colour, alpha=0.15)  # fmt: skip
    ax.set_xlabel("days since back-pain onset (index)")
    ax.set_ylabel("cumulative incidence of diagnosis")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def render(rel) -> None:
    st.title("Time to diagnosis")
    st.caption("Aalen-Johansen cumulative incidence of a bone-metastasis diagnosis, death as a "
               "competing risk. Curves are coarsened: they step only where enough diagnoses "
               "have accumulated (docs/data-dictionary.md).")  # fmt: skip
    if not rel.has("time_to_diagnosis"):
        session.missing_table("time_to_diagnosis")
        return
    limit = session.min_cell(rel)
    ttd, curves = rel.table("time_to_diagnosis"), rel.table("cumulative_incidence")
    present = [v for v in VARIABLES if v in set(ttd["stratum_variable"])]
    variable = st.selectbox("Stratify by", present, format_func=VARIABLES.get)
    rows = ttd[ttd["stratum_variable"] == variable]
    strata = list(rows["stratum"])
    drawn = set(curves[curves["stratum_variable"] == variable]["stratum"]) if len(curves) else set()
    hidden = [rel.label("stratum", f"{variable}={s}") for s in strata if s not in drawn]
    if hidden:
        st.warning(f"No curve released (suppressed, fewer than {limit} diagnoses) for: {', '.join(hidden)}.")  # fmt: skip
    if drawn:
        mine = curves[curves["stratum_variable"] == variable]
        session.show(curve_figure(rel, mine, [s for s in strata if s in drawn], variable))
        with st.expander("Released curve steps"):
            st.dataframe(with_status(mine, limit), hide_index=True)
    st.subheader("Counts and cumulative incidence at fixed days")
    table = with_status(rows, limit)
    table.insert(0, "label", [rel.label("stratum", f"{variable}={s}") for s in strata])
    st.dataframe(table, hide_index=True)


if __name__ == "__main__":
    session.run_page(render)
