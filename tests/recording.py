"""A DuckDB connection that records the SQL it runs, for tests of how often a table is read
or written (a real connection underneath: every statement still runs)."""

from __future__ import annotations


class RecordingConnection:
    def __init__(self, con):
        self.con, self.sql = con, []

    def execute(self, sql, *args):
        self.sql.append(sql)
        return self.con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.con, name)


def wrap_ingest_connections(monkeypatch, wrap) -> list:
    """Every warehouse connection the ingest opens from now on, wrapped by `wrap` (a
    RecordingConnection, a sampler...): the list of wrappers, in the order opened."""
    import contextlib

    from pipelines.ingest import run as ingest_run

    wrapped: list = []
    real_open = ingest_run.wh.open_warehouse

    @contextlib.contextmanager
    def wrapping_open(*args, **kwargs):
        with real_open(*args, **kwargs) as con:
            wrapped.append(wrap(con))
            yield wrapped[-1]

    monkeypatch.setattr(ingest_run.wh, "open_warehouse", wrapping_open)
    return wrapped
