"""MySQL's two drivers: mysqlclient, and PyMySQL installed as MySQLdb.

Django's MySQL backend imports ``MySQLdb`` once, when it is first imported
(``import MySQLdb as Database``), and connects with that module ever after:
PyMySQL if ``pymysql.install_as_MySQLdb()`` ran before, mysqlclient otherwise
(also when install_as_MySQLdb() runs later). ``mysql_ops()`` picks the class
for that module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..deadline import WATCHDOG
from .base import DriverOps, Flags
from .native import (
    ENV,
    STATUS_ATTRIBUTE,
    SWITCHED_OFF,
    MariaDBClient,
    ServerStatus,
    mariadb_client,
    switched_off,
)

#: Client errors that mean the server connection is gone: CR_SERVER_GONE_ERROR,
#: CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED, MariaDB's ER_CONNECTION_KILLED and
#: MySQL's ER_CLIENT_INTERACTION_TIMEOUT.
GONE = frozenset({2006, 2013, 2055, 1927, 4031})
#: SERVER_STATUS_IN_TRANS, in the server status flags of every OK packet.
IN_TRANS = 0x0001


#: SERVER_STATUS_AUTOCOMMIT, in the same flags (what mysqlclient's get_autocommit() reads).
AUTOCOMMIT = MariaDBClient.AUTOCOMMIT


def in_transaction(flags: int) -> bool | None:
    """Return whether the server status flags show a transaction open; None: cannot tell.

    The flags arrive with OK packets only. With autocommit off, a transaction's
    first statement that fails (a duplicate key) opens the transaction, and
    keeps its row locks, without any OK packet to show it: then the flags
    still say "none", so with autocommit off "none" is not to be believed.
    """
    if flags & IN_TRANS:
        return True
    return None if not flags & AUTOCOMMIT else False


#: The ``ssl_mode`` values with which libmariadb logs in over TLS or not at all
#: (with PREFERRED alone they logged in in plain, against a server offering TLS).
_TLS_MODES = frozenset({"REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"})


def _asks_for_tls(params: dict[str, Any]) -> bool:
    """Return whether mysqlclient's connect parameters ask for TLS (``ssl``, ``ssl_mode``)."""
    return bool(params.get("ssl")) or str(params.get("ssl_mode", "")).upper() in _TLS_MODES


class MysqlclientFlags(Flags):
    """mysqlclient's flags, read in its MYSQL struct (``ServerStatus.in_place``).

    Through the connection object each check costs a method call (``errno()``,
    ``get_autocommit()``) or an attribute, which mysqlclient looks up with a
    getattro of its own: ~1,200 instructions each; here, a ctypes view's value.
    """

    __slots__ = ("_status", "_errno")

    def __init__(self, driver: MysqlclientOps, conn: Any, status: ServerStatus) -> None:
        super().__init__(driver, conn)
        self._status = status.flags
        self._errno = status.errno

    def is_closed(self) -> bool:
        return self._conn.closed or self._errno.value in GONE  # type: ignore[union-attr]

    def clean(self) -> bool:
        # Not ``open``: a connection closed during its checkout (its owner's
        # ``connection.connection.close()``) is found by is_closed() before it
        # is lent again, at every checkout, remembered or not; reading it here
        # too cost ~1,500 instructions per return.
        return (
            self._status.value & (IN_TRANS | AUTOCOMMIT) == AUTOCOMMIT  # in_transaction()
            and self._errno.value not in GONE  # type: ignore[union-attr]
        )

    def autocommit(self) -> bool | None:
        return bool(self._status.value & AUTOCOMMIT)


