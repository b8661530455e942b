"""Checks that stop an ingest before a truncated or emptied export overwrites good tables.

They run inside ingest's transaction, before COMMIT: when one fails, raw, mart and release
all stay as they were. docs/operations.md, "Shrinking tables".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipelines.errors import IngestError
from pipelines.settings import MAX_ROW_DROP_FRACTION


class ShrinkError(IngestError):
    """A required table is empty, or a table lost too many rows since the last ingest."""


def check_table_sizes(
    before: Mapping[str, int],
    after: Mapping[str, int],
    required: Iterable[str],
    *,
    accept_shrink: bool = False,
    max_drop: float = MAX_ROW_DROP_FRACTION,
) -> None:
    """Raise ShrinkError for an empty required table (always) or, unless `accept_shrink`, a
    table whose rows fell by more than `max_drop` against `before` (the previous ingest)."""
    empty = [t for t in required if after.get(t, 0) == 0]
    if empty:
        raise ShrinkError(
            f"required table(s) {', '.join(empty)} have no rows after ingest (was "
            + ", ".join(f"{before.get(t, 0):,}" for t in empty)
            + "); check the export's files; nothing was changed"
        )
    if accept_shrink:
        return
    shrunk = [
        f"{t} {before[t]:,} -> {after.get(t, 0):,} rows"
        for t in before
        if before[t] > 0 and after.get(t, 0) < before[t] * (1 - max_drop)
    ]
    if shrunk:
        raise ShrinkError(
            f"tables shrank by more than {max_drop:.0%} since the previous ingest: "
            f"{'; '.join(shrunk)}; nothing was changed. If the export really is smaller, "
            "pass --accept-shrink"
        )
