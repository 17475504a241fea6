"""SQLite's driver, the standard library's sqlite3: no server, no socket."""

from __future__ import annotations

from typing import Any

from .base import DriverOps


class Sqlite3Ops(DriverOps):
    name = "sqlite3"
    flags_broken = True
    networked = False

    def is_closed(self, conn: Any) -> bool:
        try:
            conn.total_changes  # noqa: B018 - raises ProgrammingError once closed
        except Exception:
            return True
        return False

    def in_transaction(self, conn: Any) -> bool | None:
        return bool(conn.in_transaction)

    def autocommit(self, conn: Any) -> bool | None:
        # Django's SQLite backend switches autocommit through isolation_level.
        return conn.isolation_level is None

    def ping(self, conn: Any) -> None:
        conn.execute("SELECT 1").fetchall()

    def execute(self, conn: Any, sql: str) -> None:
        conn.execute(sql)

    def strict_reset(self, conn: Any) -> None:
        # A SQLite connection has no server session; temp tables and PRAGMAs
        # are per connection and would need a new connection to clear.
        raise NotImplementedError("RESET_ON_RETURN='reset' is not available on SQLite")