class MySQLOps(DriverOps):
    """What both MySQL drivers share: the server's codes and the client API."""

    #: ER_OPTION_PREVENTS_STATEMENT (with "read-only" or "read_only" in the message:
    #: ``--read-only``, ``--super-read-only``) and ER_READ_ONLY_MODE.
    READ_ONLY = frozenset({1290, 1836})

    #: Marks connect parameters whose timeouts (named in its value) bound PyMySQL's
    #: handshake only.
    HANDSHAKE_ONLY = "django_sapool.handshake_timeouts"

    def bound_handshake(self, params: dict[str, Any]) -> None:
        """Give the login the connect timeout as the read and write timeouts the user did not set.

        Marked HANDSHAKE_ONLY: end_handshake() lifts them once it is done.
        """
        bounded = tuple(t for t in ("read_timeout", "write_timeout") if t not in params)
        for timeout in bounded:
            params[timeout] = params["connect_timeout"]
        if bounded:
            params[self.HANDSHAKE_ONLY] = bounded

    def end_handshake(self, conn: Any, bounded: tuple[str, ...]) -> bool:
        """Undo what add_connect_timeout() set for the handshake only (see HANDSHAKE_ONLY).

        False: it cannot be undone on this connection, which must be opened again without.
        """
        return True

    def is_read_only_error(self, conn: Any, exc: BaseException) -> bool:
        args: tuple[Any, ...] = getattr(exc, "args", ())
        if len(args) < 2 or args[0] not in self.READ_ONLY:
            return False
        code, message = args[0], str(args[1]).lower()
        return code == 1836 or "read-only" in message or "read_only" in message

    def autocommit(self, conn: Any) -> bool | None:
        return bool(conn.get_autocommit())

    def init_commands(self, conn: Any, options: dict[str, Any]) -> list[Any]:
        """Return the statements the driver ran after the login (OPTIONS['init_command'])."""
        init_command = options.get("init_command")
        return [init_command] if init_command else []

    def execute(self, conn: Any, sql: str) -> None:
        cursor = conn.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
        if not conn.get_autocommit():
            # Not a transaction left open behind the statement (a RESET_ON_RETURN
            # statement that touched an InnoDB table, with autocommit off): the
            # next borrower would read its snapshot and inherit its locks.
            conn.commit()


def _setup_bounded(connection_class: type) -> type:
    """Return a subclass of mysqlclient's Connection that arms a deadline after the login.

    mysqlclient's ``Connection.__init__`` logs in (libmariadb, bounded by
    ``connect_timeout``), then asks ``get_server_info()``, which is local, and
    only then sends statements of its own: ``SET NAMES`` and the autocommit
    mode. With ``_sapool_setup_seconds`` set on the instance before
    ``__init__``, the first ``get_server_info()`` arms the watchdog on the new
    socket (``deadline.py``), so those statements run within that time.
    """

    class SetupBoundedConnection(connection_class):  # type: ignore[misc,valid-type]
        def get_server_info(self) -> Any:
            seconds = self.__dict__.pop("_sapool_setup_seconds", None)
            if seconds is not None:
                self._sapool_setup_deadline = WATCHDOG.arm(self.fileno(), seconds)
            return super().get_server_info()

    return SetupBoundedConnection


