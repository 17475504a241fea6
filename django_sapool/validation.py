"""Is a connection fit to lend, and is it made fit again when returned.

:class:`Validation` holds one pool's answers to both questions: the check before
a connection is lent (the driver's own liveness flag, then, with PRE_PING, a
ping unless the connection was used a moment ago and its socket is quiet) and
the reset when it is returned (RESET_ON_RETURN). Every round trip it makes runs
within PING_TIMEOUT (``deadline.py``). It never closes a connection: it says
what is wrong, and the pool retires it (``pool.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from .conf import RESET_COMMIT, RESET_SESSION, PoolOptions
from .deadline import RoundTrips
from .drivers import DriverOps
from .leaks import PINGING, RESETTING, Busy
from .state import ConnState


class Closed(ConnectionError):
    """The driver says the connection is closed (no round trip was made)."""

    def __init__(self) -> None:
        super().__init__("connection closed")


class Validation:
    """One pool's check before lending and reset on return."""

    __slots__ = (
        "driver",
        "options",
        "round_trips",
        "_count",
        "_pre_ping",
        "_pre_ping_interval",
        "_ping_suspects",
        "resets_session",
    )

    def __init__(
        self,
        alias: str,
        options: PoolOptions,
        driver: DriverOps,
        busy: dict[int, Busy],
        count: Callable[[str], None],
    ) -> None:
        self.driver = driver
        self.options = options
        #: Stats.count: "pings", "pings_failed", "pings_timed_out".
        self._count = count
        timeout = options.ping_timeout if driver.networked else None
        self.round_trips = RoundTrips(
            alias, timeout, driver, busy, lambda: count("pings_timed_out")
        )
        self._pre_ping = options.pre_ping and driver.networked
        self._pre_ping_interval = options.pre_ping_interval
        # A driver that cannot tell a broken connection by itself (mysqlclient
        # keeps ``open`` true after "server has gone away") pings one returned
        # after a database error, so it is not lent again when PRE_PING is off.
        self._ping_suspects = driver.networked and not driver.flags_broken
        #: RESET_ON_RETURN resets the session at every return (a query, or "reset").
        self.resets_session = bool(options.reset_query) or options.reset_on_return == RESET_SESSION

    def trusted(self, state: ConnState, now: float) -> bool:
        """Return whether a remembered connection can be lent as it is, with no round trip.

        Its driver does not know it closed (whoever holds the raw connection
        may have closed it meanwhile), and with PRE_PING it was used within
        PRE_PING_INTERVAL and its socket is quiet (see :meth:`unfit`). False
        says nothing is known: :meth:`unfit` decides, pinging if needed.
        """
        if state.flags.is_closed():
            return False
        if not self._pre_ping:
            return True
        poller = state.poller
        if poller is None or now - state.last_used > self._pre_ping_interval:
            return False
        poll = poller.poll  # read, then called: CPython 3.11 specialises that
        return not poll(0)

    def unfit(self, raw: Any, state: ConnState, now: float) -> Exception | None:
        """Return why a connection must not be lent (None: lend it), pinging only if needed.

        A connection used within PRE_PING_INTERVAL seconds, whose socket has
        nothing to read, is trusted as HikariCP does; a dead server that closed
        the socket makes it readable, so restarts and killed backends are still
        caught at no cost. After a longer idle time a real ping is made, within
        PING_TIMEOUT: past it ServerSilent is raised (the path is likely dead).
        """
        if state.flags.is_closed():
            return Closed()
        if not self._pre_ping:
            return None
        if now - state.last_used <= self._pre_ping_interval:
            poller = state.poller
            if poller is None:
                poller = state.poller = self.driver.poller(raw)
            if not poller.poll(0):
                return None
        try:
            self._ping(raw)
        except Exception as exc:
            return exc
        return None

    def close_cursors(self, raw: Any, cursors: Collection[Any]) -> None:
        """Make harmless the ``QuerySet.iterator()`` cursors a checkout left open.

        A ``QuerySet.iterator()`` that outlives its request (kept by a cache, a
        reference cycle, an abandoned async iterator) closes its cursor
        whenever it is dropped, in any thread: by then the session is another
        borrower's. psycopg 3's ``CLOSE`` of a cursor that died with its
        transaction aborts that borrower's transaction; mysqlclient's close()
        reads the connection's pending results from the wrong thread
        ("already in use from another thread"). A holdable PostgreSQL cursor
        (an iterator outside atomic()) would also stay open on the session.
        Django's own close() ends the session and its cursors with it; released
        here (``DriverOps.release_cursor``), while the session is still the
        returning wrapper's, the late close() is a no-op. PostgreSQL's
        ``CLOSE`` runs within PING_TIMEOUT: unanswered, it raises ServerSilent,
        as a reset would. A failure is left to the reset's checks (psycopg2
        refuses to close a cursor that died with its transaction, "named cursor
        isn't valid anymore", without a round trip; a broken connection shows
        in its flags).
        """

        release = self.driver.release_cursor

        def release_all(_raw: Any) -> None:
            for cursor in list(cursors):  # a WeakSet: copied before anything is collected
                try:
                    release(_raw, cursor)
                except Exception:
                    pass

        if self.driver.cursor_close_talks:
            self.round_trips.run(RESETTING, release_all, raw)
        else:  # MySQL's and SQLite's cursors hold their rows: nothing goes to the server
            release_all(raw)

    def reset(self, raw: Any, state: ConnState, suspect: bool) -> None:
        """Make a returned connection fit to lend again, per RESET_ON_RETURN; raise if broken.

        ``suspect``: a database error happened on it (Django's ``errors_occurred``).
        """
        driver = self.driver
        if state.flags.is_closed():
            raise Closed()
        options = self.options
        in_transaction = driver.in_transaction(raw)
        # Never hand out an open transaction, whatever the mode (None too); a
        # driver that can tell (psycopg, sqlite3, MySQL in autocommit) saves
        # the round trip when none is open. MySQL with autocommit off cannot:
        # a transaction whose first statement failed holds its locks unseen.
        if in_transaction or in_transaction is None:
            commit = options.reset_on_return == RESET_COMMIT
            self.round_trips.run(RESETTING, driver.end_transaction, raw, commit)
        if self.resets_session:
            query = options.reset_query
            if query:
                self.round_trips.run(RESETTING, driver.execute, raw, query)
            else:
                self.round_trips.run(RESETTING, driver.strict_reset, raw)
            driver.forget_session(raw)
            # That undid Django's session setup (time zone, role, isolation
            # level, sql_mode): redo it at the next checkout.
            state.initialized = False
            state.was_reset = True
        if suspect and self._ping_suspects:
            self._ping(raw)

    def _ping(self, raw: Any) -> None:
        self._count("pings")
        try:
            self.round_trips.run(PINGING, self.driver.ping, raw)
        except Exception:
            self._count("pings_failed")
            raise
