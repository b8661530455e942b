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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipelines.stats.disclosure import Coarsened


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
) -> list[int] | None:
    """Indices of the steps (rows of `values`, in curve order) that may be released.

    `values` holds one cumulative count per series (column) at each step; `start` and `end`
    are the counts at the two ends of the curve (known to an outsider: everyone / no one, or
    zero / the total). None when the whole curve cannot be released (start to end unsafe).
    """
    if not safe_difference(start, end, min_cell):
        return None
    kept, last = [], np.asarray(start, dtype=float)
    for i, row in enumerate(np.asarray(values, dtype=float)):
        if candidates is not None and not candidates[i]:
            continue
        if safe_difference(last, row, min_cell) and safe_difference(row, end, min_cell):
            kept.append(i)
            last = row
    return kept


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


def roc_points(frame: pd.DataFrame, min_cell: int) -> Coarsened:
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
        kept = safe_steps(parent_values, parent_start, np.zeros(2), min_cell) or []
        keep[parent.index[kept]] = True
        parent_kept = set(parent["threshold"].iloc[kept])
        notes.append(_note("subgroup=all", len(kept), len(parent), "cut-offs"))
    for name, rows in frame.groupby("subgroup", sort=False):
        if name == "all":
            continue
        values, start = _roc_series(rows)
        kept = _nested_steps(rows, values, start, parent, parent_kept, min_cell)
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
) -> list[int]:
    end = np.zeros(2)
    if rows["subgroup"].iloc[0] not in NESTED or parent.empty:
        return safe_steps(values, start, end, min_cell) or []
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
            rest_last = rest
        kept.append(i)
        last = row
    return kept


# ---- decision curve: cut-offs of each subgroup's own model ----------------------------------


def decision_curve(frame: pd.DataFrame, min_cell: int) -> Coarsened:
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
        kept = safe_steps(values, start, np.zeros(2), min_cell, fitted) if fitted.any() else None
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


def calibration(frame: pd.DataFrame, min_cell: int) -> Coarsened:
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
        kept = safe_steps(cumulative, np.zeros(2), cumulative[-1], min_cell) or []
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


def cumulative_incidence(frame: pd.DataFrame, min_cell: int) -> Coarsened:
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
        kept = safe_steps(cumulative, np.zeros(1), cumulative[-1], min_cell, step_day) or []
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


def survival_curve(frame: pd.DataFrame, min_cell: int) -> Coarsened:
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
    kept = safe_steps(cumulative, np.zeros(1), cumulative[-1], min_cell, step_day) or []
    out = rows.iloc[kept].drop(columns=["n_deaths"]).reset_index(drop=True)
    return Coarsened(out, (_note("overall", len(kept), int(step_day.sum()), "days"),))


def first_day_at_or_below(curve: pd.DataFrame, column: str, level: float) -> float:
    """The first released day where a survival curve is at or below `level` (the median at
    0.5), inf when it never gets there (not reached)."""
    below = curve[curve[column].astype(float) <= level]
    return float(below["day"].min()) if len(below) else float("inf")
