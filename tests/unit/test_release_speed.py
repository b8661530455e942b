"""The release stage does no work twice (issue 16): the exact searches of complementary
suppression depend only on the relations and the unknown cells, so a component solved once
is not solved again (in a later round, in `_release_derivable`, or when a table is disclosed
again with cells forced by a linked table), and the released values stay the same."""

from __future__ import annotations

import pandas as pd

from pipelines.stats import disclosure
from pipelines.stats.disclosure import Group, disclose, recoverable
from pipelines.stats.release_tables import release_specs

MIN_CELL = 11
SPEC = release_specs((365,))["flag_accuracy"]


def two_by_two() -> pd.DataFrame:
    rows = [
        {"subgroup": "all", "rule": "r", "tp": 30, "fp": 39, "fn": 25, "tn": 1897},
        {"subgroup": "female", "rule": "r", "tp": 4, "fp": 20, "fn": 12, "tn": 900},
        {"subgroup": "breast_cancer_history", "rule": "r", "tp": 14, "fp": 15, "fn": 13, "tn": 80},
    ]
    return pd.DataFrame(rows).assign(**{column: 0.5 for column in SPEC.derived})


def test_a_table_disclosed_again_solves_no_component_twice_and_releases_the_same():
    disclosure._recoverable.cache_clear()
    disclosure._revealing.cache_clear()
    first = disclose(two_by_two(), SPEC, MIN_CELL, name="flag_accuracy")
    solved = disclosure._recoverable.cache_info().misses
    assert solved > 0
    # within one disclosure, the last round's components are not solved again
    assert disclosure._recoverable.cache_info().hits > 0
    again = disclose(two_by_two(), SPEC, MIN_CELL, name="flag_accuracy")
    assert disclosure._recoverable.cache_info().misses == solved  # nothing solved anew
    pd.testing.assert_frame_equal(first.frame, again.frame)
    pd.testing.assert_frame_equal(first.log, again.log)


def test_the_memoised_search_answers_as_a_fresh_one():
    a, b, total = (0, "a"), (0, "b"), (0, "t")
    groups = [Group((a, b), total), Group((a,), None)]
    cells = [a, b, total]
    assert recoverable(groups, cells) == recoverable(list(groups), list(cells))
    assert set(recoverable(groups, [a, b])) == {a, b}  # a public, then b = total - a
    assert recoverable(groups, [a, b, total]) == [a]
