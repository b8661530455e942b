"""Small-cell suppression with complementary suppression (PROTOCOL.md section 7).

A table is described by a `TableSpec`: which columns are counts, which columns are built on
which counts, which cells are linked by additive relations (`Group`: parts add up to a
total), and which at-risk columns cut a curve. `suppress` then

1. suppresses (NULL) every count in 1..min_cell-1 (zero is allowed);
2. treats an at-risk count below min_cell as cutting the curve: the count is suppressed
   (a zero at-risk is not sensitive but still ends the curve) and so are the curve's values;
3. suppresses further cells until no sensitive cell can be recovered exactly from the
   released cells through the linear relations: first the quick rule (a relation with
   exactly one unknown member reveals it), then an exact check (a cell is recoverable
   when no vector of the null space of the relations restricted to the unknown cells
   moves it). The complementary cell is the smallest released member of a relation that
   reveals a sensitive cell;
4. sets to NULL every derived column of a row whose source counts are suppressed or
   sensitive (a rate or CI built on a suppressed count), and drops cut curve rows.

Virtual cells are quantities that are never released but can be derived (a complement such
as male = all - female, or a non-event count n - n_events); they are sensitive like any count
(|value| in 1..min_cell-1; differences between analyses may be negative).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Cell = tuple[Hashable, str]  # (row position or virtual label, column)
HEADLINE_COST = 10
KEEP_COST = 100
AT_RISK_BASE = 5
STATUSES = ("shown", "suppressed_small", "suppressed_complement", "rounded", "not_estimable")


@dataclass(frozen=True)
class Group:
    """sum(parts) == total; a total of None is public (known from elsewhere)."""

    parts: tuple[Cell, ...]
    total: Cell | None = None

    @property
    def members(self) -> tuple[Cell, ...]:
        return self.parts if self.total is None else (*self.parts, self.total)


@dataclass(frozen=True)
class Linkage:
    """Relations between cells, virtual cells, and aliases (a cell that repeats another)."""

    groups: tuple[Group, ...] = ()
    virtual: Mapping[Cell, float] = field(default_factory=dict)
    aliases: Mapping[Cell, Cell] = field(default_factory=dict)

    def __add__(self, other: Linkage) -> Linkage:
        return Linkage(
            self.groups + other.groups,
            {**self.virtual, **other.virtual},
            {**self.aliases, **other.aliases},
        )


def no_linkage(frame: pd.DataFrame) -> Linkage:
    return Linkage()


@dataclass(frozen=True)
class Nested:
    """Rows with `column` == `inner` count a subset of the episodes of the row with `column`
    == `outer` and the same `match` values (or a superset: the difference may be negative),
    for the count columns `counts` (a count may be a virtual cell of the spec's linkage, such
    as the non-events of `row_complement`). Each difference outer - inner is then a count of
    episodes (virtual, sensitive): e.g. the episodes a sensitivity analysis adds to the
    primary cohort, or `all` minus a subgroup. Two declared nestings over different columns
    also give the difference of differences (e.g. the men a sensitivity analysis adds)."""

    column: str
    outer: str
    inner: str
    match: tuple[str, ...]
    counts: tuple[str, ...]


@dataclass(frozen=True)
class Shared:
    """Counts this table shares with other released tables (the same episodes counted twice).

    Every table declaring the same `key` shows the same count: where one hides it, all hide
    it, with the values built on it (`derived`) and `also_hide`. `where` picks the rows
    ({column: value or values}); `by` names the columns whose values match rows across tables
    (e.g. subgroup), or `value` gives the match key of every picked row (e.g. Table 1's
    group `yes` is subgroup `breast_cancer_history`). An endpoint without `columns` only
    depends on the count (a curve built on it): hidden with it, never hiding it elsewhere.
    `release_tables` applies every declaration with one routine, `align_shared`."""

    key: str
    columns: tuple[str, ...] = ()
    where: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    by: tuple[str, ...] = ()
    value: tuple[str, ...] | None = None
    also_hide: tuple[str, ...] = ()
    # Another table headlines this count: complementary suppression here picks it last
    # (KEEP_COST), and this endpoint only receives: hidden here when hidden in a headline
    # table, but its own hiding is not pushed to the headline tables (known limit,
    # docs/statistics.md 7), so one table's complements cannot empty the headline tables.
    keep: bool = False


@dataclass(frozen=True)
class Withheld:
    """Columns never released in the rows where `where_column == where_value` (data, not
    per-table code): e.g. a value from which a count could be solved, whatever its size."""

    columns: tuple[str, ...]
    where_column: str
    where_value: str


@dataclass(frozen=True)
class TableSpec:
    counts: tuple[str, ...]
    derived: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    linkage: Callable[[pd.DataFrame], Linkage] = no_linkage
    curve: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    drop_cut_rows: bool = False
    # Which cells complementary suppression hides first: a lower cost per column (default 1),
    # plus HEADLINE_COST times the weight `headline` gives the row (True = 1: the `all`
    # subgroup, the overall stratum; graded for the sensitivity analyses: primary `all` 2,
    # other primary rows 1), so a censored count or a subgroup cell goes first.
    hide_cost: Mapping[str, int] = field(default_factory=dict)
    headline: Callable[[pd.DataFrame], np.ndarray] | None = None
    # Curves: pools steps (thresholds, days, bins) before suppression (stats/coarsen.py).
    coarsen: Callable[[pd.DataFrame, int], Coarsened] | None = None
    # Counts always rounded (numbers at risk), to base max(rounding, AT_RISK_BASE).
    always_rounded: tuple[str, ...] = ()
    # Columns naming a row in the output-checking log (labels, never patient data).
    keys: tuple[str, ...] = ()
    # Counts that decide statuses but are never released (dropped with their status and log
    # rows), e.g. the weighted events in a smoothed calibration point's window.
    internal: tuple[str, ...] = ()
    # Rows that count nested populations (data, not per-table code): see `Nested`.
    nested: tuple[Nested, ...] = ()
    # Counts shared with other released tables (cross-table alignment): see `Shared`.
    shared: tuple[Shared, ...] = ()
    # Values never released, removed before disclosure: whole columns (an extreme is one
    # patient's value) and columns of some rows (`Withheld`).
    not_released: tuple[str, ...] = ()
    withheld: tuple[Withheld, ...] = ()

    def releasable(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The table without the values it never releases (a copy; before disclosure)."""
        out = frame.drop(columns=list(self.not_released), errors="ignore")
        for rule in self.withheld:
            rows = (out[rule.where_column] == rule.where_value).to_numpy()
            for column in rule.columns:
                out[column] = out[column].astype(float)
                out.loc[rows, column] = np.nan
        return out


