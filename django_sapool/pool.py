"""The life of a pooled connection: born, lent, returned, retired.

One :class:`ManagedPool` per Django alias, connect settings and process (see
``registry.py``). Each step of a connection's life is one method:

- **born**: :meth:`ManagedPool._create` opens it (SQLAlchemy's creator, within
  CONNECT_TIMEOUT) and :meth:`ManagedPool._born` gives it its state;
- **lent**: :meth:`ManagedPool.checkout` (pinged first when it needs to be);
- **returned**: :meth:`ManagedPool.checkin` (reset per RESET_ON_RETURN);
- **retired**: :meth:`ManagedPool.retire`, through which every close the pool
  makes goes, with its reason.

The rooms around it: ``_sa.py`` (the SQLAlchemy adapter), ``state.py`` (per
connection), ``stats.py`` (counters), ``leaks.py`` (who holds what),
``deadline.py`` (round trips with a deadline), ``tcp.py`` (keepalives).
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from . import tcp
from ._sa import Record, SaPool, Timeout, give_back
from .conf import RESET_COMMIT, RESET_SESSION, PoolOptions
from .deadline import RoundTrips
from .drivers import DriverOps
from .errors import PoolExhausted, ServerSilent
from .leaks import CONNECTING, PINGING, RESETTING, Busy, Lending, checkout_stack
from .state import (
    BROKEN,
    EVICTED,
    EXPIRED,
    IDLE,
    RETIRED,
    STATE,
    ConnState,
)
from .stats import PoolStatus, Stats

logger = logging.getLogger("django_sapool")

_DEBUG = logging.DEBUG


class ManagedPool:
    """A QueuePool of raw DBAPI connections for one Django alias in one process.

    The pool never holds connect parameters: ``creator`` is asked for a new raw
    connection only from inside :meth:`checkout`, and it is the checking-out
    wrapper's own Django ``get_new_connection`` (see ``wrapper.py``).
    """

    # Slots: CPython 3.11 keeps a plain instance's attributes in a shared-key
    # dict of at most 30 keys; past that every attribute read on the hot path
    # takes the slow, unspecialised lookup (benchmarks/instructions.py sm).
    __slots__ = (
        "alias",
        "vendor",
        "database",
        "options",
        "driver",
        "pid",
        "disposed",
        "stats",
        "lending",
        "housekeeping_interval",
        "_sa",
        "_creator",
        "_raw",
        "_closed_records",
        "_lent",
        "_busy",
        "_leaks_reported",
        "_checkout_seq",
        "_attempts",
        "_pre_ping",
        "_pre_ping_interval",
        "_ping_suspects",
        "_round_trips",
        "_leak_timeout",
        "_session_reset",
        "_tune_sockets",
        "_wait_limit",
        "_idle",
        "_evicted_at",
        "_closing_returns",
        "_quiet",
        "__weakref__",
    )

    def __init__(
        self,
        *,
        alias: str,
        vendor: str,
        database: str,
        options: PoolOptions,
        driver: DriverOps,
        creator: Callable[[], Any],
        tune_sockets: bool = True,
    ) -> None:
        self.alias = alias
        self.vendor = vendor
        self.database = database
        self.options = options
        self.driver = driver
        self.pid = os.getpid()
        self.disposed = False
        self.stats = Stats()
        self.lending = Lending(alias)
        self._creator = creator
        # Every raw connection this pool opened and has not closed, by id.
        self._raw: dict[int, Any] = {}
        # Records whose connection was closed while they stay in the pool: a
        # later connect on one of them is a recycle (RECYCLE exceeded, or
        # retired by a pool-wide invalidation), not a new connection.
        self._closed_records: weakref.WeakSet[Any] = weakref.WeakSet()
        # Hot-path copies.
        self._lent = self.lending.lent
        self._busy = self.lending.busy
        self._leaks_reported = self.lending.reported
        self._checkout_seq = self.stats.checkout_seq
        self._attempts = options.pool_size + max(options.max_overflow, 0) + 1
        self._pre_ping = options.pre_ping and driver.networked
        self._pre_ping_interval = options.pre_ping_interval
        self._ping_suspects = driver.networked and not driver.flags_broken
        self._round_trips = RoundTrips(
            alias,
            options.ping_timeout if driver.networked else None,
            driver,
            self._busy,
            lambda: self.stats.count("pings_timed_out"),
        )
        self._leak_timeout = options.leak_timeout
        self._session_reset = bool(options.reset_query) or options.reset_on_return == RESET_SESSION
        # Keepalive defaults, unless the user's OPTIONS set the driver's own.
        self._tune_sockets = driver.networked and tune_sockets
        # time.time() of the last evict(): connections opened before it are
        # closed when returned (SQLAlchemy reconnects them at checkout).
        self._evicted_at = 0.0
        # Set once disposed or evicted: checkin() then tests the two (one
        # attribute read on the hot path until then).
        self._closing_returns = False
        # The checkout count the housekeeper last saw, and since when it has not
        # changed: a pool quiet for longer than IDLE_TIMEOUT is disposed of.
        self._quiet = (-1, time.monotonic())
        # The housekeeper (started by the registry) closes idle connections
        # (IDLE_TIMEOUT, RECYCLE) and reports leaks every this many seconds.
        timeouts = [t for t in (options.idle_timeout, options.leak_timeout) if t]
        if options.recycle > 0:
            timeouts.append(options.recycle)
        self.housekeeping_interval = min(30.0, max(0.05, min(timeouts) / 4)) if timeouts else 0.0
        self._sa = SaPool(
            self._create,
            pool_size=options.pool_size,
            max_overflow=options.max_overflow,
            timeout=options.timeout,
            use_lifo=options.use_lifo,
            echo=options.echo,
            logging_name=alias,
        )
        # SQLAlchemy makes a checkout wait exactly when its overflow reached
        # MAX_OVERFLOW and nothing is idle; with no limit (-1) it never waits.
        self._wait_limit = options.max_overflow
        self._idle = self._sa.idle_records
        event.listen(self._sa, "connect", self._born)
        event.listen(self._sa, "close", self._on_close)
        event.listen(self._sa, "close_detached", self._on_close_detached)

    def __repr__(self) -> str:
        return (
            f"<ManagedPool alias={self.alias!r} vendor={self.vendor!r} "
            f"database={self.database!r} pid={self.pid} {self._sa.status()}>"
        )

    # -- born -------------------------------------------------------------------

    def _create(self) -> Any:
        """Open a new server connection (SQLAlchemy's creator), within CONNECT_TIMEOUT.

        The connect timeout itself is the driver's (``connect_timeout``, see
        ``wrapper.py``); here the checkout shows as connecting meanwhile, and the
        new socket gets the keepalive defaults.
        """
        key = threading.get_ident()
        self._busy[key] = Busy(threading.current_thread(), CONNECTING, time.monotonic())
        try:
            raw = self._creator()
        finally:
            self._busy.pop(key, None)
        if self._tune_sockets:
            fd = self.driver.socket_fd(raw)
            if fd is not None and fd >= 0:
                tcp.tune(fd, self.options.tcp_keepalive, self.options.tcp_user_timeout)
        return raw

    def _born(self, dbapi_connection: Any, record: Record) -> None:
        """Give a new connection its state (SQLAlchemy's "connect" event)."""
        now = time.monotonic()
        recycle = self.options.recycle
        if recycle > 0:
            # Up to RECYCLE_JITTER early, so that connections opened together
            # (a fleet started at once, a pool refilled after a restart) are not
            # all replaced in the same second.
            expires = now + recycle * (1.0 - random.random() * self.options.recycle_jitter)
        else:
            expires = math.inf
        record.info[STATE] = ConnState(now, expires)
        self._raw[id(dbapi_connection)] = dbapi_connection
        stats = self.stats
        with stats.lock:
            stats.counters["connections_opened"] += 1
            recycled = record in self._closed_records
            if recycled:
                self._closed_records.discard(record)
                stats.counters["connections_recycled"] += 1
        if recycled:
            logger.debug(
                "django_sapool: recycled a connection of alias %r (RECYCLE=%g s exceeded, "
                "or retired after another connection was found dead)",
                self.alias,
                self.options.recycle,
            )

    # -- lent -------------------------------------------------------------------

    def checkout(self, owner: weakref.ref[Any] | None = None) -> Record:
        """Return a live pooled connection's record, or raise PoolExhausted after TIMEOUT.

        The hot path works on SQLAlchemy's connection records directly (the
        QueuePool's own queue, overflow, timeout and invalidation logic), without
        the per-checkout proxy, its weak reference and its finalizer: the Django
        wrapper holds the record until it returns it.

        ``owner`` is a weak reference to the Django wrapper, whose callback calls
        :meth:`return_abandoned` if the wrapper is garbage-collected with the
        connection still checked out (its thread ended without closing it). The
        connection's state keeps the weak reference alive so that its callback fires.
        """
        sa = self._sa
        limit = self._wait_limit
        overflow_now = sa.overflow_now
        # After a ping of this checkout went unanswered, a connection idle since
        # then is replaced rather than pinged: its path is likely dead too, and
        # one unanswered ping per checkout keeps the bound PING_TIMEOUT.
        silent_since = 0.0  # monotonic time of the unanswered ping; 0.0: none yet
        for _ in range(self._attempts):
            try:
                if limit >= 0 and overflow_now(sa) >= limit and not self._idle:
                    record = self._take_waiting()
                else:
                    record = sa.take()
            except Timeout:
                self.stats.count("timeouts")
                raise PoolExhausted(self.lending.exhausted_message(self.options)) from None
            try:
                raw = sa.connection(record)
            except BaseException as err:
                sa.connect_failed(record, err)
                raise
            state: ConnState = record.info[STATE]
            now = time.monotonic()
            if now >= state.expires or (silent_since and state.last_used < silent_since):
                # Older than RECYCLE (minus its jitter): replace it now.
                self.retire(record, EXPIRED)
                raw = self._reconnect(record)
                state = record.info[STATE]
            try:
                usable = self._usable(record, raw, state, now)
            except ServerSilent:
                silent_since = time.monotonic()
                continue
            if usable:
                state.owner = owner
                thread = state.thread = threading.current_thread()
                state.lent_at = now
                state.stack = checkout_stack() if self._leak_timeout else None
                self._lent[id(record)] = record
                next(self._checkout_seq)
                if logger.isEnabledFor(_DEBUG):
                    logger.debug(
                        "django_sapool: checked out a connection of alias %r in thread %r "
                        "(%d checked out, %d idle)",
                        self.alias,
                        thread.name,
                        sa.checkedout(),
                        sa.checkedin(),
                    )
                return record
        raise PoolExhausted(
            f"django_sapool: could not get a working connection for alias {self.alias!r} "
            f"after {self._attempts} attempts; every pooled connection failed its ping."
        )

    def _reconnect(self, record: Record) -> Any:
        """Connect a record again; if that fails, give it back as SQLAlchemy does."""
        try:
            return self._sa.connection(record)
        except BaseException as err:
            self._sa.connect_failed(record, err)
            raise

    def _take_waiting(self) -> Record:
        """Take a record out of an exhausted pool: count the waiting thread, time its wait."""
        stats = self.stats
        stats.wait_started()
        started = time.perf_counter()
        try:
            return self._sa.take()
        finally:
            waited = (time.perf_counter() - started) * 1000.0
            stats.wait_ended(waited)
            if logger.isEnabledFor(_DEBUG):
                logger.debug(
                    "django_sapool: waited %.1f ms for a connection of alias %r "
                    "(all POOL_SIZE + MAX_OVERFLOW connections were checked out)",
                    waited,
                    self.alias,
                )

    def _usable(self, record: Record, raw: Any, state: ConnState, now: float) -> bool:
        """Check a connection before handing it out, with a round trip only if needed.

        A connection used within PRE_PING_INTERVAL seconds, whose socket has
        nothing to read, is trusted as HikariCP does; a dead server that closed
        the socket makes it readable, so restarts and killed backends are still
        caught at no cost. After a longer idle time a real ping is made, within
        PING_TIMEOUT (raise ServerSilent past it).
        """
        driver = self.driver
        if driver.is_closed(raw):
            self.retire(record, BROKEN)
            return False
        if not self._pre_ping:
            return True
        if now - state.last_used <= self._pre_ping_interval:
            poller = state.poller
            if poller is None:
                poller = state.poller = driver.poller(raw)
            if not poller.poll(0):
                return True
        self.stats.count("pings")
        try:
            self._round_trips.run(PINGING, driver.ping, raw)
        except Exception as exc:
            self.stats.count("pings_failed")
            self.retire(record, BROKEN, exc)
            if isinstance(exc, ServerSilent):
                raise
            return False
        return True

    # -- returned ---------------------------------------------------------------

    def checkin(self, record: Record, suspect: bool = False) -> None:
        """Reset a connection per RESET_ON_RETURN and return it; discard it if broken.

        ``suspect``: a database error happened on it (Django's ``errors_occurred``).
        A driver that cannot tell a broken connection by itself (mysqlclient
        keeps ``open`` true after "server has gone away") then gets a ping, so a
        dead connection is not handed out again when PRE_PING is off.
        """
        key = id(record)
        if self._lent.pop(key, None) is None:
            return  # already returned
        raw = record.dbapi_connection
        if raw is None:  # already invalidated
            give_back(record)
            return
        state: ConnState = record.info[STATE]
        if self._leaks_reported:
            self.lending.returned(key, state, time.monotonic())
        try:
            if self.driver.is_closed(raw):
                raise ConnectionError("connection closed")
            self._reset(raw, state)
            if suspect and self._ping_suspects:
                self.stats.count("pings")
                try:
                    self._round_trips.run(PINGING, self.driver.ping, raw)
                except Exception:
                    self.stats.count("pings_failed")
                    raise
        except Exception as exc:
            self.retire(record, BROKEN, exc)
            return
        state.last_used = time.monotonic()
        if self._closing_returns and (
            self.disposed or SaPool.opened_at(record) <= self._evicted_at
        ):
            # Disposed while this one was checked out (test database dropped,
            # dispose() called), or retired by evict(): close it now.
            self.retire(record, RETIRED)
            return
        give_back(record)
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "django_sapool: returned a connection of alias %r checked out in thread %r "
                "(%d checked out, %d idle)",
                self.alias,
                state.thread.name if state.thread is not None else "?",
                self._sa.checkedout(),
                self._sa.checkedin(),
            )

    def _reset(self, raw: Any, state: ConnState) -> None:
        options = self.options
        in_transaction = self.driver.in_transaction(raw)
        # Never hand out an open transaction, whatever the mode; a driver that
        # can tell (psycopg, sqlite3) saves the round trip when none is open.
        if in_transaction or (in_transaction is None and options.reset_on_return):
            commit = options.reset_on_return == RESET_COMMIT
            self._round_trips.run(RESETTING, self.driver.end_transaction, raw, commit)
        if self._session_reset:
            query = options.reset_query
            if query:
                self._round_trips.run(RESETTING, self.driver.execute, raw, query)
            else:
                self._round_trips.run(RESETTING, self.driver.strict_reset, raw)
            # That undid Django's session setup (time zone, role, isolation
            # level, sql_mode): redo it at the next checkout.
            state.initialized = False
            state.was_reset = True

    def return_abandoned(self, owner: weakref.ref[Any]) -> int:
        """Return the connections of a garbage-collected wrapper; return how many."""
        if self.pid != os.getpid():
            return 0  # inherited through fork: the parent owns them
        abandoned = self.lending.abandoned_by(owner)
        for record in abandoned:
            self.checkin(record)
        return len(abandoned)

    # -- retired ----------------------------------------------------------------

    def retire(self, record: Record, reason: str, error: BaseException | None = None) -> None:
        """Close a connection for ``reason`` (see ``state.py``), counting it there.

        Every close the pool makes goes through here; the ones SQLAlchemy makes
        by itself (an overflow connection returned, ``dispose()``, reconnecting
        a connection older than the last invalidation) show in :meth:`_on_close`.
        """
        state = record.info.get(STATE)
        if state is not None:
            state.closing = reason
        sa = self._sa
        if reason == BROKEN:
            self.stats.count("connections_invalidated")
            logger.warning(
                "django_sapool: discarded a connection of alias %r (%s)",
                self.alias,
                type(error).__name__ if error is not None else "unusable",
            )
            # Also retires every older connection at its next checkout: a dead
            # connection usually means a restarted or failed-over server.
            sa.discard(record, error)
        elif reason == EXPIRED:
            record.close()  # the checkout that found it connects it again
        elif reason == RETIRED:
            logger.debug("django_sapool: closed a connection of retired pool %r", self.alias)
            sa.close_and_give_back(record)
        else:  # IDLE, EVICTED: taken out of the idle queue
            if reason == IDLE:
                self.stats.count("connections_idle_closed")
            try:
                sa.close_taken(record)
            except Exception:  # a dead socket may fail to close cleanly
                logger.debug("django_sapool: error closing an idle connection", exc_info=True)

    def _on_close(self, dbapi_connection: Any, record: Record | None) -> None:
        """Count a close (SQLAlchemy's "close" event), the pool's own or SQLAlchemy's."""
        self._raw.pop(id(dbapi_connection), None)
        state = record.info.get(STATE) if record is not None else None
        reason = state.closing if state is not None else None
        stats = self.stats
        with stats.lock:
            stats.counters["connections_closed"] += 1
            # A broken or idle connection's record is not reconnected for it, and
            # neither are those of a disposed pool.
            if record is not None and reason not in (BROKEN, IDLE) and not self.disposed:
                self._closed_records.add(record)

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        self._raw.pop(id(dbapi_connection), None)

    # -- housekeeping ------------------------------------------------------------

    def housekeep(self, now: float | None = None) -> int:
        """Close idle connections beyond MIN_IDLE, and report leaks; return how many closed.

        Runs from the process's housekeeper thread, every ``housekeeping_interval``
        seconds. An idle connection is closed when it has been idle longer than
        IDLE_TIMEOUT, or is older than RECYCLE, as long as at least MIN_IDLE
        idle connections stay open; connections in use are never touched.
        """
        if now is None:
            now = time.monotonic()
        if self.disposed or self.pid != os.getpid():
            return 0
        if self._leak_timeout:
            hint = (
                f"CONNECT_TIMEOUT={self.options.connect_timeout}, "
                f"PING_TIMEOUT={self.options.ping_timeout}"
            )
            leaks = self.lending.report(now, self._leak_timeout, hint)
            if leaks:
                self.stats.add("leaks", leaks)
        victims = self._sa.take_idle(lambda live: self._idle_victims(live, now))
        for record in victims:
            self.retire(record, IDLE)
        if victims:
            logger.info(
                "django_sapool: closed %d idle connection(s) of alias %r (IDLE_TIMEOUT=%s, "
                "RECYCLE=%s, MIN_IDLE=%d)",
                len(victims),
                self.alias,
                self.options.idle_timeout,
                self.options.recycle,
                self.options.min_idle,
            )
        return len(victims)

    def _idle_victims(self, live: list[Record], now: float) -> list[Record]:
        """Pick the idle connections to close, least recently used first."""
        idle_timeout = self.options.idle_timeout
        spare = len(live) - self.options.min_idle
        victims: list[Record] = []
        for record in sorted(live, key=lambda r: r.info[STATE].last_used):
            if spare <= 0:
                break
            state: ConnState = record.info[STATE]
            idle_too_long = idle_timeout is not None and now - state.last_used > idle_timeout
            if idle_too_long or now >= state.expires:
                victims.append(record)
                spare -= 1
        return victims

    def unused(self, now: float) -> bool:
        """Return whether nothing used this pool for longer than IDLE_TIMEOUT (dispose it).

        Called by the housekeeper: a pool is quiet while its checkout count does
        not change, which costs the hot path nothing.
        """
        idle_timeout = self.options.idle_timeout
        if idle_timeout is None:
            return False
        checkouts = self.stats.checkouts()
        seen, since = self._quiet
        if checkouts != seen or self._lent or self._busy:
            self._quiet = (checkouts, now)
            return False
        return now - since > idle_timeout

    # -- the whole pool ------------------------------------------------------------

    def evict(self, reason: str) -> int:
        """Retire every connection softly: idle ones now, checked-out ones when returned.

        HikariCP's ``softEvictConnections``: after a failover the sessions are on
        the old server, healthy but wrong. Checkouts in progress reconnect
        (SQLAlchemy's invalidation time). Return how many idle ones were closed.
        """
        self._evicted_at = time.time()
        self._closing_returns = True
        self.stats.count("evictions")
        self._sa.retire_all()
        victims = self._sa.take_idle(list)
        for record in victims:
            self.retire(record, EVICTED)
        logger.warning(
            "django_sapool: retired every connection of alias %r (%s): %d idle closed now, "
            "%d checked out closed when returned",
            self.alias,
            reason,
            len(victims),
            len(self._lent),
        )
        return len(victims)

    def dispose(self, reason: str = "dispose() was called") -> None:
        """Close idle connections; connections in use are closed when returned."""
        self.disposed = self._closing_returns = True
        self._sa.dispose()
        logger.info(
            "django_sapool: disposed pool for alias %r (%s): %s", self.alias, self.database, reason
        )

    def has_connections(self) -> bool:
        """Return whether any raw connection this pool opened is still open."""
        return bool(self._raw)

    def raw_connections(self) -> list[Any]:
        """Return the raw connections this pool opened and has not closed."""
        return list(self._raw.values())

    def status(self) -> PoolStatus:
        """Return a snapshot: sizes now, counters, and the recent waits' percentiles."""
        sa = self._sa
        idle = sa.checkedin()
        checked_out = sa.checkedout()
        busy = self.lending.counts()
        return self.stats.snapshot(
            {
                "alias": self.alias,
                "vendor": self.vendor,
                "database": self.database,
                "pid": self.pid,
                "pool_size": self.options.pool_size,
                "max_overflow": self.options.max_overflow,
                "size": idle + checked_out,
                "checked_out": checked_out,
                "idle": idle,
                "overflow": max(0, sa.overflow()),
                "connecting": busy[CONNECTING],
                "pinging": busy[PINGING],
            }
        )
