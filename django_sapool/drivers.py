"""What the pool must know about each DBAPI driver: transaction state, liveness, reset.

Every check here is local (no round trip) unless its name says ``ping``.
"""

from __future__ import annotations

import ctypes
import math
import select
import sys
from collections.abc import Mapping
from typing import Any


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def _libc_poll() -> Any:
    """libc's poll(2) called with the GIL held (ctypes.PyDLL), or None where unavailable."""
    try:
        function = ctypes.PyDLL(None).poll
    except (OSError, AttributeError):  # pragma: no cover - not a POSIX libc
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_POLL = _libc_poll()


class _HeldPoll:
    """A zero-timeout poll(2) of one socket that keeps the GIL.

    select.poll() releases the GIL around the system call even with timeout 0;
    in a busy threaded server (gunicorn gthread) another thread then takes the
    GIL and this one waits for it back, up to the 5 ms switch interval, at every
    checkout. A zero-timeout poll never blocks, so there is nothing to release
    the GIL for. Not monkey-patched by gevent either, so it never yields.
    """

    __slots__ = ("_ref", "_fds")

    def __init__(self, fd: int) -> None:
        self._fds = _PollFd(fd, select.POLLIN | select.POLLPRI, 0)
        self._ref = ctypes.byref(self._fds)

    def poll(self, timeout: float = 0) -> bool:
        # > 0: readable or hung up; < 0: poll failed. Either way, worth a ping.
        return bool(_POLL(self._ref, 1, 0))


def _nonblocking_poll() -> Any:
    """select.poll, unpatched: a zero-timeout poll never blocks, so it needs no hub.

    gevent's patched poll() switches to its hub even with timeout 0, letting other
    greenlets run while this one holds a checked-out connection.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("select"):
        return monkey.get_original("select", "poll")()
    return select.poll()


class _AlwaysNews:
    """A stand-in poll object for connections without a visible socket."""

    def poll(self, timeout: float = 0) -> list[tuple[int, int]]:
        return [(-1, select.POLLIN)]


_ALWAYS_NEWS = _AlwaysNews()


class DriverOps:
    """Driver-specific operations on a raw DBAPI connection."""

    name = "generic"
    #: Whether the driver talks to a server over a socket (pings make sense).
    networked = True
    #: Whether is_closed() reliably reports a connection broken by a failed
    #: operation. If not, a connection returned after a database error is pinged.
    flags_broken = False

    def is_closed(self, conn: Any) -> bool:
        """Return True when the driver already knows the connection is dead."""
        return bool(getattr(conn, "closed", False))

    def in_transaction(self, conn: Any) -> bool | None:
        """Return whether a transaction is open, or None when the driver can't tell."""
        return None

    def autocommit(self, conn: Any) -> bool | None:
        """Return the connection's autocommit mode (None: unknown, set it again)."""
        value = getattr(conn, "autocommit", None)
        return value if isinstance(value, bool) else None

    def socket_fd(self, conn: Any) -> int | None:
        """Return the connection's socket file descriptor, if the driver exposes it."""
        return None

    def add_connect_timeout(self, params: dict[str, Any], seconds: float | None) -> None:
        """Bound connecting by CONNECT_TIMEOUT unless OPTIONS sets ``connect_timeout``.

        The four drivers share the parameter's name and take whole seconds.
        """
        if self.networked and seconds is not None and "connect_timeout" not in params:
            params["connect_timeout"] = max(1, math.ceil(seconds))

    def sets_own_keepalive(self, options: Mapping[str, Any]) -> bool:
        """Return whether OPTIONS sets the driver's own TCP keepalive options."""
        return False

    def is_read_only_error(self, conn: Any, exc: BaseException) -> bool:
        """Return whether ``exc`` says the server is read-only (a failover happened)."""
        return False

    def end_transaction(self, conn: Any, commit: bool) -> None:
        """Commit or roll back the open transaction."""
        if commit:
            conn.commit()
        else:
            conn.rollback()

    def ping(self, conn: Any) -> None:
        """Make one round trip; raise if the connection is unusable."""
        self.execute(conn, "SELECT 1")

    def execute(self, conn: Any, sql: str) -> None:
        """Run one statement outside any transaction (pings, reset queries)."""
        autocommit = conn.autocommit
        if not autocommit:
            # Don't leave a transaction open behind the statement.
            conn.autocommit = True
        try:
            self._run(conn, sql)
        finally:
            if not autocommit:
                conn.autocommit = False

    def _run(self, conn: Any, sql: str) -> None:
        with conn.cursor() as cursor:
            cursor.execute(sql)

    def strict_reset(self, conn: Any) -> None:
        """Clear all session state (RESET_ON_RETURN='reset')."""
        self.execute(conn, "DISCARD ALL")

    def socket_has_news(self, conn: Any) -> bool:
        """Return True if the server sent something (or hung up) while we were idle.

        An idle connection's socket has nothing to read. Readable means the server
        closed it (restart, pg_terminate_backend, idle timeout) or sent a notice;
        either way only a real ping can tell, and it is worth one.
        """
        return bool(self.poller(conn).poll(0))

    def poller(self, conn: Any) -> Any:
        """Return a poll object watching the connection's socket (cache it per connection).

        When the driver exposes no socket, the returned object always reports
        news, so that a ping is made.
        """
        fd = self.socket_fd(conn)
        if fd is None or fd < 0:
            return _ALWAYS_NEWS
        if _POLL is not None:
            return _HeldPoll(fd)
        poller = _nonblocking_poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return poller


