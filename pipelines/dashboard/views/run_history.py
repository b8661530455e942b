"""Run history: headline figures of every published run, when the release keeps them."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from pipelines.dashboard import session
from pipelines.dashboard.display import with_status

HISTORY_TABLE = "run_history"  # written by a later change (issue 15 item 2)


def run_time(run_id: str) -> str:
    """The UTC start time a run id begins with (`20261207T063342Z-...`), else ''."""
    try:
        return dt.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M UTC")  # fmt: skip
    except ValueError:
        return ""


def render(rel) -> None:
    st.title("Run history")
    limit = session.min_cell(rel)
    if rel.has(HISTORY_TABLE):
        history = rel.table(HISTORY_TABLE)
        st.dataframe(with_status(history, limit), hide_index=True)
        return
    runs = rel.run_ids()
    st.info("This release keeps only the latest run: the history of runs (and its trends) "
            "arrives with a later change that adds a release history table.")  # fmt: skip
    st.subheader("Current run")
    st.table([{"run id": r, "started": run_time(r)} for r in runs] or [{"run id": "unknown", "started": ""}])  # fmt: skip


if __name__ == "__main__":
    session.run_page(render)