class MysqlclientOps(MySQLOps):
    """mysqlclient (the C extension), with libmariadb's helpers where it links them."""

    name = "mysqlclient"

    def __init__(self) -> None:
        self._client: MariaDBClient | None | bool = False  # False: not probed yet
        self._setup_bounded: Any = None  # _setup_bounded(Connection), made at first use

    def add_connect_timeout(self, params: dict[str, Any], seconds: float | None) -> None:
        super().add_connect_timeout(params, seconds)
        # libmariadb's connect_timeout bounds a plain login only: over TLS it
        # reads and writes with read_timeout and write_timeout (none by
        # default), so a server or path silent after the TLS handshake kept the
        # connect waiting for ever (Django's own backend too). The login gets
        # the connect timeout for each the user did not set; end_handshake()
        # lifts them through libmariadb (none without its helpers).
        libmariadb = self.no_session_reset is None  # its helpers load in this process
        if "connect_timeout" in params and _asks_for_tls(params) and libmariadb:
            self.bound_handshake(params)

    def end_handshake(self, conn: Any, bounded: tuple[str, ...]) -> bool:
        # False when the server turned out to speak no TLS (``ssl`` asks for
        # it, it does not require it): the timeouts stay on a plain socket.
        client = self.client(conn)
        return client is not None and client.lift_tls_timeouts(conn, bounded)

    def release_cursor(self, conn: Any, cursor: Any) -> None:
        # Its rows are all in memory (Django's cursors store the result), so
        # it is only cut off from the connection: what the request still
        # reads of it after its end comes from there, as with Django's own
        # backend, rather than failing (mysqlclient's close() empties it, and
        # its fetches then raise TypeError), and its close() does nothing.
        # Results still pending on the connection (several statements in one)
        # are read now by close(), as the next borrower must not get them.
        if conn.more_results():
            cursor.close()
        else:
            getattr(cursor, "cursor", cursor).connection = None  # Django's wrapper, or not

    @functools.cached_property
    def no_session_reset(self) -> str | None:
        """Why mysql_reset_connection is missing here, or None (DriverOps.no_session_reset).

        Known without a connection: the switch is read at import, and whether
        this build links libmariadb is whether its functions load (where the
        first connection's probe, mariadb_client(), starts).
        """
        if "mariadb" in SWITCHED_OFF:
            return (
                f"{switched_off('mariadb')} switches libmariadb's helpers off in this "
                f"process, so every connection would be discarded on its return. Let "
                f"{ENV} keep them, or use 'rollback' (the default) instead."
            )
        try:
            MariaDBClient()
        except Exception as exc:
            return (
                f"this mysqlclient build is not linked with MariaDB Connector/C, whose "
                f"mysql_reset_connection it needs ({type(exc).__name__}: {exc}), so every "
                f"connection would be discarded on its return. Use PyMySQL "
                f"(pymysql.install_as_MySQLdb()) or a mysqlclient linked with MariaDB "
                f"Connector/C, or 'rollback' (the default) instead."
            )
        return None

    def connect_within(
        self, params: dict[str, Any], seconds: float, silent: Callable[[], Exception]
    ) -> Any:
        """Connect as ``MySQLdb.connect(**params)``; past ``seconds`` after the login, fail.

        libmariadb's ``connect_timeout`` ends with the login; the statements
        mysqlclient sends itself right after it (``SET NAMES``, autocommit) had
        no bound, so a server or proxy that answers the login and then nothing
        kept the checkout waiting for ever. Past the deadline the watchdog
        shuts the socket down and ``silent()`` is raised.
        """
        if self._setup_bounded is None:
            from MySQLdb.connections import Connection

            self._setup_bounded = _setup_bounded(Connection)
        conn = self._setup_bounded.__new__(self._setup_bounded)
        conn._sapool_setup_seconds = seconds
        try:
            conn.__init__(**params)
        except BaseException as exc:
            deadline = conn.__dict__.pop("_sapool_setup_deadline", None)
            if deadline is None:  # the login failed: nothing is open
                raise
            fired = WATCHDOG.disarm(deadline)
            try:
                conn.close()  # logged in: the session is closed, not left to the GC
            except Exception:
                pass
            if fired:
                raise silent() from exc
            raise
        deadline = conn.__dict__.pop("_sapool_setup_deadline", None)
        if deadline is not None and WATCHDOG.disarm(deadline):
            conn.close()  # it answered just as the deadline fired: the socket is shut down
            raise silent()
        # mysqlclient's own class from now on, as Django's own connect gives:
        # the subclass has done its part.
        conn.__class__ = self._setup_bounded.__base__
        return conn

    def client(self, conn: Any) -> MariaDBClient | None:
        """Return the libmariadb helper if it works with this driver build, else None."""
        if self._client is False:
            self._client = mariadb_client(conn)
        return self._client  # type: ignore[return-value]

    def flags(self, conn: Any) -> Flags:
        client = self.client(conn)
        if client is not None:
            status = client.status(conn)
            if status.in_place:
                return MysqlclientFlags(self, conn, status)
        return Flags(self, conn)

    def is_closed(self, conn: Any) -> bool:
        # mysqlclient keeps .open true after "Lost connection"/"gone away": its
        # last error code tells, without a round trip.
        return not conn.open or conn.errno() in GONE

    def in_transaction(self, conn: Any) -> bool | None:
        status: ServerStatus | None = getattr(conn, STATUS_ATTRIBUTE, None)
        if status is not None:  # made by the first server_status() on this connection
            return in_transaction(status.read())
        client = self.client(conn)
        if client is not None:
            return in_transaction(client.server_status(conn))
        # Without the status flags: autocommit off means Django's atomic() may
        # have left work behind; in autocommit mode only a raw BEGIN could.
        return True if not conn.get_autocommit() else None

    def clean(self, conn: Any) -> bool:
        # Both fields in place (ServerStatus): no ctypes call and no method of
        # the connection; the first return of a connection makes its view.
        status: ServerStatus | None = getattr(conn, STATUS_ATTRIBUTE, None)
        if status is None or status.errno is None:
            return super().clean(conn)
        return (
            bool(conn.open)
            and in_transaction(status.read()) is False
            and status.errno.value not in GONE
        )

    def init_commands(self, conn: Any, options: dict[str, Any]) -> list[Any]:
        # libmariadb ran them, OPTIONS['init_command'] and an option file's alike.
        client = self.client(conn)
        if client is None:
            return super().init_commands(conn, options)
        return client.init_commands(conn)  # type: ignore[return-value]

    def socket_fd(self, conn: Any) -> int | None:
        try:
            return int(conn.fileno())
        except Exception:
            return None

    def ping(self, conn: Any) -> None:
        # COM_PING: no statement, no transaction.
        conn.ping()

    def strict_reset(self, conn: Any) -> None:
        client = self.client(conn)
        if client is None:
            raise NotImplementedError(
                "RESET_ON_RETURN='reset' needs mysql_reset_connection, which this "
                "mysqlclient build (not linked with MariaDB Connector/C) does not expose"
            )
        if client.reset(client.handle(conn)) != 0:
            raise OSError("mysql_reset_connection failed")
        # The server is back to its session defaults (autocommit on), but the
        # status flags mysqlclient answers get_autocommit() from are still the
        # old ones: its autocommit(False) at the next checkout would then send
        # nothing. One statement's reply brings them up to date.
        self.execute(conn, "DO 0")


