"""What the pool must know about each DBAPI driver: transaction state, liveness, reset.

Every check here is local (no round trip) unless its name says ``ping``.
"""

from __future__ import annotations

import select
from typing import Any


class DriverOps:
    """Driver-specific operations on a raw DBAPI connection."""

    name = "generic"
    #: Whether the driver talks to a server over a socket (pings make sense).
    networked = True

    def is_closed(self, conn: Any) -> bool:
        """Return True when the driver already knows the connection is dead."""
        return bool(getattr(conn, "closed", False))

    def in_transaction(self, conn: Any) -> bool | None:
        """Return whether a transaction is open, or None when the driver can't tell."""
        return None

    def socket_fd(self, conn: Any) -> int | None:
        """Return the connection's socket file descriptor, if the driver exposes it."""
        return None

    def end_transaction(self, conn: Any, commit: bool) -> None:
        """Commit or roll back the open transaction."""
        if commit:
            conn.commit()
        else:
            conn.rollback()

    def ping(self, conn: Any) -> None:
        """Make one round trip; raise if the connection is unusable."""
        autocommit = conn.autocommit
        if not autocommit:
            # Don't leave a transaction open behind the ping.
            conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            if not autocommit:
                conn.autocommit = False

    def execute(self, conn: Any, sql: str) -> None:
        """Run one statement outside any transaction (used for reset queries)."""
        autocommit = conn.autocommit
        if not autocommit:
            conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
        finally:
            if not autocommit:
                conn.autocommit = False

    def socket_has_news(self, conn: Any) -> bool:
        """Return True if the server sent something (or hung up) while we were idle.

        An idle connection's socket has nothing to read. Readable means the server
        closed it (restart, pg_terminate_backend, idle timeout) or sent a notice;
        either way only a real ping can tell, and it is worth one.
        """
        fd = self.socket_fd(conn)
        if fd is None or fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))


class Psycopg3Ops(DriverOps):
    name = "psycopg"

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def __init__(self) -> None:
        from psycopg.pq import TransactionStatus

        self._idle = TransactionStatus.IDLE

    def in_transaction(self, conn: Any) -> bool | None:
        return conn.pgconn.transaction_status != self._idle

    def socket_fd(self, conn: Any) -> int | None:
        try:
            return int(conn.pgconn.socket)
        except Exception:
            return None

    def ping(self, conn: Any) -> None:
        # The empty query is what psycopg_pool uses: a round trip that starts no
        # transaction and leaves no trace in pg_stat_statements.
        self.execute(conn, "")

    def execute(self, conn: Any, sql: str) -> None:
        autocommit = conn.autocommit
        if not autocommit:
            conn.autocommit = True
        try:
            conn.execute(sql)
        finally:
            if not autocommit:
                conn.autocommit = False


class Psycopg2Ops(DriverOps):
    name = "psycopg2"

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def __init__(self) -> None:
        import psycopg2.extensions as ext

        self._idle = ext.TRANSACTION_STATUS_IDLE

    def in_transaction(self, conn: Any) -> bool | None:
        return conn.get_transaction_status() != self._idle

    def end_transaction(self, conn: Any, commit: bool) -> None:
        if not conn.autocommit:
            super().end_transaction(conn, commit)
            return
        # psycopg2 ignores rollback()/commit() in autocommit mode, yet a raw
        # "BEGIN" may have opened a transaction there: end it explicitly.
        with conn.cursor() as cursor:
            cursor.execute("COMMIT" if commit else "ROLLBACK")

    def socket_fd(self, conn: Any) -> int | None:
        try:
            return int(conn.fileno())
        except Exception:
            return None


class Sqlite3Ops(DriverOps):
    name = "sqlite3"
    networked = False

    def is_closed(self, conn: Any) -> bool:
        try:
            conn.total_changes  # noqa: B018 - raises ProgrammingError once closed
        except Exception:
            return True
        return False

    def in_transaction(self, conn: Any) -> bool | None:
        return bool(conn.in_transaction)

    def ping(self, conn: Any) -> None:
        conn.execute("SELECT 1").fetchall()

    def execute(self, conn: Any, sql: str) -> None:
        conn.execute(sql)

    def socket_has_news(self, conn: Any) -> bool:
        return False
