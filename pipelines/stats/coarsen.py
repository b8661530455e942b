"""Curves released coarsened, not hidden (PROTOCOL.md section 7).

A curve is a sequence of cumulative counts: events up to each day (cumulative incidence),
cases and non-cases at or above each cut-off (ROC, decision curve), events and non-events up
to each bin of predicted risk (calibration). An outsider who sees two neighbouring steps
learns their difference, so a step is released only where, for every count series, the
difference from the previous released step and to the end of the curve is 0 or at least
`min_cell`. Every difference between any two released steps is then a sum of such
differences, so it is 0 or at least `min_cell` too: no small count sits between released
steps, whichever two an outsider subtracts. Steps in between are pooled into the next
released step (calibration bins merge; ROC and decision-curve cut-offs and cumulative
incidence days are left out).

`safe_steps` is the one greedy rule (walk from the start of the curve, keep a step when the
difference from the last kept step and the rest to the end are both safe); the table
functions below apply it. Each returns a `Coarsened` (the frame and one log note per curve).

Earlier releases (docs/statistics.md 7.1): each table function also takes `earlier`, the
exact counts earlier runs released at each step key (`step_key`; pipelines/history.py reads
them from meta.release_history, `released_steps` writes them). A step is then kept only if,
for every earlier run, its difference to that run at the same key is 0 or >= min_cell, and
so is its difference minus every other difference an outsider can read for that run (the
kept steps', the curve's start and end): a band of two keys differenced across two
releases is the sum of two such differences (`Across`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.stats.disclosure import Coarsened

Earlier = Mapping[str, Sequence[float]]


def safe_difference(a: np.ndarray, b: np.ndarray, min_cell: int) -> bool:
    """Every series differs by 0 or by at least min_cell between the two steps."""
    d = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    return bool(np.all(np.isfinite(d) & ((d == 0) | (d >= min_cell))))


def safe_steps(
    values: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    min_cell: int,
    candidates: Sequence[bool] | None = None,
    across: Across | None = None,
) -> list[int] | None:
    """Indices of the steps (rows of `values`, in curve order) that may be released.

    `values` holds one cumulative count per series (column) at each step; `start` and `end`
    are the counts at the two ends of the curve (known to an outsider: everyone / no one, or
    zero / the total). None when the whole curve cannot be released (start to end unsafe).
    `across`: what earlier releases showed at the same keys (a step unsafe against them is
    pooled into the next, like any other).
    """
    if not safe_difference(start, end, min_cell):
        return None
    kept, last = [], np.asarray(start, dtype=float)
    for i, row in enumerate(np.asarray(values, dtype=float)):
        if candidates is not None and not candidates[i]:
            continue
        if safe_difference(last, row, min_cell) and safe_difference(row, end, min_cell):
            if across is not None and not across.take(i, kept[-1] if kept else -1, last):
                continue
            kept.append(i)
            last = row
    return kept


# ---- earlier releases: the same key in an earlier run ----------------------------------------

START, END = (("step", "start"),), (("step", "end"),)


def _label(value: object) -> str:
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return format(float(value), ".10g")  # 3, 3.0 and np.int64(3) name the same step
    return str(value)


def step_key(table: str, labels: Sequence[tuple[str, object]], column: str) -> str:
    """`table|k=v,...|column`: one count of one curve step (or of its START / END), named
    the way pipelines/history.py names a released cell."""
    where = ",".join(f"{k}={_label(v)}" for k, v in labels)
    return f"{table}|{where}|{column}"


@dataclass
class Across:
    """A curve's exact counts against those earlier runs released at the same keys.

    An outsider holding an earlier release reads, per earlier run and series, the difference
    at every key both releases show, at the curve's start and end, and 0; any two of them
    subtract to a band of the curve (episodes added with a score in [k, k'), diagnosed
    between two days). `take` keeps a step only if its difference is 0 or >= min_cell from
    all of them. A step left out between two kept steps with equal counts is pinned (the
    curve is flat there), so it is checked as if shown.
    """

    values: np.ndarray  # (steps, series): this run's counts
    earlier: np.ndarray  # (steps, runs, series): earlier runs' released counts, NaN if none
    min_cell: int
    known: list[np.ndarray]  # differences (runs, series) an outsider can read

    @classmethod
    def of(
        cls,
        earlier: Mapping[str, Sequence[float]] | None,
        table: str,
        curve: Sequence[tuple[str, object]],
        steps: Sequence[Sequence[tuple[str, object]]],
        columns: Sequence[str],
        values: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        min_cell: int,
    ) -> Across | None:
        """None when no earlier run released this curve (a first run: nothing changes)."""
        if not earlier:
            return None

        def at(labels: Sequence[tuple[str, object]]) -> np.ndarray:
            out = np.full((runs, len(columns)), np.nan)
            for c, col in enumerate(columns):
                found = earlier.get(step_key(table, (*curve, *labels), col), ())
                out[: len(found), c] = found
            return out

        runs = max(len(v) for v in earlier.values())
        at_steps = np.array([at(step) for step in steps]).reshape(len(steps), runs, len(columns))
        ends = at(START), at(END)
        if np.isnan(at_steps).all() and np.isnan(ends).all():
            return None
        values = np.asarray(values, dtype=float).reshape(len(steps), len(columns))
        known = [np.zeros((runs, len(columns))), start - ends[0], end - ends[1]]
        return cls(values, at_steps, min_cell, known)

    def _safe(self, d: np.ndarray) -> bool:
        for other in self.known:
            x = np.abs(d - other)
            if np.any(np.isfinite(x) & (x >= 1) & (x < self.min_cell)):
                return False
        return True

    def take(self, i: int, last: int, last_value: np.ndarray) -> bool:
        """Step i may be shown after step `last` (-1: the start, counts `last_value`);
        if so, what it reveals is added to what the outsider knows."""
        pinned = self.values[i] == np.asarray(last_value, dtype=float)
        shown = [self.values[i] - self.earlier[i]]
        shown += [
            np.where(pinned, self.values[i] - self.earlier[k], np.nan) for k in range(last + 1, i)
        ]
        if not all(self._safe(d) for d in shown):
            return False
        self.known += shown
        return True


def _note(key: str, kept: int, total: int, what: str) -> dict:
    return {
        "row_key": key,
        "status": "rounded" if kept else "suppressed_small",
        "rule": f"curve coarsened: {what} pooled until each step holds 0 or >= min_cell",
        "detail": f"{kept} of {total} steps released",
    }


# ---- ROC points: cut-offs of one score, shared by nested subgroups ------------------------

NESTED = ("breast_cancer_history", "female")


def _roc_series(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(tp, fp) per threshold, and (cases, non-cases): the curve's start (everyone tested +)."""
    values = rows[["tp", "fp"]].to_numpy(dtype=float)
    first = rows.iloc[0]
    start = np.array([first["tp"] + first["fn"], first["fp"] + first["tn"]], dtype=float)
    return values, start


def _roc_across(
    rows: pd.DataFrame,
    values: np.ndarray,
    start: np.ndarray,
    earlier: Earlier | None,
    min_cell: int,
) -> Across | None:
    steps = [(("threshold", t),) for t in rows["threshold"]]
    curve = (("subgroup", rows["subgroup"].iloc[0]),)
    return Across.of(earlier, "roc_points", curve, steps, ("tp", "fp"), values, start,
                     np.zeros(2), min_cell)  # fmt: skip


def roc_points(frame: pd.DataFrame, min_cell: int, earlier: Earlier | None = None) -> Coarsened:
    """Keep the cut-offs whose score bands hold 0 or >= min_cell cases and non-cases.

    `all` first; a nested subgroup keeps a cut-off only if its own bands are safe and, at
    cut-offs `all` releases too, so are the bands of its complement (`all` minus the
    subgroup), which an outsider gets by subtraction.
    """
    if frame.empty:
        return Coarsened(frame)
    frame = frame.sort_values(["subgroup", "threshold"], kind="stable")
    keep = pd.Series(False, index=frame.index)
    notes = []
    parent = frame[frame["subgroup"] == "all"]
    parent_values, parent_start = _roc_series(parent) if len(parent) else (None, None)
    parent_kept: set = set()
    if len(parent):
        across = _roc_across(parent, parent_values, parent_start, earlier, min_cell)
        kept = safe_steps(parent_values, parent_start, np.zeros(2), min_cell, None, across) or []
        keep[parent.index[kept]] = True
        parent_kept = set(parent["threshold"].iloc[kept])
        notes.append(_note("subgroup=all", len(kept), len(parent), "cut-offs"))
    for name, rows in frame.groupby("subgroup", sort=False):
        if name == "all":
            continue
        values, start = _roc_series(rows)
        across = _roc_across(rows, values, start, earlier, min_cell)
        kept = _nested_steps(rows, values, start, parent, parent_kept, min_cell, across)
        keep[rows.index[kept]] = True
        notes.append(_note(f"subgroup={name}", len(kept), len(rows), "cut-offs"))
    return Coarsened(frame[keep].reset_index(drop=True), tuple(notes))


def _nested_steps(
    rows: pd.DataFrame,
    values: np.ndarray,
    start: np.ndarray,
    parent: pd.DataFrame,
    parent_kept: set,
    min_cell: int,
    across: Across | None = None,
) -> list[int]:
    end = np.zeros(2)
    if rows["subgroup"].iloc[0] not in NESTED or parent.empty:
        return safe_steps(values, start, end, min_cell, None, across) or []
    by_threshold = parent.set_index("threshold")[["tp", "fp"]].astype(float)
    parent_start = _roc_series(parent)[1]
    rest_last = parent_start - start  # the complement's curve starts at its margins
    if not safe_difference(start, end, min_cell) or not safe_difference(rest_last, end, min_cell):
        return []
    kept, last = [], start
    for i, (threshold, row) in enumerate(zip(rows["threshold"], values, strict=True)):
        if not (safe_difference(last, row, min_cell) and safe_difference(row, end, min_cell)):
            continue
        if threshold in parent_kept:
            rest = by_threshold.loc[threshold].to_numpy() - row
            if not (
                safe_difference(rest_last, rest, min_cell) and safe_difference(rest, end, min_cell)
            ):
                continue
        if across is not None and not across.take(i, kept[-1] if kept else -1, last):
            continue
        if threshold in parent_kept:
            rest_last = rest
        kept.append(i)
        last = row
    return kept


# ---- decision curve: cut-offs of each subgroup's own model ----------------------------------


def decision_curve(frame: pd.DataFrame, min_cell: int, earlier: Earlier | None = None) -> Coarsened:
    """Per subgroup, the model's tp/fp at each threshold are those of the nearest released
    cut-off (`step_threshold`; 0 = treat all; a tie goes to the lower one).

    The released cut-offs are chosen by `safe_steps` from treat-all (every event and
    non-event) to treat-none. Net benefit is recomputed at every threshold t from the
    step's counts (refer when the predicted risk is at least the step's cut-off, weighed at
    t), so the curve is drawn at every threshold and reveals nothing between steps.
    """
    if frame.empty:
        return Coarsened(frame.assign(step_threshold=pd.Series(dtype=float)))
    frames, notes = [], []
    for name, rows in frame.sort_values(["subgroup", "threshold"]).groupby("subgroup", sort=False):
        rows = rows.copy()
        n, events = float(rows["n"].iloc[0]), float(rows["n_events"].iloc[0])
        values = rows[["tp", "fp"]].to_numpy(dtype=float)
        start = np.array([events, n - events])
        fitted = np.isfinite(values).all(axis=1)
        steps = [(("step_threshold", t),) for t in rows["threshold"]]
        across = Across.of(earlier, "decision_curve", (("subgroup", name),), steps, ("tp", "fp"),
                           values, start, np.zeros(2), min_cell)  # fmt: skip
        kept = (
            safe_steps(values, start, np.zeros(2), min_cell, fitted, across)
            if fitted.any()
            else None
        )
        step = np.full(len(rows), np.nan)
        if kept is not None:
            pt = rows["threshold"].to_numpy(dtype=float)
            cut_offs = np.array([0.0, *pt[kept]])  # 0: treat all
            counts = np.array([start, *values[kept]])
            nearest = np.argmin(np.abs(pt[:, None] - cut_offs[None, :]), axis=1)  # ties: lower
            step, tp, fp = cut_offs[nearest], counts[nearest, 0], counts[nearest, 1]
            rows["tp"], rows["fp"] = tp, fp
            rows["net_benefit_model"] = tp / n - fp / n * pt / (1 - pt)
            notes.append(_note(f"subgroup={name}", len(kept), len(rows), "thresholds"))
        elif fitted.any():
            rows[["tp", "fp", "net_benefit_model"]] = np.nan
            notes.append(_note(f"subgroup={name}", 0, len(rows), "thresholds"))
        rows["step_threshold"] = step
        frames.append(rows)
    return Coarsened(pd.concat(frames, ignore_index=True), tuple(notes))


# ---- calibration: bins of predicted risk ---------------------------------------------------

CALIBRATION = ("n_events", "n_non_events")  # accumulated up to a decile (`bin_to`)


def calibration(frame: pd.DataFrame, min_cell: int, earlier: Earlier | None = None) -> Coarsened:
    """Adjacent bins merged until each holds 0 or >= min_cell events and non-events.

    `bin` is the first decile of the pooled bin and `bin_to` the last; `mean_predicted` is
    the mean over the pooled episodes (weighted by n) and `observed_rate` events / n.
    """
    if frame.empty:
        return Coarsened(frame.assign(bin_to=pd.Series(dtype="Int64")))
    frames, notes = [], []
    columns = [*frame.columns.drop("run_id", errors="ignore"), "bin_to"]
    for name, rows in frame.sort_values(["subgroup", "bin"]).groupby("subgroup", sort=False):
        n = rows["n"].to_numpy(dtype=float)
        events = rows["n_events"].to_numpy(dtype=float)
        cumulative = np.column_stack([np.cumsum(events), np.cumsum(n - events)])
        steps = [(("bin_to", b),) for b in rows["bin"]]
        across = Across.of(earlier, "calibration", (("subgroup", name),), steps, CALIBRATION,
                           cumulative, np.zeros(2), cumulative[-1], min_cell)  # fmt: skip
        kept = safe_steps(cumulative, np.zeros(2), cumulative[-1], min_cell, None, across) or []
        pooled, first = [], 0
        for last in kept:
            part = rows.iloc[first : last + 1]
            size, hits = float(part["n"].sum()), float(part["n_events"].sum())
            pooled.append({
                "subgroup": name, "bin": int(part["bin"].iloc[0]), "bin_to": int(part["bin"].iloc[-1]),
                "n": size, "n_events": hits,
                "mean_predicted": float((part["mean_predicted"] * part["n"]).sum() / size),
                "observed_rate": hits / size,
            })  # fmt: skip
            first = last + 1
        notes.append(_note(f"subgroup={name}", len(pooled), len(rows), "bins"))
        frames.append(pd.DataFrame(pooled, columns=columns))
    out = pd.concat([f for f in frames if len(f)] or [pd.DataFrame(columns=columns)])
    out = out.reset_index(drop=True)
    return Coarsened(out.astype({"bin": "Int64", "bin_to": "Int64"}), tuple(notes))


# ---- cumulative incidence: days -------------------------------------------------------------


def cumulative_incidence(
    frame: pd.DataFrame, min_cell: int, earlier: Earlier | None = None
) -> Coarsened:
    """Per stratum, the days where the curve may step: >= min_cell diagnoses since the last.

    Needs the mart's daily `n_outcome` (diagnoses that day). Day 0 is kept when nothing
    happened on it (the curve's origin); a step day also needs >= min_cell at risk; the
    diagnoses after the last released step must be 0 or >= min_cell, so the total released
    elsewhere (`n_diagnosed`) does not reveal them. `n_outcome` is not released.
    """
    if frame.empty or "n_outcome" not in frame.columns:
        return Coarsened(frame.drop(columns=["n_outcome"], errors="ignore"))
    frames, notes = [], []
    for (variable, stratum), rows in frame.sort_values("day").groupby(
        ["stratum_variable", "stratum"], sort=False
    ):
        cumulative = np.cumsum(rows["n_outcome"].to_numpy(dtype=float))[:, None]
        at_risk = rows["at_risk"].to_numpy(dtype=float)
        step_day = np.concatenate(([True], np.diff(cumulative[:, 0]) > 0)) & (at_risk >= min_cell)
        steps = [(("day", d),) for d in rows["day"]]
        curve = (("stratum_variable", variable), ("stratum", stratum))
        across = Across.of(earlier, "cumulative_incidence", curve, steps, ("n_outcome",),
                           cumulative, np.zeros(1), cumulative[-1], min_cell)  # fmt: skip
        kept = safe_steps(cumulative, np.zeros(1), cumulative[-1], min_cell, step_day, across) or []
        frames.append(rows.iloc[kept])
        key = f"stratum_variable={variable}, stratum={stratum}"
        notes.append(_note(key, len(kept), int(step_day.sum()), "days"))
    out = pd.concat(frames, ignore_index=True).drop(columns=["n_outcome"])
    return Coarsened(out, tuple(notes))


def step_value(curve: pd.DataFrame, day: float, column: str) -> float:
    """The coarsened curve's value at a day: its last released step on or before it."""
    before = curve[curve["day"] <= day].sort_values("day")
    value = before[column].iloc[-1] if len(before) else np.nan
    return np.nan if pd.isna(value) else float(value)


# ---- Kaplan-Meier survival: days --------------------------------------------------------------


def survival_curve(frame: pd.DataFrame, min_cell: int, earlier: Earlier | None = None) -> Coarsened:
    """The days where the survival curve may step: >= min_cell deaths since the last one.

    Like cumulative incidence: day 0 (the origin) is kept when no one died on it, a step
    also needs >= min_cell at risk, and the deaths after the last released step are 0 or
    >= min_cell (the total is released as prognosis_summary's n_events). `n_deaths` is not
    released; an outsider inverting a step (1 - S_k / S_k-1) x at risk finds pooled deaths.
    """
    if frame.empty or "n_deaths" not in frame.columns:
        return Coarsened(frame.drop(columns=["n_deaths"], errors="ignore"))
    rows = frame.sort_values("day").reset_index(drop=True)
    cumulative = np.cumsum(rows["n_deaths"].to_numpy(dtype=float))[:, None]
    at_risk = rows["at_risk"].to_numpy(dtype=float)
    step_day = np.concatenate(([True], np.diff(cumulative[:, 0]) > 0)) & (at_risk >= min_cell)
    steps = [(("day", d),) for d in rows["day"]]
    across = Across.of(earlier, "survival_after_diagnosis", (), steps, ("n_deaths",),
                       cumulative, np.zeros(1), cumulative[-1], min_cell)  # fmt: skip
    kept = safe_steps(cumulative, np.zeros(1), cumulative[-1], min_cell, step_day, across) or []
    out = rows.iloc[kept].drop(columns=["n_deaths"]).reset_index(drop=True)
    return Coarsened(out, (_note("overall", len(kept), int(step_day.sum()), "days"),))


def first_day_at_or_below(curve: pd.DataFrame, column: str, level: float) -> float:
    """The first released day where a survival curve is at or below `level` (the median at
    0.5), inf when it never gets there (not reached)."""
    below = curve[curve[column].astype(float) <= level]
    return float(below["day"].min()) if len(below) else float("inf")


# ---- what a run released, for the next runs (pipelines/history.py) ---------------------------


@dataclass(frozen=True)
class Series:
    """How to read one pooled curve table's count series from its mart rows."""

    curve: tuple[str, ...]  # columns naming one curve
    step: str  # the mart column naming a step
    released_step: str  # the release column naming the step a row shows
    columns: tuple[str, ...]  # the series (cumulative counts)
    counts: Callable[[pd.DataFrame], tuple[pd.DataFrame, np.ndarray, np.ndarray]]


def _cumulative(column: str) -> Callable:
    def counts(rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        total = rows[column].astype(float).cumsum()
        return total.to_frame(column), np.zeros(1), np.array([total.iloc[-1]])

    return counts


def _cut_offs(start: Callable[[pd.Series], list[float]]) -> Callable:
    def counts(rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        return rows[["tp", "fp"]].astype(float), np.array(start(rows.iloc[0])), np.zeros(2)

    return counts


def _calibration_counts(rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    events = rows["n_events"].astype(float).cumsum()
    non_events = (rows["n"] - rows["n_events"]).astype(float).cumsum()
    values = pd.DataFrame({CALIBRATION[0]: events, CALIBRATION[1]: non_events})
    return values, np.zeros(2), values.iloc[-1].to_numpy()


SERIES = {
    "roc_points": Series(("subgroup",), "threshold", "threshold", ("tp", "fp"),
                         _cut_offs(lambda r: [r["tp"] + r["fn"], r["fp"] + r["tn"]])),
    "decision_curve": Series(("subgroup",), "threshold", "step_threshold", ("tp", "fp"),
                             _cut_offs(lambda r: [r["n_events"], r["n"] - r["n_events"]])),
    "calibration": Series(("subgroup",), "bin", "bin_to", CALIBRATION, _calibration_counts),
    "cumulative_incidence": Series(("stratum_variable", "stratum"), "day", "day", ("n_outcome",),
                                   _cumulative("n_outcome")),
    "survival_after_diagnosis": Series((), "day", "day", ("n_deaths",), _cumulative("n_deaths")),
}  # fmt: skip


def released_steps(table: str, release: pd.DataFrame, mart: pd.DataFrame) -> dict[str, float]:
    """`step_key` -> exact count (from the mart) of every step of `table`'s curves that the
    release shows, and of each shown curve's START and END: what later runs compare with."""
    series = SERIES.get(table)
    if series is None or release.empty or mart.empty:
        return {}
    shown = {
        tuple(_label(v) for v in key)
        for key in release[[*series.curve, series.released_step]].itertuples(index=False)
        if not pd.isna(key[-1])
    }
    out: dict[str, float] = {}
    mart = mart.sort_values([*series.curve, series.step], kind="stable")
    groups = mart.groupby(list(series.curve), sort=False) if series.curve else [((), mart)]
    for names, rows in groups:
        names = names if isinstance(names, tuple) else (names,)
        curve = tuple(zip(series.curve, names, strict=True))
        values, start, end = series.counts(rows)
        steps = [_label(v) for v in rows[series.step]]
        hits = [i for i, step in enumerate(steps) if (*(_label(n) for n in names), step) in shown]
        if not hits:
            continue
        for c, col in enumerate(series.columns):
            out[step_key(table, (*curve, *START), col)] = float(start[c])
            out[step_key(table, (*curve, *END), col)] = float(end[c])
            column = values[col].to_numpy(dtype=float)
            for i in _known_steps(column, hits, start[c], end[c]):
                key = step_key(table, (*curve, (series.released_step, steps[i])), col)
                if np.isfinite(column[i]):
                    out[key] = float(column[i])
    return out


def _known_steps(values: np.ndarray, shown: list[int], start: float, end: float) -> list[int]:
    """The steps whose count an outsider knows: the shown ones, and those between two shown
    points (or a shown point and an end) with equal counts (a monotone curve is flat there)."""
    known = []
    bounds = [(-1, start), *((i, values[i]) for i in shown), (len(values), end)]
    for (a, low), (b, high) in itertools.pairwise(bounds):
        if b < len(values):
            known.append(b)
        if low == high:
            known.extend(range(a + 1, b))
    return sorted(set(known))