@dataclass(frozen=True)
class Coarsened:
    """A curve table after pooling, and one log note per pooled curve."""

    frame: pd.DataFrame
    notes: tuple[dict, ...] = ()


def is_small(value: float, min_cell: int) -> bool:
    """A count that must not be released: 1..min_cell-1 in absolute value."""
    return bool(np.isfinite(value)) and 1 <= abs(value) < min_cell


# ---- building linkages -------------------------------------------------------------------


def row_sums(frame: pd.DataFrame, parts: Iterable[str], total: str | None = None) -> Linkage:
    """Within each row, the part columns add up to the total column (None: a public total)."""
    parts = tuple(parts)
    groups = tuple(
        Group(tuple((i, c) for c in parts), None if total is None else (i, total))
        for i in range(len(frame))
    )
    return Linkage(groups)


def _row_keys(frame: pd.DataFrame, keys: list[str]) -> list[tuple]:
    return list(zip(*(frame[k].tolist() for k in keys), strict=True)) if keys else [()] * len(frame)


def partition(
    frame: pd.DataFrame,
    total_rows: pd.Series,
    part_rows: pd.Series,
    keys: Iterable[str],
    columns: Iterable[str],
    exhaustive: bool = True,
) -> Linkage:
    """Part rows add up to the total row with the same keys; a nonzero remainder is virtual.

    `exhaustive`: the parts are meant to cover the total (strata, categories), so a zero
    remainder is known to be zero. False for a nested subgroup (female within all): its
    complement (the men) is a count of its own, unknown to an outsider even when it is 0, so
    it is a virtual cell whatever its value. Treating a zero there as known would pin the
    subgroup's cell to the `all` cell and force hiding the `all` row (issue 10)."""
    row_keys = _row_keys(frame, list(keys))
    is_total, is_part = total_rows.to_numpy(dtype=bool), part_rows.to_numpy(dtype=bool)
    parts_by_key: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(is_part):
        parts_by_key.setdefault(row_keys[i], []).append(int(i))
    groups: list[Group] = []
    virtual: dict[Cell, float] = {}
    for col in columns:
        values = frame[col].to_numpy(dtype=float, na_value=np.nan)
        for t in np.flatnonzero(is_total):
            members = parts_by_key.get(row_keys[t], [])
            if not members:
                continue
            total_cell = (int(t), col)
            parts: tuple[Cell, ...] = tuple((p, col) for p in members)
            remainder = values[t] - values[members].sum()
            if not np.isfinite(remainder):
                continue
            if remainder != 0 or not exhaustive:
                rest = (("remainder", total_cell, tuple(members)), col)
                virtual[rest] = float(remainder)
                parts = (*parts, rest)
            groups.append(Group(parts, total_cell))
    return Linkage(tuple(groups), virtual)


def row_complement(frame: pd.DataFrame, total: str, part: str, name: str) -> Linkage:
    """Within each row, the virtual cell `name` = total - part (e.g. non-events = n - n_events)."""
    groups, virtual = [], {}
    for i in range(len(frame)):
        value = float(frame[total].iloc[i]) - float(frame[part].iloc[i])
        if np.isfinite(value):
            virtual[(i, name)] = value
            groups.append(Group(((i, part), (i, name)), (i, total)))
    return Linkage(tuple(groups), virtual)


def sequence_differences(frame: pd.DataFrame, order: str, remaining: str, excluded: str) -> Linkage:
    """Attrition: remaining at step k plus excluded at step k equals remaining at step k-1."""
    ordered = frame[order].to_numpy().argsort(kind="stable")
    groups = tuple(
        Group(((cur, remaining), (cur, excluded)), (prev, remaining))
        for prev, cur in zip(ordered[:-1], ordered[1:], strict=True)
    )
    return Linkage(groups)


def identical_rows(frame: pd.DataFrame, keys: Iterable[str], columns: Iterable[str]) -> Linkage:
    """Rows with the same keys repeat the same counts (long formats): aliases of the first row."""
    columns = list(columns)
    positions = pd.Series(range(len(frame)), index=frame.index)
    aliases: dict[Cell, Cell] = {}
    for _, block in positions.groupby([frame[k] for k in keys], dropna=False, sort=False):
        first, *rest = block.tolist()
        aliases.update({(p, c): (first, c) for p in rest for c in columns})
    return Linkage(aliases=aliases)


