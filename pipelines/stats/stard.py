"""STARD 2015 item 22: the interval between the index test and the reference standard.

In the landmark design the flags (index tests) are read at `index + landmark_days` and the
reference standard is a diagnosis within `horizon_days` of the index date; a negative is
followed to the horizon (or death), so its interval is fixed by design. The table gives,
in the landmark population with a known reference standard, the days from the index date
to the diagnosis of each reference-positive episode: `mart.reference_interval`, one row
per subgroup (n = the model tables' n_events, so it is released and hidden with them).
"""

from __future__ import annotations

import pandas as pd

from pipelines.stats import survival
from pipelines.stats.disclosure import Linkage, TableSpec, partition

COLUMNS = ["subgroup", "n", "median_days", "q1_days", "q3_days"]


def reference_interval_row(population: pd.DataFrame, subgroup: str) -> dict[str, object]:
    """Quartiles of days from index to diagnosis among the reference-positive episodes."""
    positive = population["reference_standard"].fillna(False).to_numpy(bool)
    days = population.loc[positive, "days_to_outcome"].astype(float)
    q1, median, q3 = survival.quartiles(days)
    return {"subgroup": subgroup, "n": int(positive.sum()), "median_days": median,
            "q1_days": q1, "q3_days": q3}  # fmt: skip


def _linkage(frame: pd.DataFrame) -> Linkage:
    """The nested subgroups are parts of `all` (their complements virtual)."""
    linkage = Linkage()
    for child in ("female", "breast_cancer_history"):
        linkage += partition(
            frame, frame["subgroup"] == "all", frame["subgroup"] == child, [], ["n"]
        )
    return linkage


def spec() -> TableSpec:
    return TableSpec(
        counts=("n",),
        derived={c: ("n",) for c in ("median_days", "q1_days", "q3_days")},
        linkage=_linkage,
        keys=("subgroup",),
    )


def empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
