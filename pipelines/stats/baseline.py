"""Table 1: baseline characteristics by group with standardized mean differences (PROTOCOL 6.6).

`table_one` turns one row per episode (mart.baseline_characteristics) into a long table:
per (population, comparison, group, variable, level) the count and percent of a category, or
the median and IQR of a continuous variable, and per variable the standardized mean
difference (SMD) between the comparison's two groups.

SMDs (Austin, Stat Med 2009;28:3083-107; Yang & Dalton, SAS SGF 335-2012): continuous
(m1 - m2) / sqrt((s1^2 + s2^2) / 2) with sample variances; categorical with k levels the
Mahalanobis form sqrt((p1 - p2)' S^-1 (p1 - p2)) over levels 2..k, S = (S1 + S2) / 2 with
S_ii = p_i (1 - p_i), S_ij = -p_i p_j; for a binary variable this is
|p1 - p2| / sqrt((p1 (1 - p1) + p2 (1 - p2)) / 2). Missing values (a flag that cannot be
ascertained) are left out of both the percent and the SMD, and counted in n_missing.

Plain pandas rather than the `tableone` package: the release layer needs numeric counts to
suppress, cell by cell, and tableone returns formatted strings; the two SMD formulas above
are what tableone implements too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

COLUMNS = ["population", "comparison", "group", "variable", "level", "n_group", "n_missing",
           "count", "percent", "median", "q1", "q3", "smd"]  # fmt: skip


def smd_continuous(a: pd.Series, b: pd.Series) -> float:
    a, b = a.dropna().astype(float), b.dropna().astype(float)
    if len(a) < 2 or len(b) < 2:
        return np.nan
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    if pooled == 0:
        return 0.0 if a.mean() == b.mean() else np.inf
    return float((a.mean() - b.mean()) / pooled)


def smd_categorical(a: pd.Series, b: pd.Series, levels: Sequence) -> float:
    """Yang & Dalton's SMD over the given levels (absolute; 0 when both groups are identical)."""
    a, b = a.dropna(), b.dropna()
    if len(a) == 0 or len(b) == 0 or len(levels) < 2:
        return np.nan
    p = np.array([[np.mean(a == lv) for lv in levels[1:]], [np.mean(b == lv) for lv in levels[1:]]])
    diff = p[0] - p[1]
    cov = [np.diag(q) - np.outer(q, q) for q in p]
    s = (cov[0] + cov[1]) / 2
    if not np.any(diff):
        return 0.0
    inverse = np.linalg.pinv(s)
    if np.linalg.norm(diff - s @ inverse @ diff) > 1e-12:
        return np.inf  # a level all in one group and none in the other: no pooled spread
    return float(np.sqrt(diff @ inverse @ diff))


def _rows_for(values: pd.Series, kind: str, levels: Sequence) -> list[dict]:
    known = values.dropna()
    base = {"n_group": len(values), "n_missing": int(values.isna().sum())}
    if kind == "continuous":
        q1, median, q3 = (
            np.percentile(known.astype(float), [25, 50, 75]) if len(known) else [np.nan] * 3
        )
        return [{**base, "level": "", "median": median, "q1": q1, "q3": q3}]
    return [
        {**base, "level": str(lv), "count": int((known == lv).sum()),
         "percent": 100 * float((known == lv).mean()) if len(known) else np.nan}
        for lv in levels
    ]  # fmt: skip


def table_one(
    episodes: pd.DataFrame,
    variables: Mapping[str, str],
    *,
    population: str,
    comparison: str,
    groups: Mapping[str, pd.Series],
) -> pd.DataFrame:
    """Long Table 1 of `variables` ({column: 'continuous' | 'categorical'}) for the groups.

    `groups` maps group name to a boolean mask over `episodes`; the SMD compares the first
    two groups (NaN when there are not two). Booleans are categorical with levels True, False.
    """
    rows = []
    names = list(groups)
    for variable, kind in variables.items():
        column = episodes[variable]
        levels = _levels(column) if kind == "categorical" else []
        smd = np.nan
        if len(names) >= 2:
            a, b = (column[groups[n].to_numpy(bool)] for n in names[:2])
            smd = smd_continuous(a, b) if kind == "continuous" else smd_categorical(a, b, levels)
        for name, mask in groups.items():
            for r in _rows_for(column[mask.to_numpy(bool)], kind, levels):
                rows.append({"population": population, "comparison": comparison, "group": name,
                             "variable": variable, **r, "smd": smd})  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def _levels(column: pd.Series) -> list:
    known = column.dropna()
    if pd.api.types.is_bool_dtype(known) or set(known.unique()) <= {True, False}:
        return [True, False]
    return sorted(known.unique().tolist(), key=str)