def public_totals(frame: pd.DataFrame, keys: Iterable[str], columns: Iterable[str]) -> Linkage:
    """Rows with the same keys add up to a total that is public (e.g. calibration bins to n)."""
    positions = pd.Series(range(len(frame)), index=frame.index)
    groups = []
    for _, block in positions.groupby([frame[k] for k in keys], dropna=False, sort=False):
        groups.extend(Group(tuple((p, c) for p in block.tolist())) for c in columns)
    return Linkage(tuple(groups))


def nested_linkage(frame: pd.DataFrame, nested: Iterable[Nested], base: Linkage) -> Linkage:
    """The relations of declared nested rows: outer = inner + difference (a virtual count),
    per match key and count column; for two nestings over different columns, the difference
    of the differences too. Only the first row of each key counts (long formats repeat)."""
    nested = tuple(nested)
    groups: list[Group] = []
    virtual: dict[Cell, float] = {}
    differences: dict[tuple, Cell] = {}  # (nesting, key values, column) -> difference cell

    columns = {c: frame[c].to_numpy(dtype=float, na_value=np.nan)
               for rule in nested for c in rule.counts if c in frame.columns}  # fmt: skip

    def value(i: int, col: str) -> float:
        if col in columns:
            return float(columns[col][i])
        return float(base.virtual.get((i, col), np.nan))

    for k, rule in enumerate(nested):
        if rule.column not in frame.columns or not all(m in frame.columns for m in rule.match):
            continue
        first = ~frame.duplicated([rule.column, *rule.match]).to_numpy()
        side = frame[rule.column].astype(str).to_numpy()
        keys = _row_keys(frame, list(rule.match))
        outer = {keys[i]: i for i in np.flatnonzero(first & (side == rule.outer))}
        for i in np.flatnonzero(first & (side == rule.inner)):
            o = outer.get(keys[i])
            if o is None:
                continue
            for col in rule.counts:
                d = value(o, col) - value(int(i), col)
                if not np.isfinite(d):
                    continue
                cell: Cell = (("nested", rule.column, rule.outer, rule.inner, keys[i]), col)
                virtual[cell] = d
                differences[(k, keys[i], col)] = cell
                groups.append(Group(((int(i), col), cell), (int(o), col)))
    for (a, key, col), outer_cell in list(differences.items()):
        for b, other in enumerate(nested):
            rule = nested[a]
            if other.column == rule.column or other.column not in rule.match:
                continue
            at = rule.match.index(other.column)
            if str(key[at]) != other.outer or col not in other.counts:
                continue
            inner_key = (*key[:at], other.inner, *key[at + 1 :])
            inner_cell = differences.get((a, inner_key, col))
            if inner_cell is None:
                continue
            rest: Cell = (("nested_rest", a, b, key), col)
            virtual[rest] = virtual[outer_cell] - virtual[inner_cell]
            groups.append(Group((inner_cell, rest), outer_cell))
    return Linkage(tuple(groups), virtual)


# ---- the suppression engine --------------------------------------------------------------


def _cell_values(frame: pd.DataFrame, spec: TableSpec, linkage: Linkage) -> dict[Cell, float]:
    """Values of the virtual cells and of the released count cells that are not aliases."""
    values: dict[Cell, float] = dict(linkage.virtual)
    for col in spec.counts:
        for i, v in enumerate(frame[col].to_numpy(dtype=float, na_value=np.nan)):
            if (i, col) not in linkage.aliases:
                values[(i, col)] = v
    return values


def _canonical_groups(linkage: Linkage, values: Mapping[Cell, float]) -> list[Group]:
    """Relations over canonical cells (aliases replaced), without duplicates or unknown values."""

    def canon(c: Cell) -> Cell:
        return linkage.aliases.get(c, c)

    groups = {
        Group(tuple(canon(m) for m in g.parts), None if g.total is None else canon(g.total))
        for g in linkage.groups
    }
    usable = (g for g in groups if all(m in values and np.isfinite(values[m]) for m in g.members))
    return sorted(usable, key=repr)


@dataclass
class _State:
    """The suppression problem of one table, updated as complements are chosen."""

    values: dict[Cell, float]
    groups: list[Group]
    virtual: set[Cell]
    sensitive: set[Cell]
    suppressed: set[Cell]
    cost: Callable[[Cell], float] = lambda cell: 1
    by_cell: dict[Cell, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # members of each relation, built once (`_components` reads them every round)
        self.members = [g.members for g in self.groups]
        for k, members in enumerate(self.members):
            for m in members:
                self.by_cell.setdefault(m, []).append(k)
        # cells numbered once in `_components`' order (repr) and the (relation, cell) pairs
        # as arrays: each round then finds its components without a Python union-find
        self.order = sorted(self.values, key=repr)
        number = {c: i for i, c in enumerate(self.order)}
        pairs = [(k, number[m]) for k, members in enumerate(self.members) for m in members
                 if m in number]  # fmt: skip
        self.pair_relation = np.array([k for k, _ in pairs], dtype=np.int64)
        self.pair_cell = np.array([i for _, i in pairs], dtype=np.int64)

    def unknown(self, cell: Cell) -> bool:
        return cell in self.suppressed or cell in self.virtual

    def complement(self, members: Iterable[Cell]) -> Cell | None:
        """The cheapest released cell still shown: lowest cost (a censored count before an
        event count, a subgroup before a headline row), then the smallest nonzero value (a
        zero only if nothing else)."""
        candidates = sorted({m for m in members if not self.unknown(m)}, key=repr)
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda m: (self.cost(m), self.values[m] == 0, abs(self.values[m])),
        )

    def neighbours(self, cell: Cell) -> list[Cell]:
        """Members of the relations nearest to `cell` that are still shown.

        Relations that involve the cell come first; when every member of those is already
        unknown, the search moves out through the unknown members.
        """
        frontier, seen = {cell}, {cell}
        while frontier:
            touched = {k for c in frontier for k in self.by_cell.get(c, ())}
            members = {m for k in touched for m in self.groups[k].members}
            shown = [m for m in members if not self.unknown(m)]
            if shown:
                return shown
            frontier = members - seen
            seen |= frontier
        return []


