"""SQLite's driver, the standard library's sqlite3: no server, no socket."""

from __future__ import annotations

from typing import Any

from .base import DriverOps


class Sqlite3Ops(DriverOps):
    name = "sqlite3"
    flags_broken = True
    networked = False
    no_session_reset = (
        "a SQLite connection has no server session to reset (its temp tables and "
        "PRAGMAs last as long as the connection), so every connection would be "
        "discarded on its return. Use 'rollback' (the default) instead."
    )

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
        # Never called: the settings are refused (no_session_reset).
        raise NotImplementedError("RESET_ON_RETURN='reset' is not available on SQLite")
