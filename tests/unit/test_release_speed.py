"""The release stage does no work twice (issue 16): the exact searches of complementary
suppression depend only on the relations and the unknown cells, so a component solved once
is not solved again (in a later round, in `_release_derivable`, or when a table is disclosed
again with cells forced by a linked table), and the released values stay the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

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
    eliminate = disclosure._eliminate
    monkeypatch.setattr(
        disclosure,
        "_eliminate",
        lambda *args, **kwargs: calls.append(1) or eliminate(*args, **kwargs),
    )
    disclosure._recoverable.cache_clear()
    disclosure._elimination.cache_clear()
    a, b, total = (0, "a"), (0, "b"), (0, "t")
    assert recoverable([Group((a, b), total)], [a]) == [a]
    assert recoverable([Group((a,), a)], [a]) == []  # a - a = 0 says nothing about a
    assert calls == []
    assert set(recoverable([Group((a, b), total)], [a, b])) == set()  # two cells: eliminated
    assert calls == [1]
    disclosure._recoverable.cache_clear()


def _dense_reference(
    matrix: np.ndarray, tolerance: float = 1e-9, pivots: int | None = None
) -> np.ndarray:
    """The elimination as it was: every row updated over its full width."""
    reduced = matrix.astype(float).copy()
    row = 0
    for col in range(reduced.shape[1] if pivots is None else pivots):
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


# ---- one elimination of A per component and round (issue 16, third pass) ------------------


def _component(rows: list[list[int]]) -> tuple[list[Group], list]:
    """Relations over unknown cells 0..n-1 from rows of 0/+-1 coefficients (+1 a part, -1
    the total; a row with several -1 is split so each relation has one total at most)."""
    cells = [(j, "c") for j in range(len(rows[0]))]
    groups = []
    for row in rows:
        parts = tuple(cells[j] for j, v in enumerate(row) if v == 1)
        totals = [cells[j] for j, v in enumerate(row) if v == -1]
        groups.append(Group(parts + tuple(totals[1:]), totals[0] if totals else None))
    return groups, cells


def _revealing_as_it_was(groups: list[Group], cells: list, target) -> tuple:
    """`revealing` before the third pass: [A | I] eliminated whole (dense, full width)."""
    index = {c: j for j, c in enumerate(cells)}
    matrix = np.zeros((len(groups), len(cells)))
    for r, g in enumerate(groups):
        for m in g.parts:
            matrix[r, index[m]] += 1.0
        if g.total is not None:
            matrix[r, index[g.total]] -= 1.0
    reduced = _dense_reference(np.hstack([matrix, np.eye(len(groups))]), pivots=len(cells))
    left, right = reduced[:, : len(cells)], reduced[:, len(cells) :]
    j = index[target]
    rows = np.flatnonzero(((left != 0).sum(axis=1) == 1) & (left[:, j] != 0))
    recovered = {cells[int(np.flatnonzero(r)[0])] for r in left[(left != 0).sum(axis=1) == 1]}
    found = tuple(groups[k] for k in np.flatnonzero(right[rows[0]])) if len(rows) else ()
    return found, recovered


systems = st.integers(1, 9).flatmap(
    lambda width: st.lists(
        st.lists(st.sampled_from([-1, 0, 0, 1]), min_size=width, max_size=width),
        min_size=1,
        max_size=12,
    )
)


@settings(max_examples=300, deadline=None)
@given(systems)
def test_the_searches_answer_as_the_whole_elimination_of_a_and_i(rows):
    """`recoverable` and `revealing` read A's elimination and replay its steps on one row
    of the I part: the same cells and the same relations as [A | I] eliminated whole, on
    random 0/+-1 systems (dependent relations included, where the combination is not
    unique and only the same arithmetic gives the same one)."""
    groups, cells = _component(rows)
    disclosure._recoverable.cache_clear()
    disclosure._revealing.cache_clear()
    disclosure._elimination.cache_clear()
    for target in cells:
        found, recovered = _revealing_as_it_was(groups, cells, target)
        assert tuple(disclosure.revealing(groups, cells, target)) == found
    if len(cells) > 1:
        assert set(recoverable(groups, cells)) == recovered


def test_the_replayed_combination_is_the_i_part_bit_for_bit():
    generator = np.random.default_rng(16)
    for _ in range(300):
        rows, cols = (int(v) for v in generator.integers(1, 14, size=2))
        matrix = generator.choice([-1.0, 0.0, 0.0, 0.0, 1.0, 2.0], size=(rows, cols))
        whole = _dense_reference(np.hstack([matrix, np.eye(rows)]), pivots=cols)
        sparse = [{c: float(matrix[r, c]) for c in np.flatnonzero(matrix[r])} for r in range(rows)]
        steps: list = []
        order = disclosure._eliminate(sparse, cols, cols, steps=steps)
        assert len(order) == len(whole)
        for k, r in enumerate(order):
            combination = np.zeros(rows)
            replayed = disclosure._combination(steps, r)
            combination[list(replayed)] = list(replayed.values())
            combination[np.abs(combination) <= 1e-9] = 0.0
            assert combination.tobytes() == whole[k, cols:].tobytes()


def test_a_round_eliminates_a_once_for_both_searches(monkeypatch):
    """On the +1% re-run one component of ~1,076 cells came back ~210 rounds, each eliminating
    A for `recoverable` and [A | I] (1,057 x 2,133) for `revealing`: now A once, its steps
    serving both (before: two eliminations, one of them of width cells + relations)."""
    widths: list[int] = []
    dense = disclosure._reduced_row_echelon
    monkeypatch.setattr(
        disclosure,
        "_reduced_row_echelon",
        lambda matrix, *args, **kwargs: (
            widths.append(matrix.shape[1]) or dense(matrix, *args, **kwargs)
        ),
    )
    if hasattr(disclosure, "_eliminate"):
        sparse = disclosure._eliminate
        monkeypatch.setattr(
            disclosure,
            "_eliminate",
            lambda rows, width, *args, **kwargs: (
                widths.append(width) or sparse(rows, width, *args, **kwargs)
            ),
        )
        disclosure._elimination.cache_clear()
    disclosure._recoverable.cache_clear()
    disclosure._revealing.cache_clear()
    a, b, c, total = (0, "a"), (0, "b"), (0, "c"), (0, "t")
    # a + b and a are public, c - t is known: a, then b = (a + b) - a, are worked out
    groups = [Group((a, b)), Group((a,)), Group((c,), total)]
    cells = [a, b, c, total]
    assert recoverable(groups, cells) == [a, b]
    assert disclosure.revealing(groups, cells, b) == groups[:2]
    assert widths == [len(cells)]
