"""Care after diagnosis (PROTOCOL 6.7): per care category, the proportion of diagnosed
episodes that received it within the care window (Wilson CI) and days to the first record
(median, IQR among those who received it)."""

from __future__ import annotations

import pandas as pd

from pipelines.stats.accuracy import wilson
from pipelines.stats.survival import quartiles


def care_summary(frame: pd.DataFrame, confidence_level: float = 0.95) -> pd.DataFrame:
    """One row per care_category from mart.care_after_diagnosis (episode x category grain)."""
    rows = []
    for category, part in frame.groupby("care_category", sort=True):  # same order on every engine
        received = part["has_care"].astype(bool)
        est = wilson(int(received.sum()), len(part), confidence_level)
        q1, median, q3 = quartiles(part.loc[received.to_numpy(), "days_diagnosis_to_first_care"])
        rows.append({"care_category": category, "n_diagnosed": len(part),
                     "n_received": int(received.sum()), "proportion": est.estimate,
                     "lower": est.lower, "upper": est.upper, "median_days": median,
                     "q1_days": q1, "q3_days": q3})  # fmt: skip
    columns = ["care_category", "n_diagnosed", "n_received", "proportion", "lower", "upper",
               "median_days", "q1_days", "q3_days"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
