"""What the pool must know about a DBAPI driver: transaction state, liveness, reset.

Every check here is local (no round trip) unless its name says ``ping``.
"""

from __future__ import annotations

import math
import select
import sys
from collections.abc import Mapping
from typing import Any

from .native import held_poll


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


class Flags:
    """One connection's own flags (closed? clean? autocommit?), read with no round trip.

    Made once per connection when it is opened (``ConnState.flags``), because
    the checks run at every checkout and return: a driver whose flags lie in an
    object of its own (psycopg 3's ``pgconn``, mysqlclient's MYSQL struct) reads
    them there through a subclass, sparing a lookup through the connection at
    every check. This one asks the driver's methods, which define the answers.
    """

    __slots__ = ("_driver", "_conn")

    def __init__(self, driver: DriverOps, conn: Any) -> None:
        self._driver = driver
        # Also what keeps the places a subclass reads alive.
        self._conn = conn

    def is_closed(self) -> bool:
        """Return True when the driver already knows the connection is dead."""
        return self._driver.is_closed(self._conn)

    def clean(self) -> bool:
        """Return True when it is open with no transaction (``DriverOps.clean``)."""
        return self._driver.clean(self._conn)

    def autocommit(self) -> bool | None:
        """Return its autocommit mode (None: unknown)."""
        return self._driver.autocommit(self._conn)


class DriverOps:
    """Driver-specific operations on a raw DBAPI connection."""

    name = "generic"
    #: Whether the driver talks to a server over a socket (pings make sense).
    networked = True
    #: Whether is_closed() reliably reports a connection broken by a failed
    #: operation. If not, a connection returned after a database error is pinged.
    flags_broken = False
    #: Whether the autocommit mode is the client's alone, switched only through
    #: the driver (as Django does), so a returned connection keeps the mode it
    #: was returned in (``ConnState.autocommit``). Not MySQL's: a raw
    #: ``SET autocommit`` changes the server's, which its driver reports.
    mode_is_clients = False
    #: Whether closing a cursor can talk to the server (PostgreSQL's ``CLOSE``
    #: of a named cursor): then it runs under PING_TIMEOUT (``release_cursor``).
    cursor_close_talks = False

    @property
    def no_session_reset(self) -> str | None:
        """Return why RESET_ON_RETURN = "reset" can never work here, and what to use instead.

        The end of the ImproperlyConfigured message that refuses it when the
        settings are read (``conf.reset_error``); None where ``strict_reset()``
        works. Known before any connection: a refusal found only at the first
        return would discard every connection, pooling nothing. A driver may
        override it with a class attribute, or a property where it depends on
        the driver build.
        """
        return None

    def flags(self, conn: Any) -> Flags:
        """Return the object that reads a new connection's flags (``Flags``)."""
        return Flags(self, conn)

    def is_closed(self, conn: Any) -> bool:
        """Return True when the driver already knows the connection is dead."""
        return bool(getattr(conn, "closed", False))

    def in_transaction(self, conn: Any) -> bool | None:
        """Return whether a transaction is open, or None when the driver can't tell."""
        return None

    def clean(self, conn: Any) -> bool:
        """Return True when the connection is open with no transaction: nothing to reset.

        One call on every return (``ManagedPool.checkin``); False sends it
        through ``Validation.reset()``, which finds out what to do.
        """
        return not self.is_closed(conn) and self.in_transaction(conn) is False

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

    def release_cursor(self, conn: Any, cursor: Any) -> None:
        """Make a ``QuerySet.iterator()`` cursor still open harmless: its connection goes back.

        Closed here, in the returning thread, its late ``close()`` (the
        iterator dropped in another request, another thread) does nothing.
        """
        cursor.close()

    def forget_session(self, conn: Any) -> None:
        """Forget what the driver keeps about the server session, after a session reset."""

    def poller(self, conn: Any) -> Any:
        """Return a poll object watching the connection's socket (cache it per connection).

        ``poll(0)`` is true if the server sent something (or hung up) while we
        were idle. An idle connection's socket has nothing to read. Readable
        means the server closed it (restart, pg_terminate_backend, idle timeout)
        or sent a notice; either way only a real ping can tell, and it is worth
        one. When the driver exposes no socket, the returned object always
        reports news, so that a ping is made.
        """
        fd = self.socket_fd(conn)
        if fd is None or fd < 0:
            return _ALWAYS_NEWS
        poller = held_poll(fd)
        if poller is not None:
            return poller
        poller = _nonblocking_poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return poller
