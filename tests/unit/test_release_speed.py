"""The release stage does no work twice (issue 16): the exact searches of complementary
suppression depend only on the relations and the unknown cells, so a component solved once
is not solved again (in a later round, in `_release_derivable`, or when a table is disclosed
again with cells forced by a linked table), and the released values stay the same."""

from __future__ import annotations

import numpy as np
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


# ---- the cost of one search (issue 16, second pass) ----------------------------------------


def test_a_one_cell_component_is_answered_without_an_elimination(monkeypatch):
    """Most components hold one unknown cell: determined iff a relation moves it (a zero
    coefficient, a part that is its own total, does not), with no elimination run."""
    calls = []
    eliminate = disclosure._reduced_row_echelon
    monkeypatch.setattr(
        disclosure,
        "_reduced_row_echelon",
        lambda *args, **kwargs: calls.append(1) or eliminate(*args, **kwargs),
    )
    disclosure._recoverable.cache_clear()
    a, b, total = (0, "a"), (0, "b"), (0, "t")
    assert recoverable([Group((a, b), total)], [a]) == [a]
    assert recoverable([Group((a,), a)], [a]) == []  # a - a = 0 says nothing about a
    assert calls == []
    assert set(recoverable([Group((a, b), total)], [a, b])) == set()  # two cells: eliminated
    assert calls == [1]
    disclosure._recoverable.cache_clear()


def _dense_reference(matrix: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
    """The elimination as it was: every row updated over its full width."""
    reduced = matrix.astype(float).copy()
    row = 0
    for col in range(reduced.shape[1]):
        if row == reduced.shape[0]:
            break
        pivot = row + int(np.argmax(np.abs(reduced[row:, col])))
        if abs(reduced[pivot, col]) <= tolerance:
            continue
        reduced[[row, pivot]] = reduced[[pivot, row]]
        reduced[row] /= reduced[row, col]
        others = np.abs(reduced[:, col]) > tolerance
        others[row] = False
        reduced[others] -= np.outer(reduced[others, col], reduced[row])
        row += 1
    reduced[np.abs(reduced) <= tolerance] = 0.0
    return reduced[:row]


def test_the_sparse_elimination_gives_the_dense_one_bit_for_bit():
    generator = np.random.default_rng(16)
    for _ in range(200):
        rows, cols = generator.integers(1, 12, size=2)
        matrix = generator.choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=(rows, cols))
        assert np.array_equal(disclosure._reduced_row_echelon(matrix), _dense_reference(matrix))


def _union_find_components(state) -> list:
    """`_components` as it was (a union-find over the cells sorted by repr)."""
    cells = sorted((c for c in state.values if state.unknown(c)), key=repr)
    parent = {c: c for c in cells}

    def find(c):
        while parent[c] != c:
            c = parent[c]
        return c

    first_hidden = []
    for members in state.members:
        hidden = [m for m in members if m in parent]
        first_hidden.append(hidden[0] if hidden else None)
        for other in hidden[1:]:
            parent[find(other)] = find(hidden[0])
    by_root: dict = {}
    for c in cells:
        by_root.setdefault(find(c), ([], []))[1].append(c)
    for g, first in zip(state.groups, first_hidden, strict=True):
        if first is not None:
            by_root[find(first)][0].append(g)
    return list(by_root.values())


def test_components_come_as_the_union_find_gave_them():
    """Same components, same order of components, cells and relations (complements are
    picked in this order, so any change could change a released value)."""
    generator = np.random.default_rng(7)
    for _ in range(50):
        cells = [(int(i), c) for i in range(6) for c in ("a", "b", "t")]
        groups = []
        for _ in range(int(generator.integers(1, 15))):
            picked = generator.choice(len(cells), size=int(generator.integers(1, 4)), replace=False)
            members = [cells[k] for k in picked]
            groups.append(Group(tuple(members[:-1]) or (members[-1],), members[-1]))
        hidden = {cells[k] for k in np.flatnonzero(generator.random(len(cells)) < 0.4)}
        state = disclosure._State(
            values={c: 1.0 for c in cells},
            groups=groups,
            virtual=set(),
            sensitive=set(),
            suppressed=hidden,
        )
        assert disclosure._components(state) == _union_find_components(state)