def _propagate(state: _State, group_ids: Iterable[int]) -> None:
    """Quick rule: a relation with exactly one unknown member reveals it; hide one more."""
    queue = deque(group_ids)
    while queue:
        members = state.groups[queue.popleft()].members
        hidden = [m for m in members if state.unknown(m)]
        if len(hidden) != 1 or hidden[0] not in state.sensitive:
            continue
        extra = state.complement(members)
        if extra is not None:
            state.suppressed.add(extra)
            queue.extend(state.by_cell.get(extra, []))


def _components(state: _State) -> list[tuple[list[Group], list[Cell]]]:
    """Connected components of the relations over the unknown cells.

    A graph of relations and unknown cells (an edge where a cell is a member), solved by
    scipy's connected_components. Components come in the order of their first cell (cells
    by repr), cells by repr and relations in order within each, as a union-find over the
    sorted cells gave them (`suppressed_cells` picks complements in this order)."""
    n_cells, n_groups = len(state.order), len(state.groups)
    unknown = np.fromiter((state.unknown(c) for c in state.order), dtype=bool, count=n_cells)
    if not unknown.any():
        return []
    hit = unknown[state.pair_cell]
    relation, cell = state.pair_relation[hit], state.pair_cell[hit]
    size = n_cells + n_groups
    graph = coo_matrix(
        (np.ones(len(cell), dtype=np.int8), (cell, n_cells + relation)), shape=(size, size)
    )
    _, labels = connected_components(graph, directed=False)
    by_label: dict[int, tuple[list[Group], list[Cell]]] = {}
    for i in np.flatnonzero(unknown).tolist():
        by_label.setdefault(int(labels[i]), ([], []))[1].append(state.order[i])
    for k in np.unique(relation).tolist():
        by_label[int(labels[n_cells + k])][0].append(state.groups[k])
    return list(by_label.values())


def _reduced_row_echelon(
    matrix: np.ndarray, tolerance: float = 1e-9, pivots: int | None = None
) -> np.ndarray:
    """Reduced row echelon form by Gauss-Jordan elimination with partial pivoting (dense in,
    dense out): `_eliminate` on the matrix's nonzero entries, its pivot rows then written
    out with entries of magnitude <= tolerance set to 0. `pivots`: pivot only in the first
    columns (the rest records the row operations, as in [A | I])."""
    matrix = np.asarray(matrix, dtype=float)
    rows: list[dict[int, float]] = [{} for _ in range(matrix.shape[0])]
    for r, c in zip(*(side.tolist() for side in matrix.nonzero()), strict=True):
        rows[r][c] = float(matrix[r, c])
    width = matrix.shape[1]
    order = _eliminate(rows, width, width if pivots is None else pivots, tolerance)
    out = np.zeros((len(order), width))
    for k, r in enumerate(order):
        out[k, list(rows[r])] = list(rows[r].values())
    out[np.abs(out) <= tolerance] = 0.0
    return out


# One pivot step of `_eliminate`: the pivot row, its value before it was divided by it, and
# the (row, factor) pairs that then lost factor * pivot row.
Step = tuple[int, float, list[tuple[int, float]]]


def _eliminate(
    rows: list[dict[int, float]],
    width: int,
    pivots: int,
    tolerance: float = 1e-9,
    steps: list[Step] | None = None,
) -> list[int]:
    """Gauss-Jordan elimination with partial pivoting on a sparse matrix (row -> {column:
    nonzero value}), in place; returns the pivot rows in order (the reduced form's rows) and
    appends each step to `steps` when given.

    The same floating-point operations as the dense elimination this replaced, in the same
    order per entry, so the same result bit for bit (tests/unit/test_release_speed.py): per
    column (the first `pivots` only), the pivot is the first row (from the current one on)
    of largest magnitude, skipped when <= tolerance; it is swapped up and divided by itself;
    every other row whose entry there is > tolerance in magnitude loses entry * pivot row,
    over the pivot row's nonzero columns. Entries that become exactly 0 are dropped (the
    dense form kept them as zeros, which no later step reads as nonzero). The relations are
    sparse 0/+-1 rows and stay sparse, so a loop over the nonzero entries does less than
    numpy calls over whole rows and columns, and the copies of the dense matrix are gone."""
    n_rows = len(rows)
    in_column: list[set[int]] = [set() for _ in range(width)]
    for r, entries in enumerate(rows):
        for c in entries:
            in_column[c].add(r)
    position = list(range(n_rows))  # row -> its position after the swaps
    at = list(range(n_rows))  # position -> row
    done = 0  # pivot rows found so far, at positions 0..done-1
    for col in range(pivots):
        if done == n_rows:
            break
        here = [(r, rows[r][col]) for r in in_column[col]]
        best, best_size, best_at = -1, -1.0, n_rows
        for r, v in here:
            where = position[r]
            if where >= done:
                size = abs(v)
                if size > best_size or (size == best_size and where < best_at):
                    best, best_size, best_at = r, size, where
        if best_size <= tolerance:
            continue
        displaced = at[done]
        at[done], at[best_at] = best, displaced
        position[best], position[displaced] = done, best_at
        value = rows[best][col]
        pivot_row = {c: v / value for c, v in rows[best].items()}
        for c in [c for c, v in pivot_row.items() if v == 0]:  # underflow
            del pivot_row[c]
            in_column[c].discard(best)
        rows[best] = pivot_row
        # only the columns still to be pivoted need to know their rows (`in_column`)
        indexed = [(c, v) for c, v in pivot_row.items() if col < c < pivots]
        plain = [(c, v) for c, v in pivot_row.items() if not col < c < pivots]
        targets = [(r, f) for r, f in here if r != best and abs(f) > tolerance]
        for r, factor in targets:
            row = rows[r]
            for c, v in indexed:
                x = row.get(c, 0.0) - factor * v
                if x != 0:
                    if c not in row:
                        in_column[c].add(r)
                    row[c] = x
                elif c in row:
                    del row[c]
                    in_column[c].discard(r)
            for c, v in plain:
                x = row.get(c, 0.0) - factor * v
                if x != 0:
                    row[c] = x
                elif c in row:
                    del row[c]
        if steps is not None:
            steps.append((best, value, targets))
        done += 1
    return at[:done]


