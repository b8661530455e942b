"""What every page shares: the session's release tables, a figure helper, the page header."""

from __future__ import annotations

import streamlit as st

from pipelines.dashboard.data import Release, Source, SourceError, source_from_env, source_stamp
from pipelines.dashboard.display import DEFAULT_MIN_CELL


@st.cache_resource(show_spinner=False, max_entries=2)
def _release_for(source: Source, stamp: float) -> Release:
    """One Release per source and version: `stamp` changes when a run rewrites the source."""
    return Release(source)


def release() -> Release:
    """The release tables named by the environment; a one-line error and stop if unusable."""
    try:
        source = source_from_env()
        return _release_for(source, source_stamp(source))
    except SourceError as exc:
        _stop(exc)


def run_page(render) -> None:
    """Draw a page; a source that fails while reading (a run took the warehouse) is one line."""
    try:
        render(release())
    except SourceError as exc:
        _stop(exc)


def _stop(exc: Exception):
    st.error(f"redflags dashboard: error: {exc}")
    st.stop()


def min_cell(rel: Release) -> int:
    return rel.min_cell() or DEFAULT_MIN_CELL


def figure(width: float = 8, height: float = 4.5):
    """A new matplotlib figure and axes (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def show(fig) -> None:
    import matplotlib.pyplot as plt

    st.pyplot(fig, clear_figure=True)
    plt.close(fig)


def missing_table(name: str) -> None:
    st.info(f"This release has no `release.{name}` table (or it is empty).")
