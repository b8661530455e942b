"""Run history: the headline figures of every published run (release.run_history), as trends."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from pipelines.dashboard import session
from pipelines.dashboard.display import estimable, value_text, with_status

HISTORY_TABLE = "run_history"  # pipelines/history.py
# (figure columns, y label) per chart: counts together, then days, then the accuracy measures
CHARTS = (
    (("n_patients", "n_episodes", "n_accuracy_population", "n_diagnosed"), "patients / episodes"),
    (("median_days_to_diagnosis",), "median days to diagnosis"),
    (
        (
            "auroc_red_flag_count",
            "auroc_model",
            "sensitivity_any_seed_flag",
            "specificity_any_seed_flag",
            "sensitivity_two_or_more_seed_flags",
            "specificity_two_or_more_seed_flags",
        ),
        "AUROC / sensitivity / specificity",
    ),
)
LABELS = {
    "n_patients": "patients in the export",
    "n_episodes": "episodes in the cohort",
    "n_accuracy_population": "accuracy population",
    "n_diagnosed": "diagnosed with bone metastasis",
    "median_days_to_diagnosis": "median days to diagnosis",
    "auroc_red_flag_count": "AUROC, red-flag count",
    "auroc_model": "AUROC, model",
    "sensitivity_any_seed_flag": "sensitivity, any seed flag",
    "specificity_any_seed_flag": "specificity, any seed flag",
    "sensitivity_two_or_more_seed_flags": "sensitivity, 2+ seed flags",
    "specificity_two_or_more_seed_flags": "specificity, 2+ seed flags",
}


def run_time(run_id: str) -> str:
    """The UTC start time a run id begins with (`20261207T063342Z-...`), else ''."""
    try:
        return dt.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M UTC")  # fmt: skip
    except ValueError:
        return ""


def trend_figure(history: pd.DataFrame, columns: tuple[str, ...], ylabel: str):
    """One line per figure over the runs; a run whose value is hidden is a gap, not a 0."""
    fig, ax = session.figure(9, 3.6)
    x = list(range(len(history)))
    drawn = 0
    for col in columns:
        if col not in history:
            continue
        ok = estimable(history, col)
        y = history[col].astype("Float64").where(ok).astype(float)
        if ok.any():
            ax.plot(x, y, marker="o", label=LABELS.get(col, col))
            drawn += 1
    ax.set_xticks(x, [str(f)[:16] for f in history["finished_at"]], rotation=30, fontsize=8)
    ax.set_xlabel("run finished (UTC)")
    ax.set_ylabel(ylabel)
    if drawn:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "every value hidden or not estimable", ha="center", transform=ax.transAxes)  # fmt: skip
    fig.tight_layout()
    return fig


def render(rel) -> None:
    st.title("Run history")
    limit = session.min_cell(rel)
    st.subheader("Current release")
    runs = rel.run_ids()
    st.table([{"run id": r, "started": run_time(r)} for r in runs] or [{"run id": "unknown", "started": ""}])  # fmt: skip
    if not rel.has(HISTORY_TABLE):
        st.info("This release has no run history (`release.run_history`): it was written before "
                "the history was kept; the next run starts it.")  # fmt: skip
        return
    history = rel.table(HISTORY_TABLE).sort_values("finished_at").reset_index(drop=True)
    st.caption(f"{len(history)} published runs. A value hidden in a run stays hidden here; a "
               f"count that differs from an earlier run's by 1 to {limit - 1} is hidden too "
               "(suppressed as complementary), so two releases never reveal a small count.")  # fmt: skip
    st.header("Trends")
    for columns, ylabel in CHARTS:
        session.show(trend_figure(history, columns, ylabel))
    st.header("Every run")
    table = with_status(history, limit)
    table.insert(0, "run_id", history["run_id"].astype(str))  # with_status drops run ids
    st.dataframe(table, hide_index=True)
    hidden = [
        f"{LABELS.get(c, c)}: {value_text(None, s, min_cell=limit)}"
        for c in LABELS
        if f"{c}_status" in history
        for s in history[f"{c}_status"].iloc[-1:]
        if s not in ("shown", "rounded")
    ]
    if hidden:
        st.caption("Latest run, hidden: " + "; ".join(hidden))


if __name__ == "__main__":
    session.run_page(render)
