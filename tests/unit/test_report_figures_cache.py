"""The report's figures are drawn once per warehouse state; `clear_cache` forgets them."""

from __future__ import annotations

from pipelines.report import figures


def test_figures_are_drawn_once_per_key_until_the_cache_is_cleared():
    drawn = []

    def build():
        drawn.append(1)
        return {"cif_figure": None}

    figures.clear_cache()
    first = figures.cached(("w", 1, 1), build)
    assert figures.cached(("w", 1, 1), build) is first
    assert len(drawn) == 1
    figures.clear_cache()
    assert figures.cached(("w", 1, 1), build) == first
    assert len(drawn) == 2  # drawn afresh