def _combination(steps: list[Step], row: int) -> dict[int, float]:
    """The row operations that made `row` of the reduced form: relation -> coefficient, as
    the identity part of [A | I] holds it after the same elimination, bit for bit.

    The identity part never decides a pivot or a factor (those come from A), so it can be
    replayed from A's `steps` alone, and only for the rows this one was built from: a
    backward pass finds them (and up to which step each is needed), a forward pass repeats,
    on those rows only, the division and the subtractions the full elimination does."""
    needed = {row: len(steps)}  # row -> the number of steps whose effect on it is needed
    for t in range(len(steps) - 1, -1, -1):
        pivot, _, targets = steps[t]
        if any(needed.get(r, -1) > t for r, _ in targets):
            needed[pivot] = max(needed.get(pivot, -1), t + 1)
    state = {r: {r: 1.0} for r in needed}
    for t, (pivot, value, targets) in enumerate(steps):
        if needed.get(pivot, -1) <= t:
            continue
        source = state[pivot]
        for c in source:
            source[c] = source[c] / value
        for c in [c for c, v in source.items() if v == 0]:  # underflow
            del source[c]
        entries = list(source.items())
        for r, factor in targets:
            if needed.get(r, -1) <= t:
                continue
            out = state[r]
            for c, v in entries:
                x = out.get(c, 0.0) - factor * v
                if x != 0:
                    out[c] = x
                elif c in out:
                    del out[c]
    return state[row]


def _relation_rows(groups: tuple[Group, ...], index: Mapping[Cell, int]) -> list[dict[int, float]]:
    """One sparse row per relation over the unknown cells (+1 for a part, -1 for the total)."""
    rows = []
    for g in groups:
        row: dict[int, float] = {}
        for m in g.parts:
            if m in index:
                row[index[m]] = row.get(index[m], 0.0) + 1.0
        if g.total is not None and g.total in index:
            row[index[g.total]] = row.get(index[g.total], 0.0) - 1.0
        rows.append({c: v for c, v in row.items() if v != 0})
    return rows


def _shown(row: dict[int, float], tolerance: float = 1e-9) -> list[int]:
    """The columns of a reduced row that the dense form keeps nonzero, in column order."""
    return sorted(c for c, v in row.items() if abs(v) > tolerance)


# a few MB for the largest component (rows and steps): kept only from `recoverable` to
# `revealing` of the same round, so a few entries suffice
@functools.lru_cache(maxsize=16)
def _elimination(
    groups: tuple[Group, ...], cells: tuple[Cell, ...]
) -> tuple[list[dict[int, float]], list[int], list[Step]]:
    """A's elimination (rows, pivot rows in order, steps): `recoverable` reads the pivot
    rows, `revealing` (next, in the same round) the steps. Not to be changed by callers."""
    rows = _relation_rows(groups, {c: j for j, c in enumerate(cells)})
    steps: list[Step] = []
    order = _eliminate(rows, len(cells), len(cells), steps=steps)
    return rows, order, steps


def recoverable(groups: list[Group], cells: list[Cell]) -> list[Cell]:
    """Unknown cells whose value the relations determine exactly from the shown cells.

    Relations restricted to the unknown cells form a matrix A (known cells move to the
    right-hand side). Cell j is determined exactly when the unit vector e_j lies in A's row
    space, that is when a row of A's reduced row echelon form is e_j.
    """
    return list(_recoverable(tuple(groups), tuple(cells)))


# The two searches depend only on the relations and the unknown cells, never on values, and
# the same component comes back many times: in each round of `suppressed_cells` until a
# complement changes it, in `_release_derivable` after the last round, and when a table is
# disclosed again with cells forced by a linked table (analysis.release_tables). Memoised
# (bounded), they are solved once; the answers are the same, so is every released value.
@functools.lru_cache(maxsize=8192)
def _recoverable(groups: tuple[Group, ...], cells: tuple[Cell, ...]) -> tuple[Cell, ...]:
    if len(cells) == 1:
        # one unknown cell (most components): determined iff a relation moves it, which is
        # what the elimination of this one column would find, without running it
        return cells if any(_relation_rows(groups, {cells[0]: 0})) else ()
    rows, order, _ = _elimination(groups, cells)
    determined = set()
    for r in order:
        shown = _shown(rows[r])
        if len(shown) == 1:
            determined.add(shown[0])
    return tuple(c for j, c in enumerate(cells) if j in determined)