class _PostgresOps(DriverOps):
    """What both PostgreSQL drivers share: libpq's options and error codes."""

    #: libpq's own keepalive settings; if OPTIONS sets any, the sockets are left alone.
    KEEPALIVE_KEYS = frozenset(
        {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"}
        | {"tcp_user_timeout"}
    )
    #: read_only_sql_transaction
    READ_ONLY = "25006"

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


class Psycopg3Ops(_PostgresOps):
    name = "psycopg"
    flags_broken = True

    def sqlstate(self, exc: BaseException) -> str | None:
        return getattr(exc, "sqlstate", None)

    def parameter(self, conn: Any, name: str) -> str | None:
        value = conn.pgconn.parameter_status(name.encode())
        return None if value is None else value.decode()

    def is_closed(self, conn: Any) -> bool:
        # What psycopg's ``closed`` and ``broken`` both test, in one C call.
        return bool(conn.pgconn.status == self._bad)

    def __init__(self) -> None:
        from psycopg.pq import ConnStatus, TransactionStatus

        self._idle = TransactionStatus.IDLE
        self._bad = ConnStatus.BAD

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

    def _run(self, conn: Any, sql: str) -> None:
        conn.execute(sql)


class Psycopg2Ops(_PostgresOps):
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

    def socket_has_news(self, conn: Any) -> bool:
        return False

    def strict_reset(self, conn: Any) -> None:
        # A SQLite connection has no server session; temp tables and PRAGMAs
        # are per connection and would need a new connection to clear.
        raise NotImplementedError("RESET_ON_RETURN='reset' is not available on SQLite")


class _MariaDBClient:
    """Zero-round-trip access to libmariadb through mysqlclient's native handle.

    mysqlclient exposes neither the server status flags (is a transaction open?)
    nor ``mysql_reset_connection``; MariaDB Connector/C, which it links on
    Debian, has both. The server status arrives with every OK packet, so reading
    it costs nothing. Found lazily; ``None`` where the library is not libmariadb.
    """

    SERVER_STATUS = 30  # enum mariadb_value: MARIADB_CONNECTION_SERVER_STATUS
    IN_TRANS = 0x0001
    AUTOCOMMIT = 0x0002

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        import MySQLdb._mysql as native

        lib = ctypes.CDLL(native.__file__)  # resolves libmariadb's symbols it links
        # Reading the status flags is local and never blocks: keep the GIL
        # (PyDLL) rather than hand it to another thread and wait to get it back.
        self.get_info = ctypes.PyDLL(native.__file__).mariadb_get_infov
        self.get_info.restype = ctypes.c_char
        self._void_p = ctypes.c_void_p
        self._int = ctypes.c_int
        self.reset = lib.mysql_reset_connection
        self.reset.argtypes = [ctypes.c_void_p]
        self.reset.restype = ctypes.c_int
        self._capsule = ctypes.pythonapi.PyCapsule_GetPointer
        self._capsule.restype = ctypes.c_void_p
        self._capsule.argtypes = [ctypes.py_object, ctypes.c_char_p]
        self._status = ctypes.c_uint
        self._byref = ctypes.byref
        self._server_status = ctypes.c_int(self.SERVER_STATUS)

    def handle(self, conn: Any) -> int:
        return int(
            self._capsule(conn._get_native_connection(), b"_mysql.connection.native_connection")
        )

    def server_status(self, conn: Any) -> int:
        # The MYSQL* handle lives as long as the connection object: keep it there
        # (ctypes calls cost microseconds each; this runs at every return).
        handle = getattr(conn, "_sapool_native", None)
        if handle is None:
            handle = conn._sapool_native = self._void_p(self.handle(conn))
        status = self._status(0)
        if self.get_info(handle, self._server_status, self._byref(status)) != b"\0":
            raise OSError("mariadb_get_infov(MARIADB_CONNECTION_SERVER_STATUS) failed")
        return int(status.value)


class MysqlclientOps(DriverOps):
    """mysqlclient, and PyMySQL installed as MySQLdb (``pymysql.install_as_MySQLdb()``)."""

    name = "mysqlclient"
    COM_RESET_CONNECTION = 0x1F

    def __init__(self) -> None:
        self._client: _MariaDBClient | None | bool = False  # False: not probed yet

    @staticmethod
    def is_pymysql(conn: Any) -> bool:
        return type(conn).__module__.startswith("pymysql")

    def client(self, conn: Any) -> _MariaDBClient | None:
        """Return the libmariadb helper if it works with this driver build, else None."""
        if self._client is False:
            if self.is_pymysql(conn):
                return None
            try:
                client = _MariaDBClient()
                # Sanity check against a flag mysqlclient itself reports.
                autocommit = bool(client.server_status(conn) & client.AUTOCOMMIT)
                self._client = client if autocommit == bool(conn.get_autocommit()) else None
            except Exception:
                self._client = None
        return self._client  # type: ignore[return-value]

    #: Client errors that mean the server connection is gone: CR_SERVER_GONE_ERROR,
    #: CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED, MariaDB's ER_CONNECTION_KILLED and
    #: MySQL's ER_CLIENT_INTERACTION_TIMEOUT.
    GONE = frozenset({2006, 2013, 2055, 1927, 4031})
    #: ER_OPTION_PREVENTS_STATEMENT (with "read-only" or "read_only" in the message:
    #: ``--read-only``, ``--super-read-only``) and ER_READ_ONLY_MODE.
    READ_ONLY = frozenset({1290, 1836})

    #: Marks connect parameters whose ``read_timeout`` bounds PyMySQL's handshake only.
    HANDSHAKE_ONLY = "django_sapool.handshake_read_timeout"

    def add_connect_timeout(self, params: dict[str, Any], seconds: float | None) -> None:
        super().add_connect_timeout(params, seconds)
        # PyMySQL's connect_timeout covers the TCP connect only: it reads the
        # server's greeting and the authentication with read_timeout (none by
        # default), so a server that accepts and never answers would hang it.
        # The handshake gets the connect timeout; end_handshake() lifts it.
        if (
            "connect_timeout" in params
            and "read_timeout" not in params
            and getattr(sys.modules.get("MySQLdb"), "__name__", "") == "pymysql"
        ):
            params["read_timeout"] = params["connect_timeout"]
            params[self.HANDSHAKE_ONLY] = True

    def end_handshake(self, conn: Any) -> None:
        """Give a PyMySQL connection back its unbounded reads (after add_connect_timeout)."""
        conn._read_timeout = None
        conn._sock.settimeout(None)

    def is_read_only_error(self, conn: Any, exc: BaseException) -> bool:
        args: tuple[Any, ...] = getattr(exc, "args", ())
        if len(args) < 2 or args[0] not in self.READ_ONLY:
            return False
        code, message = args[0], str(args[1]).lower()
        return code == 1836 or "read-only" in message or "read_only" in message

    def is_closed(self, conn: Any) -> bool:
        if not conn.open:
            return True  # PyMySQL closes its socket on a lost connection
        # mysqlclient keeps .open true after "Lost connection"/"gone away": its
        # last error code tells, without a round trip.
        errno = getattr(conn, "errno", None)
        return errno is not None and errno() in self.GONE

    def autocommit(self, conn: Any) -> bool | None:
        return bool(conn.get_autocommit())

    def in_transaction(self, conn: Any) -> bool | None:
        if self.is_pymysql(conn):
            return bool(conn.server_status & _MariaDBClient.IN_TRANS)
        client = self.client(conn)
        if client is not None:
            return bool(client.server_status(conn) & client.IN_TRANS)
        # Without the status flags: autocommit off means Django's atomic() may
        # have left work behind; in autocommit mode only a raw BEGIN could.
        return True if not conn.get_autocommit() else None

    def socket_fd(self, conn: Any) -> int | None:
        sock = getattr(conn, "_sock", None)  # PyMySQL
        try:
            return int(sock.fileno() if sock is not None else conn.fileno())
        except Exception:
            return None

    def ping(self, conn: Any) -> None:
        # COM_PING: no statement, no transaction. Never let the driver reconnect
        # behind Django's back (PyMySQL would): a dead connection is replaced.
        if self.is_pymysql(conn):
            conn.ping(reconnect=False)
        else:
            conn.ping()

    def strict_reset(self, conn: Any) -> None:
        if self.is_pymysql(conn):
            # PyMySQL has no public call for it; the protocol command is simple.
            conn._execute_command(self.COM_RESET_CONNECTION, b"")
            conn._read_ok_packet()
            return
        client = self.client(conn)
        if client is None:
            raise NotImplementedError(
                "RESET_ON_RETURN='reset' needs mysql_reset_connection, which this "
                "mysqlclient build (not linked with MariaDB Connector/C) does not expose"
            )
        if client.reset(client.handle(conn)) != 0:
            raise OSError("mysql_reset_connection failed")

    def execute(self, conn: Any, sql: str) -> None:
        cursor = conn.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
