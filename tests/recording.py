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