def revealing(groups: list[Group], cells: list[Cell], target: Cell) -> list[Group]:
    """The relations an outsider combines to work out `target` (an unknown cell that
    `recoverable` finds): y with y'A = e_target, read off [A | I] in reduced row echelon
    form; the relations with y != 0. Hiding a shown member of one of them breaks this
    combination, so complements are looked for there (empty if `target` is not recoverable).
    The I part is not eliminated whole: `_combination` replays A's elimination on the one
    row needed, with the same arithmetic (the same relations, bit for bit)."""
    return list(_revealing(tuple(groups), tuple(cells), target))


@functools.lru_cache(maxsize=8192)
def _revealing(
    groups: tuple[Group, ...], cells: tuple[Cell, ...], target: Cell
) -> tuple[Group, ...]:
    rows, order, steps = _elimination(groups, cells)
    j = cells.index(target)
    for r in order:
        if _shown(rows[r]) == [j]:
            return tuple(groups[k] for k in _shown(_combination(steps, r)))
    return ()


def suppressed_cells(
    frame: pd.DataFrame, spec: TableSpec, min_cell: int, force: Iterable[Cell] = ()
) -> tuple[set[Cell], set[Cell]]:
    """(suppressed cells, small cells), aliases resolved, after complementary suppression.

    `force`: cells hidden because another table hides the same count; protected like a
    small count (complements chosen so they cannot be worked out) but not small."""
    linkage = spec.linkage(frame)
    if spec.nested:
        linkage += nested_linkage(frame, spec.nested, linkage)
    values = _cell_values(frame, spec, linkage)
    small = {c for c, v in values.items() if is_small(v, min_cell)}
    sensitive = small | ({linkage.aliases.get(c, c) for c in force} & set(values))
    virtual = set(linkage.virtual)
    state = _State(
        values=values,
        groups=_canonical_groups(linkage, values),
        virtual=virtual,
        sensitive=sensitive,
        suppressed={c for c in sensitive if c not in virtual},
        cost=_cost_function(frame, spec),
    )
    _propagate(state, range(len(state.groups)))
    safe: set[tuple[Cell, ...]] = set()  # components already checked and found safe
    while True:
        added = []
        for groups, cells in _components(state):
            key = tuple(cells)
            if not groups or key in safe or not sensitive.intersection(cells):
                continue
            exposed = [c for c in recoverable(groups, cells) if c in sensitive]
            if not exposed:
                safe.add(key)
                continue
            extra = next((e for c in exposed if (e := _complement_for(state, groups, cells, c))),
                         None)  # fmt: skip
            if extra is not None:
                state.suppressed.add(extra)
                added.append(extra)
        if not added:
            _release_derivable(state)
            return _expand(state.suppressed, linkage.aliases), _expand(small, linkage.aliases)
        _propagate(state, [k for c in added for k in state.by_cell.get(c, [])])


def _complement_for(state: _State, groups: list[Group], cells: list[Cell], exposed: Cell):
    """The cheapest shown cell whose hiding breaks a way of working out `exposed`: a member
    of the relations that reveal it (`revealing`), else of the relations nearest to it.

    Not only the nearest relations: with a subgroup's cells hidden and its margins public,
    the nearest shown member of `all - female` is the `all` cell (a headline, hidden last),
    while a cheaper female cell in the revealing margin protects as well."""
    shown = [m for g in revealing(groups, cells, exposed) for m in g.members]
    return state.complement(shown) or state.complement(state.neighbours(exposed))


def _cost_function(frame: pd.DataFrame, spec: TableSpec) -> Callable[[Cell], float]:
    headline = (
        np.asarray(spec.headline(frame), dtype=float)
        if spec.headline is not None
        else np.zeros(len(frame), dtype=float)
    )

    kept: set[Cell] = set()
    for share in (s for s in spec.shared if s.keep):
        for index in _endpoint_rows(frame, share).values():
            positions = np.flatnonzero(frame.index.isin(index))
            kept.update((int(i), c) for i in positions for c in share.columns)

    def cost(cell: Cell) -> float:
        row, col = cell
        extra = HEADLINE_COST * headline[row] if isinstance(row, int | np.integer) else 0.0
        return spec.hide_cost.get(col, 1) + extra + (KEEP_COST if cell in kept else 0.0)

    return cost


def _release_derivable(state: _State) -> None:
    """Show again the complementary cells that the released cells determine anyway.

    Their value is already known to an outsider, so showing it adds no information (the
    set of recoverable cells is closed), and no suppressed cell is left recoverable.
    """
    for groups, cells in _components(state):
        if groups:
            state.suppressed -= {c for c in recoverable(groups, cells) if c not in state.sensitive}


def _expand(cells: set[Cell], aliases: Mapping[Cell, Cell]) -> set[Cell]:
    return cells | {alias for alias, canonical in aliases.items() if canonical in cells}


def curve_cut(frame: pd.DataFrame, spec: TableSpec, min_cell: int) -> dict[str, np.ndarray]:
    """Per at-risk column: rows where fewer than min_cell remain at risk (zero included)."""
    return {col: frame[col].to_numpy(dtype=float, na_value=np.nan) < min_cell for col in spec.curve}


def _masked(values: pd.Series, mask: np.ndarray, dtype: str) -> pd.api.extensions.ExtensionArray:
    """The column with masked entries NULL, as a nullable Int64 or Float64 array."""
    numbers = values.to_numpy(dtype=float, na_value=np.nan).copy()
    numbers[mask] = np.nan
    if dtype == "Int64":
        numbers = np.round(numbers)
    return pd.array(numbers, dtype=dtype)


def round_count(value: float, base: int, min_cell: int) -> float:
    """A count rounded to the nearest multiple of `base`; never 1..min_cell-1 (0 stays 0)."""
    if not np.isfinite(value) or value == 0 or base <= 1:
        return value
    rounded = base * np.floor(value / base + 0.5)
    return float(max(rounded, base * np.ceil(min_cell / base)))


