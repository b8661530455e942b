"""Released values as text: a NULL is shown by its status, never as 0 or blank.

Every released value has a `<column>_status` (docs/data-dictionary.md): `shown`, `rounded`,
`suppressed_small`, `suppressed_complement` or `not_estimable`. The words here are the
only ones the dashboard uses for them.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pipelines.settings import StudySettings

DEFAULT_MIN_CELL = StudySettings().min_cell
NOT_ESTIMABLE = "not estimable"


def suppressed_text(status: str, min_cell: int | None = None) -> str:
    """What a hidden value says instead of a number."""
    limit = min_cell or DEFAULT_MIN_CELL
    if status == "suppressed_small":
        return f"suppressed (<{limit})"
    if status == "suppressed_complement":
        return f"suppressed (<{limit} or complementary)"
    return NOT_ESTIMABLE


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def value_text(value: Any, status: Any, *, digits: int = 3, min_cell: int | None = None) -> str:
    """One released value as text, by its status (a missing status counts as shown)."""
    status = None if is_missing(status) else str(status)
    if status and status.startswith("suppressed"):
        return suppressed_text(status, min_cell)
    if is_missing(value):
        return suppressed_text(status or "not_estimable", min_cell)
    if isinstance(value, float) and not value.is_integer():
        text = f"{value:.{digits}f}"
    else:
        text = f"{int(value):,}" if isinstance(value, int | float) else str(value)
    return f"{text} (rounded)" if status == "rounded" else text


def with_status(frame: pd.DataFrame, min_cell: int | None = None, digits: int = 3) -> pd.DataFrame:
    """A table for display: each value column as text by its status; status columns dropped."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        if column.endswith("_status") or column == "run_id":
            continue
        status_column = f"{column}_status"
        if status_column in frame:
            out[column] = [
                value_text(v, s, digits=digits, min_cell=min_cell)
                for v, s in zip(frame[column], frame[status_column], strict=True)
            ]
        else:
            out[column] = frame[column].map(lambda v: "" if is_missing(v) else v)
    return out.reset_index(drop=True)


def estimable(frame: pd.DataFrame, column: str) -> pd.Series:
    """Rows whose `column` holds a released number (not suppressed, not estimable)."""
    ok = frame[column].notna()
    status_column = f"{column}_status"
    if status_column in frame:
        ok &= ~frame[status_column].astype(str).str.startswith("suppressed")
    return ok
