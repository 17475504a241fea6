"""PostgreSQL's two drivers, psycopg 3 and psycopg2, and what they share (libpq)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..deadline import WATCHDOG, Deadline, inode_of
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
    #: An iterator's cursor is a named (server-side) one: its close sends ``CLOSE``.
    cursor_close_talks = True

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

    def connect_within(
        self, connect: Callable[[], Any], seconds: float, silent: Callable[[], Exception]
    ) -> Any:
        """Return ``connect()``'s new connection; with a wait callback, fail past ``seconds``.

        libpq applies ``connect_timeout`` only in its blocking connect; with a
        wait callback set (psycogreen's, under gevent or eventlet) psycopg2
        connects asynchronously and nothing bounded the connect: a hung or
        black-holed server kept the checkout waiting for the kernel (minutes
        for an unanswered SYN, for ever once accepted). Then ``silent()`` is
        raised at the deadline (``BoundedWait``).
        """
        import psycopg2.extensions

        callback = psycopg2.extensions.get_wait_callback()
        if callback is None:
            return connect()  # libpq's blocking connect: its own connect_timeout
        if not isinstance(callback, BoundedWait):
            callback = BoundedWait(callback)
            psycopg2.extensions.set_wait_callback(callback)
        return callback.connect(connect, seconds, silent)


class BoundedWait:
    """The application's psycopg2 wait callback, whose waits end at a pool connect's deadline.

    Installed over it (``psycopg2.extensions.set_wait_callback``) by the pool's
    first connect that needs it, and again if the application sets another.
    Every wait but a pool connect's goes to the callback unchanged; during a
    connect, the callback gets the connection through ``_Connecting``.
    """

    def __init__(self, callback: Callable[[Any], Any]) -> None:
        self.callback = callback
        #: Per thread (per greenlet under gevent): the monotonic deadline of
        #: the pool connect under way, if one is, and whether it passed.
        self._connecting = threading.local()

    def __call__(self, conn: Any) -> Any:
        until = getattr(self._connecting, "until", None)
        if until is None:
            return self.callback(conn)
        connecting = _Connecting(conn, until)
        try:
            return self.callback(connecting)
        finally:
            connecting.disarm()
            self._connecting.expired = connecting.expired

    def connect(
        self, connect: Callable[[], Any], seconds: float, silent: Callable[[], Exception]
    ) -> Any:
        """Return ``connect()``, whose waits end ``seconds`` from now; then raise ``silent()``."""
        local = self._connecting
        local.until, local.expired = time.monotonic() + seconds, False
        try:
            return connect()
        except Exception as exc:
            if local.expired:
                raise silent() from exc
            raise
        finally:
            local.until = None


class _Connecting:
    """A connection being opened, as a wait callback sees it: no wait outlives the deadline.

    A callback waits on ``fileno()``, then calls ``poll()`` (psycogreen's loop,
    ``psycopg2.extras.wait_select``). The socket it is about to wait on gets a
    deadline of the watchdog (``deadline.py``), which shuts it down then and so
    ends the wait, whatever waits; libpq may open another socket meanwhile (the
    next host of a multi-host HOST, a retry without SSL), which gets it in turn.
    Past the deadline ``poll()`` fails instead of going on.
    """

    def __init__(self, conn: Any, until: float) -> None:
        self._conn = conn
        self._until = until
        self._fd = -1
        self._deadline: Deadline | None = None
        self.expired = False

    def fileno(self) -> int:
        fd: int = self._conn.fileno()
        # Another socket, maybe under the same number (libpq closes a refused
        # host's socket before it opens the next host's).
        deadline = self._deadline
        if fd != self._fd or deadline is None or deadline.inode != inode_of(fd):
            self.disarm()
            self._fd = fd
            self._deadline = WATCHDOG.arm(fd, max(0.0, self._until - time.monotonic()))
        return fd

    def poll(self) -> Any:
        if time.monotonic() >= self._until:
            import psycopg2

            self.expired = True
            raise psycopg2.OperationalError("connect_timeout expired")
        return self._conn.poll()

    def disarm(self) -> None:
        if self._deadline is not None:
            WATCHDOG.disarm(self._deadline)
            self._deadline = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