@dataclass(frozen=True)
class Disclosed:
    """A released table (values and `<column>_status`) and its output-checking log rows."""

    frame: pd.DataFrame
    log: pd.DataFrame


LOG_COLUMNS = ["table_name", "row_number", "row_key", "column_name", "status", "rule", "detail"]
RULES = {
    "suppressed_small": "primary: a count in 1..min_cell-1, or a value built on one",
    "suppressed_complement": "complementary: hidden so no suppressed count can be worked out",
    "shared": "cross-table: a linked table hides the same count (and its complements here)",
    "curve_cut": "curve: fewer than min_cell at risk",
    "rounded": "rounding: count rounded to base {base} (never shown as 1..min_cell-1)",
    "at_risk": "curve: number at risk rounded to base {base}",
}


def disclose(
    frame: pd.DataFrame,
    spec: TableSpec,
    min_cell: int,
    rounding: int = 0,
    name: str = "",
    force: Iterable[Cell] = (),
) -> Disclosed:
    """The releasable copy of an aggregate table, with a status per value and a log.

    Steps, all driven by `spec`: pool curve steps (`spec.coarsen`), suppress small counts
    and their complements, hide derived values built on them, cut curves where too few are
    at risk, round counts (`rounding` base, 0 = none; numbers at risk always), and mark
    every value shown / suppressed_small / suppressed_complement / rounded / not_estimable.
    """
    notes: tuple[dict, ...] = ()
    if spec.coarsen is not None:
        coarsened = spec.coarsen(frame.reset_index(drop=True), min_cell)
        frame, notes = coarsened.frame, coarsened.notes
    frame = frame.reset_index(drop=True)
    force = set(force)
    suppressed, sensitive = suppressed_cells(frame, spec, min_cell, force)
    n = len(frame)

    def mask(columns: Iterable[str], cells: set[Cell]) -> np.ndarray:
        hits = np.zeros(n, dtype=bool)
        for i, col in cells:
            if col in columns and isinstance(i, int | np.integer):
                hits[i] = True
        return hits

    out = frame.copy()
    status: dict[str, np.ndarray] = {}
    rule: dict[str, np.ndarray] = {}

    def mark(col: str, where: np.ndarray, value: str, why: str) -> None:
        fresh = where & (status[col] == "shown")
        status[col][fresh] = value
        rule[col][fresh] = why

    source = {c: frame[c].to_numpy(dtype=float, na_value=np.nan) for c in _numeric(spec)}
    for col in _numeric(spec):
        status[col] = np.full(n, "shown", dtype=object)
        rule[col] = np.full(n, "", dtype=object)
        mark(col, ~np.isfinite(source[col]), "not_estimable", "")
    for col in spec.counts:
        mark(
            col, mask({col}, sensitive & suppressed), "suppressed_small", RULES["suppressed_small"]
        )
        mark(col, mask({col}, force), "suppressed_complement", RULES["shared"])
        mark(col, mask({col}, suppressed), "suppressed_complement", RULES["suppressed_complement"])
    for col, sources in spec.derived.items():
        mark(col, mask(set(sources), sensitive), "suppressed_small", RULES["suppressed_small"])
        mark(
            col,
            mask(set(sources), suppressed),
            "suppressed_complement",
            RULES["suppressed_complement"],
        )
    cut_rows = np.zeros(n, dtype=bool)
    for at_risk_col, cut in curve_cut(frame, spec, min_cell).items():
        small = cut & np.isfinite(source[at_risk_col]) & (source[at_risk_col] > 0)
        mark(at_risk_col, small, "suppressed_small", RULES["curve_cut"])
        cut = cut | mask({at_risk_col}, suppressed)
        cut_rows |= cut
        for col in spec.curve[at_risk_col]:
            mark(col, cut & np.isfinite(source[col]), "suppressed_small", RULES["curve_cut"])
    for col in spec.counts:
        base = max(rounding, AT_RISK_BASE) if col in spec.always_rounded else rounding
        if base > 1:
            why = RULES["at_risk" if col in spec.always_rounded else "rounded"].format(base=base)
            mark(col, status[col] == "shown", "rounded", why)
    for col in _numeric(spec):
        hidden = np.isin(status[col], ["suppressed_small", "suppressed_complement"])
        values = source[col].copy()
        if col in spec.counts:
            rounded = status[col] == "rounded"
            base = max(rounding, AT_RISK_BASE) if col in spec.always_rounded else rounding
            values[rounded] = [round_count(v, base, min_cell) for v in values[rounded]]
        out[col] = _masked(pd.Series(values), hidden, "Int64" if col in spec.counts else "Float64")
        out[f"{col}_status"] = status[col]
    log = _log_rows(name, out, spec, status, rule)
    if spec.internal:
        out = out.drop(columns=[c for col in spec.internal for c in (col, f"{col}_status")])
        log = log[~log["column_name"].isin(spec.internal)]
    if spec.drop_cut_rows:
        keep = ~cut_rows
        out = out[keep].reset_index(drop=True)
        log = log[log["row_number"].isin(np.flatnonzero(keep))]
    notes_frame = pd.DataFrame([{**{c: None for c in LOG_COLUMNS}, **note, "table_name": name}
                                for note in notes], columns=LOG_COLUMNS)  # fmt: skip
    return Disclosed(out, pd.concat([notes_frame, log], ignore_index=True) if len(notes) else log)


