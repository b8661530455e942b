"""Data quality: what the release says about itself (no release-safe DQ table exists yet)."""

from __future__ import annotations

import streamlit as st

from pipelines.dashboard import session


def render(rel) -> None:
    st.title("Data quality")
    if rel.has("data_quality"):
        st.dataframe(rel.table("data_quality"), hide_index=True)
        return
    st.info("This release has no data-quality table: ingest's quarantine counts and the "
            "validation results stay in the warehouse's `meta` schema, which the dashboard "
            "does not read. Shown here: what the release tables say about themselves.")  # fmt: skip
    acc = rel.table("flag_accuracy")
    if len(acc) and "note" in acc:
        notes = acc[(acc["subgroup"] == "all") & (acc["note"].fillna("") != "")]
        st.subheader("Rules with missing or partial estimates")
        if notes.empty:
            st.write("Every rule was ascertainable and had events.")
        else:
            st.dataframe(notes.assign(label=[rel.label("rule", r) for r in notes["rule"]])[["rule", "label", "note"]], hide_index=True)  # fmt: skip
    log = rel.table("disclosure_log")
    if log.empty:
        session.missing_table("disclosure_log")
        return
    summary = log[log["rule"] == "summary"]
    st.subheader("Disclosure control: released values by status")
    if len(summary):
        counts = summary.assign(values=summary["detail"].str.extract(r"^(\d+) values")[0].astype(float))  # fmt: skip
        pivot = counts.pivot_table(index="table_name", columns="status", values="values", aggfunc="sum", fill_value=0)  # fmt: skip
        st.dataframe(pivot.astype(int))
        st.caption(summary["detail"].str.replace(r"^\d+ values; ", "", regex=True).iloc[0])
    curves = log[log["column_name"].isna() & (log["rule"] != "summary")]
    if len(curves):
        st.subheader("Coarsened curves")
        st.dataframe(curves[["table_name", "row_key", "status", "detail"]], hide_index=True)


if __name__ == "__main__":
    session.run_page(render)