class PyMySQLOps(MySQLOps):
    """PyMySQL (pure Python), installed as MySQLdb (``pymysql.install_as_MySQLdb()``)."""

    name = "pymysql"
    COM_RESET_CONNECTION = 0x1F

    def add_connect_timeout(self, params: dict[str, Any], seconds: float | None) -> None:
        super().add_connect_timeout(params, seconds)
        # PyMySQL's connect_timeout covers the TCP connect only: it reads the
        # server's greeting and the authentication with read_timeout, and
        # writes with write_timeout, which its TLS handshake runs under (both
        # none by default): a server or path that goes silent would hang it.
        if "connect_timeout" in params:
            self.bound_handshake(params)

    def end_handshake(self, conn: Any, bounded: tuple[str, ...]) -> bool:
        """Give a PyMySQL connection back its unbounded reads or writes (add_connect_timeout)."""
        for timeout in bounded:
            setattr(conn, f"_{timeout}", None)
        # PyMySQL >= 1.1 sets the socket's timeout only when it changes.
        conn._current_timeout = None
        conn._sock.settimeout(None)
        return True

    def is_closed(self, conn: Any) -> bool:
        return not conn.open  # PyMySQL closes its socket on a lost connection

    def in_transaction(self, conn: Any) -> bool | None:
        return in_transaction(conn.server_status)

    def socket_fd(self, conn: Any) -> int | None:
        try:
            return int(conn._sock.fileno())
        except Exception:
            return None

    def ping(self, conn: Any) -> None:
        # COM_PING: no statement, no transaction. Never let the driver reconnect
        # behind Django's back (PyMySQL would): a dead connection is replaced.
        conn.ping(reconnect=False)

    def strict_reset(self, conn: Any) -> None:
        # PyMySQL has no public call for it; the protocol command is simple.
        conn._execute_command(self.COM_RESET_CONNECTION, b"")
        conn._read_ok_packet()


def mysql_ops(database: ModuleType) -> MySQLOps:
    """Return the ops for ``database``, the module Django's MySQL backend connects with."""
    return PyMySQLOps() if database.__name__ == "pymysql" else MysqlclientOps()