def _numeric(spec: TableSpec) -> list[str]:
    curve_values = [c for cols in spec.curve.values() for c in cols]
    return list(dict.fromkeys([*spec.counts, *spec.derived, *curve_values]))


def row_labels(frame: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    """'subgroup=all, rule=x' per row: where a value is, in words (labels only)."""
    keys = [k for k in keys if k in frame.columns]
    if not keys:
        return [""] * len(frame)
    columns = [frame[k].astype(str).tolist() for k in keys]
    return [
        ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
        for values in zip(*columns, strict=True)
    ]


def _log_rows(
    name: str,
    frame: pd.DataFrame,
    spec: TableSpec,
    status: Mapping[str, np.ndarray],
    rule: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """One row per suppressed or rounded value: where it is and which rule did it."""
    labels = row_labels(frame, spec.keys)
    rows = []
    for col, values in status.items():
        for i in np.flatnonzero(
            np.isin(values, ["suppressed_small", "suppressed_complement", "rounded"])
        ):
            rows.append((name, int(i), labels[i], col, values[i], rule[col][i], None))
    return pd.DataFrame(rows, columns=LOG_COLUMNS)


def suppress(frame: pd.DataFrame, spec: TableSpec, min_cell: int) -> pd.DataFrame:
    """The releasable values of an aggregate table (no rounding, status columns dropped)."""
    released = disclose(frame, spec, min_cell).frame
    return released.drop(columns=[c for c in released.columns if c.endswith("_status")])


# ---- cross-table alignment ---------------------------------------------------------------

HIDDEN = ("suppressed_small", "suppressed_complement")


def hide(frame: pd.DataFrame, rows, columns: Iterable[str], status: str) -> bool:
    """Set values NULL with a status (in place), unless already hidden or not estimable.
    True when anything changed."""
    changed = False
    for col in columns:
        if f"{col}_status" not in frame.columns:
            continue
        shown = ~frame.loc[rows, f"{col}_status"].isin([*HIDDEN, "not_estimable"])
        target = shown[shown].index
        if len(target):
            frame.loc[target, col] = pd.NA
            frame.loc[target, f"{col}_status"] = status
            changed = True
    return changed


def _endpoint_rows(frame: pd.DataFrame, share: Shared) -> dict[tuple, pd.Index]:
    """The rows a declaration picks, by match key."""
    keep = np.ones(len(frame), dtype=bool)
    for column, wanted in share.where.items():
        values = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        keep &= frame[column].astype(str).isin(values).to_numpy()
    picked = frame[keep]
    if picked.empty:
        return {}
    if share.value is not None or not share.by:
        return {tuple(share.value or ()): picked.index}
    keys = _row_keys(picked.astype({c: str for c in share.by}), list(share.by))
    rows: dict[tuple, list] = {}
    for key, index in zip(keys, picked.index, strict=True):
        rows.setdefault(key, []).append(index)
    return {k: pd.Index(v) for k, v in rows.items()}


def _hidden_matches(released: Mapping[str, pd.DataFrame], members: list) -> set[tuple]:
    hidden: set[tuple] = set()
    for name, share, rows in members:
        if share.keep:  # receives only: see Shared.keep
            continue
        frame = released[name]
        status = [f"{c}_status" for c in share.columns if f"{c}_status" in frame.columns]
        for match, index in rows.items():
            if status and frame.loc[index, status].isin(HIDDEN).any(axis=None):
                hidden.add(match)
    return hidden


def _members(released: Mapping[str, pd.DataFrame], specs: Mapping[str, TableSpec]) -> dict:
    members: dict[str, list] = {}
    for name in released:
        for share in specs[name].shared:
            rows = _endpoint_rows(released[name], share)
            members.setdefault(share.key, []).append((name, share, rows))
    return members


def shared_cells(
    released: Mapping[str, pd.DataFrame], specs: Mapping[str, TableSpec]
) -> dict[str, set[Cell]]:
    """Per table, the count cells to hide because a linked table hides the same count: for
    `disclose(force=...)`, which also hides their complements within the table."""
    cells: dict[str, set[Cell]] = {}
    for members in _members(released, specs).values():
        hidden = _hidden_matches(released, members)
        for name, share, rows in members:
            counts = [c for c in (*share.columns, *share.also_hide) if c in specs[name].counts]
            frame = released[name]
            for match in hidden & set(rows):
                positions = np.flatnonzero(frame.index.isin(rows[match]))
                for c in counts:
                    # a cell the table hides already is protected there (small counts, and
                    # complements left hidden only when not derivable): no need to force it
                    status = frame[f"{c}_status"].to_numpy()
                    cells.setdefault(name, set()).update(
                        (int(i), c) for i in positions if status[i] not in HIDDEN
                    )
    return {name: found for name, found in cells.items() if found}


def align_shared(released: Mapping[str, pd.DataFrame], specs: Mapping[str, TableSpec]) -> None:
    """Hide a shared count everywhere it is hidden anywhere (in place), until nothing changes.

    Hiding more never reveals: each table stays safe on its own, and a count hidden in one
    table and shown in another would undo the first table's suppression."""
    # the rows each declaration picks depend on key columns, which hiding never changes
    shared = _members(released, specs).values()
    changed = True
    while changed:
        changed = False
        for members in shared:
            hidden = _hidden_matches(released, members)
            for name, share, rows in members:
                built_on = [
                    d
                    for d, sources in specs[name].derived.items()
                    if set(sources) & set(share.columns)
                ]
                columns = list(dict.fromkeys([*share.columns, *share.also_hide, *built_on]))
                for match in hidden & set(rows):
                    if hide(released[name], rows[match], columns, "suppressed_complement"):
                        changed = True
