"""PostgreSQL's two drivers, psycopg 3 and psycopg2, and what they share (libpq)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import DriverOps, Flags


class PostgresOps(DriverOps):
    """What both PostgreSQL drivers share: libpq's options and error codes."""

    #: libpq's own keepalive settings; if OPTIONS sets any, the sockets are left alone.
    KEEPALIVE_KEYS = frozenset(
        {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"}
        | {"tcp_user_timeout"}
    )
    #: read_only_sql_transaction
    READ_ONLY = "25006"
    #: PostgreSQL has no session autocommit: the mode is the driver's.
    mode_is_clients = True

    def sets_own_keepalive(self, options: Mapping[str, Any]) -> bool:
        return not self.KEEPALIVE_KEYS.isdisjoint(options)

    def is_read_only_error(self, conn: Any, exc: BaseException) -> bool:
        if self.sqlstate(exc) != self.READ_ONLY:
            return False
        # A transaction the application itself made read-only fails the same
        # way; the server reports (PostgreSQL >= 14, no round trip) whether the
        # session's default is read-only or the server is a standby.
        reported = [
            self.parameter(conn, name)
            for name in ("default_transaction_read_only", "in_hot_standby")
        ]
        if all(value is None for value in reported):
            return True  # an older server: assume a failover
        return "on" in reported

    def sqlstate(self, exc: BaseException) -> str | None:
        raise NotImplementedError

    def parameter(self, conn: Any, name: str) -> str | None:
        raise NotImplementedError


#: libpq's CONNECTION_BAD and PQTRANS_IDLE (psycopg.pq's ConnStatus.BAD and
#: TransactionStatus.IDLE), as plain ints: psycopg's ``pgconn`` reports plain
#: ints, and CPython 3.11 specialises an int compared with an int, not with an
#: IntEnum (the enums are checked against these in tests/unit/test_drivers.py).
BAD = 1
IDLE = 0


class PgconnFlags(Flags):
    """psycopg 3's flags, read from the connection's ``pgconn`` (libpq's PGconn)."""

    __slots__ = ("_pgconn",)

    def __init__(self, driver: Psycopg3Ops, conn: Any) -> None:
        super().__init__(driver, conn)
        # A connection's pgconn is made with it and never replaced.
        self._pgconn = conn.pgconn

    def is_closed(self) -> bool:
        return self._pgconn.status == BAD  # type: ignore[no-any-return]

    def clean(self) -> bool:
        return self._pgconn.transaction_status == IDLE  # type: ignore[no-any-return]


class Psycopg3Ops(PostgresOps):
    name = "psycopg"
    flags_broken = True

    def sqlstate(self, exc: BaseException) -> str | None:
        return getattr(exc, "sqlstate", None)

    def parameter(self, conn: Any, name: str) -> str | None:
        value = conn.pgconn.parameter_status(name.encode())
        return None if value is None else value.decode()

    def flags(self, conn: Any) -> Flags:
        return PgconnFlags(self, conn)

    def is_closed(self, conn: Any) -> bool:
        # What psycopg's ``closed`` and ``broken`` both test, in one C call.
        return bool(conn.pgconn.status == BAD)

    def in_transaction(self, conn: Any) -> bool | None:
        return conn.pgconn.transaction_status != IDLE

    def clean(self, conn: Any) -> bool:
        # A BAD connection's transaction status is UNKNOWN, never IDLE.
        return bool(conn.pgconn.transaction_status == IDLE)

    def socket_fd(self, conn: Any) -> int | None:
        try:
            return int(conn.pgconn.socket)
        except Exception:
            return None

    def ping(self, conn: Any) -> None:
        # The empty query is what psycopg_pool uses: a round trip that starts no
        # transaction and leaves no trace in pg_stat_statements.
        self.execute(conn, "")

    def _run(self, conn: Any, sql: str) -> None:
        # Never prepared: a ping or a reset statement is no query of the app's.
        conn.execute(sql, prepare=False)

    def forget_session(self, conn: Any) -> None:
        # psycopg's names of its prepared statements (server_side_binding): a
        # session reset (DISCARD ALL) dropped them on the server, and psycopg
        # notices only the first DISCARD ALL it runs (it checks a statement's
        # outcome when it first counts it). It deallocates them all at the next
        # statement, and prepares them again.
        prepared = getattr(conn, "_prepared", None)
        if prepared is not None:
            prepared.clear()


class Psycopg2Ops(PostgresOps):
    name = "psycopg2"
    flags_broken = True

    def sqlstate(self, exc: BaseException) -> str | None:
        return getattr(exc, "pgcode", None)

    def parameter(self, conn: Any, name: str) -> str | None:
        value = conn.get_parameter_status(name)
        return None if value is None else str(value)

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def __init__(self) -> None:
        import psycopg2.extensions as ext

        self._idle = ext.TRANSACTION_STATUS_IDLE

    def in_transaction(self, conn: Any) -> bool | None:
        return conn.get_transaction_status() != self._idle

    def clean(self, conn: Any) -> bool:
        return not conn.closed and conn.get_transaction_status() == self._idle

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
