"""One SQLAlchemy QueuePool for one alias and connect fingerprint, plus what Django needs."""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import sys
import threading
import time
import traceback
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from . import tcp
from .conf import RESET_COMMIT, RESET_SESSION, PoolOptions
from .deadline import WATCHDOG
from .drivers import DriverOps
from .errors import PoolExhausted, ServerSilent

logger = logging.getLogger("django_sapool")

#: ``info`` keys, stored per raw DBAPI connection (they vanish with it).
LAST_USED = "django_sapool.last_used"
INITIALIZED = "django_sapool.initialized"
#: Marks a connection whose session was reset (RESET_ON_RETURN 'reset' or SQL).
WAS_RESET = "django_sapool.was_reset"
#: Marks a healthy connection closed only because its pool was disposed.
RETIRED = "django_sapool.retired"
#: Marks a connection being invalidated (broken), between the two events that say so.
INVALIDATING = "django_sapool.invalidating"
#: When (time.monotonic()) the connection is due for recycling: RECYCLE, minus jitter.
EXPIRES = "django_sapool.expires"
#: A poll object watching the connection's socket (made once per connection).
POLLER = "django_sapool.poller"
#: Marks a connection closed by the pool on purpose (idle, expired), not broken.
SWEPT = "django_sapool.swept"

#: How many of the most recent checkout waits the wait-time percentiles cover.
WAIT_WINDOW = 1024

#: What a checkout in progress is doing while it talks to the server.
CONNECTING = "connecting"
PINGING = "pinging"
RESETTING = "resetting"

_DEBUG = logging.DEBUG


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of one pool. ``size`` counts open connections (idle + checked out).

    Counters run from the pool's creation. ``waiting`` is the number of threads
    waiting for a connection now; ``checkout_waits`` counts the checkouts that
    found the pool exhausted (no idle connection, no overflow left) and had to
    wait, and the ``wait_ms_*`` fields describe those waits (timed-out ones
    included): the total, and percentiles over the last ``WAIT_WINDOW`` waits
    (0.0 while none has waited).
    """

    alias: str
    vendor: str
    database: str
    pid: int
    pool_size: int
    max_overflow: int
    size: int
    checked_out: int
    idle: int
    overflow: int
    connections_opened: int
    connections_closed: int
    connections_invalidated: int
    pings: int
    pings_failed: int
    timeouts: int
    waiting: int
    connections_recycled: int
    checkouts: int
    checkout_waits: int
    wait_ms_total: float
    wait_ms_p50: float
    wait_ms_p95: float
    wait_ms_p99: float
    wait_ms_max: float
    connections_idle_closed: int = 0
    leaks: int = 0
    connecting: int = 0
    pinging: int = 0
    pings_timed_out: int = 0
    evictions: int = 0


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of sorted values (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class ManagedPool:
    """A QueuePool of raw DBAPI connections for one Django alias in one process.

    The pool never holds connect parameters: ``creator`` is asked for a new raw
    connection only from inside :meth:`checkout`, and it is the checking-out
    wrapper's own Django ``get_new_connection`` (see ``wrapper.py``).
    """

    # Slots: CPython 3.11 keeps a plain instance's attributes in a shared-key
    # dict of at most 30 keys; past that every attribute read on the hot path
    # takes the slow, unspecialised lookup (measured: +1,100 instructions per
    # checkout cycle, benchmarks/instructions.py sm).
    __slots__ = (
        "_attempts",
        "_busy",
        "_checkout_seq",
        "_checkout_seq_reads",
        "_closed_records",
        "_closing_returns",
        "_counters",
        "_creator",
        "_evicted_at",
        "_idle",
        "_leak_timeout",
        "_leaks_reported",
        "_lock",
        "_next_housekeeping",
        "_out",
        "_ping_suspects",
        "_ping_timeout",
        "_pool",
        "_pre_ping",
        "_pre_ping_interval",
        "_quiet",
        "_raw",
        "_session_reset",
        "_tune_sockets",
        "_wait_limit",
        "_wait_ms",
        "_wait_ms_total",
        "_waiting",
        "alias",
        "database",
        "disposed",
        "driver",
        "housekeeping_interval",
        "options",
        "pid",
        "vendor",
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
        # Reentrant: SQLAlchemy's "close" event may fire from a garbage-collected
        # connection's finalizer while this thread is inside one of our locked
        # sections.
        self._lock = threading.RLock()
        # Checked-out connections by id of the proxy: (proxy, weak reference to
        # the owning wrapper, thread name). Strong references: a connection must
        # never be garbage-collected behind our back (after a fork the driver's
        # destructor would close the parent's session).
        # Checked-out connections by id of the record: (record, weak reference to
        # the owning wrapper, thread, checkout time, checkout stack or None).
        self._out: dict[int, tuple[Any, Any, threading.Thread, float, Any]] = {}
        self._counters = dict.fromkeys(
            (
                "opened",
                "closed",
                "invalidated",
                "recycled",
                "pings",
                "pings_failed",
                "timeouts",
                "checkout_waits",
                "idle_closed",
                "leaks",
                "pings_timed_out",
                "evictions",
            ),
            0,
        )
        # Hot-path copies of options.
        self._attempts = options.pool_size + max(options.max_overflow, 0) + 1
        self._pre_ping = options.pre_ping and driver.networked
        self._pre_ping_interval = options.pre_ping_interval
        self._ping_suspects = driver.networked and not driver.flags_broken
        self._leak_timeout = options.leak_timeout
        self._session_reset = bool(options.reset_query) or options.reset_on_return == RESET_SESSION
        self._ping_timeout = options.ping_timeout if driver.networked else None
        self._creator = creator
        # Keepalive defaults, unless the user's OPTIONS set the driver's own.
        self._tune_sockets = driver.networked and tune_sockets
        # Checkouts talking to the server now (connecting, pinging) and returns
        # resetting, by thread id: (thread, what it does, since when). Shown by
        # status(), PoolExhausted's message and LEAK_TIMEOUT reports.
        self._busy: dict[int, tuple[threading.Thread, str, float]] = {}
        # time.time() of the last evict(): connections opened before it are
        # closed when returned (SQLAlchemy reconnects them at checkout).
        self._evicted_at = 0.0
        # Set once disposed or evicted: checkin() then tests the two (one
        # attribute read on the hot path until then).
        self._closing_returns = False
        # The checkout count the housekeeper last saw, and since when it has not
        # changed: a pool quiet for longer than IDLE_TIMEOUT is disposed of.
        self._quiet = (-1, time.monotonic())
        # ids of checked-out records reported as leaked, with when they were.
        self._leaks_reported: dict[int, float] = {}
        # Idle connections are closed (IDLE_TIMEOUT, RECYCLE) and leaks reported
        # every this many seconds, from checkins and from the housekeeper thread.
        timeouts = [t for t in (options.idle_timeout, options.leak_timeout) if t]
        if options.recycle > 0:
            timeouts.append(options.recycle)
        self.housekeeping_interval = min(30.0, max(0.05, min(timeouts) / 4)) if timeouts else 0.0
        self._next_housekeeping = (
            time.monotonic() + self.housekeeping_interval if timeouts else math.inf
        )
        # Checkouts are counted on the hot path without a lock: next() on an
        # itertools.count is one atomic C call. status() reads the count by
        # drawing from it too, and subtracts its own draws (under _lock).
        self._checkout_seq = itertools.count()
        self._checkout_seq_reads = 0
        self._waiting = 0
        self._wait_ms_total = 0.0
        # deque.append with maxlen is atomic: waits are recorded without a lock.
        self._wait_ms: deque[float] = deque(maxlen=WAIT_WINDOW)
        # Records whose connection was closed while they stay in the pool: a
        # later "connect" on one of them is a recycle (RECYCLE exceeded, or
        # retired by a pool-wide invalidation), not a new connection.
        self._closed_records: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pool = QueuePool(
            self._create,
            pool_size=options.pool_size,
            max_overflow=options.max_overflow,
            timeout=options.timeout,
            # RECYCLE is ours (with jitter, see checkout() and housekeep()).
            recycle=-1,
            use_lifo=options.use_lifo,
            # Resets are ours (see checkin): SQLAlchemy's would send a ROLLBACK
            # that some drivers don't skip when no transaction is open.
            reset_on_return=None,
            echo=options.echo,
            logging_name=alias,
            pre_ping=False,
        )
        # Every raw connection this pool opened and has not closed, by id.
        self._raw: dict[int, Any] = {}
        # SQLAlchemy waits for a connection exactly when its overflow is used up
        # and no connection is idle (QueuePool._do_get). Reading the same two
        # fields before connect() tells a waiting checkout from a quick one for
        # the price of two attribute reads; if a SQLAlchemy release renames
        # them, waits go uncounted rather than checkouts failing.
        idle = getattr(getattr(self._pool, "_pool", None), "queue", None)
        self._idle: deque[Any] = deque()
        self._wait_limit = -1  # -1: never counts a wait
        if isinstance(idle, deque) and hasattr(self._pool, "_overflow"):
            self._idle, self._wait_limit = idle, options.max_overflow
        event.listen(self._pool, "connect", self._on_connect)
        event.listen(self._pool, "close", self._on_close)
        event.listen(self._pool, "close_detached", self._on_close_detached)
        event.listen(self._pool, "invalidate", self._on_invalidate)
        if self.housekeeping_interval:
            from . import housekeeper

            housekeeper.register(self)

    def __repr__(self) -> str:
        return (
            f"<ManagedPool alias={self.alias!r} vendor={self.vendor!r} "
            f"database={self.database!r} pid={self.pid} {self._pool.status()}>"
        )

    # -- birth ------------------------------------------------------------------

    def _create(self) -> Any:
        """Open a new server connection (SQLAlchemy's creator), within CONNECT_TIMEOUT.

        The connect timeout itself is the driver's (``connect_timeout``, see
        ``wrapper.py``); here the checkout shows as connecting meanwhile, and the
        new socket gets the keepalive defaults.
        """
        key = threading.get_ident()
        self._busy[key] = (threading.current_thread(), CONNECTING, time.monotonic())
        try:
            raw = self._creator()
        finally:
            self._busy.pop(key, None)
        if self._tune_sockets:
            fd = self.driver.socket_fd(raw)
            if fd is not None and fd >= 0:
                tcp.tune(fd, self.options.tcp_keepalive, self.options.tcp_user_timeout)
        return raw

    # -- events ---------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        now = time.monotonic()
        info = record.info
        info[LAST_USED] = now
        recycle = self.options.recycle
        if recycle > 0:
            # Up to RECYCLE_JITTER early, so that connections opened together
            # (a fleet started at once, a pool refilled after a restart) are not
            # all replaced in the same second.
            info[EXPIRES] = now + recycle * (1.0 - random.random() * self.options.recycle_jitter)
        else:
            info[EXPIRES] = math.inf
        self._raw[id(dbapi_connection)] = dbapi_connection
        with self._lock:
            self._counters["opened"] += 1
            recycled = record in self._closed_records
            if recycled:
                self._closed_records.discard(record)
                self._counters["recycled"] += 1
        if recycled:
            logger.debug(
                "django_sapool: recycled a connection of alias %r (RECYCLE=%g s exceeded, "
                "or retired after another connection was found dead)",
                self.alias,
                self.options.recycle,
            )

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        self._raw.pop(id(dbapi_connection), None)
        with self._lock:
            self._counters["closed"] += 1
            # A broken connection (invalidated) is counted as such, and the
            # closes of dispose() and of returned overflow connections drop
            # their record: none of those is followed by a reconnect we count.
            if record is not None and not record.info.pop(INVALIDATING, False):
                if record.info.pop(SWEPT, False):
                    self._counters["idle_closed"] += 1
                elif not self.disposed:
                    self._closed_records.add(record)

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        self._raw.pop(id(dbapi_connection), None)

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        if record is not None and record.info.pop(RETIRED, False):
            # Not broken: it came back to a disposed pool and is closed on purpose
            # (the "close" event still counts it).
            logger.debug("django_sapool: closed a connection of disposed pool %r", self.alias)
            return
        if record is not None:
            record.info[INVALIDATING] = True
        self._count("invalidated")
        logger.warning(
            "django_sapool: discarded a connection of alias %r (%s)",
            self.alias,
            type(exception).__name__ if exception is not None else "unusable",
        )

    # -- checkout -------------------------------------------------------------

    def checkout(self, owner: weakref.ref[Any] | None = None) -> ConnectionPoolEntry:
        """Return a live pooled connection's record, or raise PoolExhausted after TIMEOUT.

        The hot path works on SQLAlchemy's connection records directly (the
        QueuePool's own queue, overflow, timeout and invalidation logic), without
        the per-checkout ``_ConnectionFairy`` proxy, its weak reference and its
        finalizer: the Django wrapper holds the record until it returns it.

        ``owner`` is a weak reference to the Django wrapper, whose callback calls
        :meth:`return_abandoned` if the wrapper is garbage-collected with the
        connection still checked out (its thread ended without closing it). The
        entry keeps the weak reference alive so that its callback fires.
        """
        pool = self._pool
        limit = self._wait_limit
        # After a ping of this checkout went unanswered, a connection idle since
        # then is replaced rather than pinged: its path is likely dead too, and
        # one unanswered ping per checkout keeps the bound PING_TIMEOUT.
        silent_since = 0.0  # monotonic time of the unanswered ping; 0.0: none yet
        for _ in range(self._attempts):
            try:
                if limit >= 0 and pool._overflow >= limit and not self._idle:
                    record = self._get_waiting()
                else:
                    record = pool._do_get()
            except sa_exc.TimeoutError:
                self._count("timeouts")
                raise PoolExhausted(self.exhausted_message()) from None
            try:
                raw = record.get_connection()
            except BaseException as err:
                record._checkin_failed(err, _fairy_was_created=False)
                raise
            info = record.info
            now = time.monotonic()
            if now >= info[EXPIRES] or (silent_since and info[LAST_USED] < silent_since):
                # Older than RECYCLE (minus its jitter): replace it now.
                record.close()
                raw = self._connection(record)
            try:
                usable = self._usable(record, raw, info, now)
            except ServerSilent:
                silent_since = time.monotonic()
                continue
            if usable:
                thread = threading.current_thread()
                stack = self._checkout_stack() if self._leak_timeout else None
                self._out[id(record)] = (record, owner, thread, now, stack)
                next(self._checkout_seq)
                if logger.isEnabledFor(_DEBUG):
                    logger.debug(
                        "django_sapool: checked out a connection of alias %r in thread %r "
                        "(%d checked out, %d idle)",
                        self.alias,
                        thread.name,
                        pool.checkedout(),
                        pool.checkedin(),
                    )
                return record
        raise PoolExhausted(
            f"django_sapool: could not get a working connection for alias {self.alias!r} "
            f"after {self._attempts} attempts; every pooled connection failed its ping."
        )

    @staticmethod
    def _connection(record: Any) -> Any:
        """Return the record's raw connection, connecting (or reconnecting) if needed.

        When connecting fails the record goes back to the pool, as SQLAlchemy's
        own checkout does, so a down server never uses up the pool.
        """
        try:
            return record.get_connection()
        except BaseException as err:
            record._checkin_failed(err, _fairy_was_created=False)
            raise

    def _get_waiting(self) -> Any:
        """Check out of an exhausted pool: count the waiting thread and time its wait."""
        with self._lock:
            self._waiting += 1
            self._counters["checkout_waits"] += 1
        started = time.perf_counter()
        try:
            return self._pool._do_get()
        finally:
            waited = (time.perf_counter() - started) * 1000.0
            self._wait_ms.append(waited)
            with self._lock:
                self._waiting -= 1
                self._wait_ms_total += waited
            if logger.isEnabledFor(_DEBUG):
                logger.debug(
                    "django_sapool: waited %.1f ms for a connection of alias %r "
                    "(all POOL_SIZE + MAX_OVERFLOW connections were checked out)",
                    waited,
                    self.alias,
                )

    def _usable(self, record: Any, raw: Any, info: dict[str, Any], now: float) -> bool:
        """Check a connection before handing it out, with a round trip only if needed.

        A connection used within PRE_PING_INTERVAL seconds, whose socket has
        nothing to read, is trusted as HikariCP does; a dead server that closed
        the socket makes it readable, so restarts and killed backends are still
        caught at no cost. After a longer idle time a real ping is made.
        """
        driver = self.driver
        if driver.is_closed(raw):
            self._discard(record, None)
            return False
        if not self._pre_ping:
            return True
        if now - info[LAST_USED] <= self._pre_ping_interval:
            poller = info.get(POLLER)
            if poller is None:
                poller = info[POLLER] = driver.poller(raw)
            if not poller.poll(0):
                return True
        self._count("pings")
        try:
            self._talk(PINGING, driver.ping, raw)
        except Exception as exc:
            self._count("pings_failed")
            self._discard(record, exc)
            if isinstance(exc, ServerSilent):
                raise
            return False
        return True

    def _talk(self, doing: str, call: Callable[..., None], raw: Any, *args: Any) -> None:
        """Make one round trip (ping, reset) under PING_TIMEOUT; raise ServerSilent if late.

        Past the deadline the watchdog shuts the socket down, which ends the
        driver's wait whatever it waits in (see ``deadline.py``); the connection
        is then useless, and the caller discards it.
        """
        key = threading.get_ident()
        self._busy[key] = (threading.current_thread(), doing, time.monotonic())
        deadline = None
        if self._ping_timeout is not None:
            fd = self.driver.socket_fd(raw)
            if fd is not None and fd >= 0:
                deadline = WATCHDOG.arm(fd, self._ping_timeout)
        try:
            call(raw, *args)
        except BaseException as exc:
            if self._done_talking(key, deadline):
                raise self._silent(doing) from exc
            raise
        if self._done_talking(key, deadline):
            # It answered just as the deadline fired: the socket is shut down now.
            raise self._silent(doing)

    def _done_talking(self, key: int, deadline: Any) -> bool:
        """End a round trip; return whether its deadline fired."""
        self._busy.pop(key, None)
        if deadline is None or not WATCHDOG.disarm(deadline):
            return False
        self._count("pings_timed_out")
        return True

    def _silent(self, doing: str) -> ServerSilent:
        return ServerSilent(
            f"django_sapool: the server did not answer within PING_TIMEOUT="
            f"{self._ping_timeout:g}s ({doing} a connection of alias {self.alias!r}; a hung "
            f"server or a silent network): the connection was discarded."
        )

    @staticmethod
    def _checkout_stack() -> traceback.StackSummary:
        """Where the connection is being checked out (for LEAK_TIMEOUT reports).

        Source lines are looked up only if a leak is reported.
        """
        frame = sys._getframe(3)  # connect(), which called get_new_connection()
        stack = traceback.StackSummary.extract(
            traceback.walk_stack(frame), limit=40, lookup_lines=False
        )
        stack.reverse()  # outermost call first, as in a traceback
        return stack

    def _discard(self, record: Any, exc: BaseException | None) -> None:
        """Close a dead connection, and retire every older one on its next checkout.

        A dead connection usually means a restarted or failed-over server, which
        killed its siblings too: SQLAlchemy's invalidation timestamp makes the
        pool reconnect those lazily instead of failing once per connection.
        """
        self._pool._invalidate(record, exc, _checkin=False)  # type: ignore[arg-type]
        try:
            record.invalidate(exc)
        finally:
            record.checkin(_fairy_was_created=False)

    def exhausted_message(self) -> str:
        """Say who holds the connections: the application, or checkouts stuck on the server."""
        o = self.options
        overflow = "unlimited" if o.max_overflow < 0 else str(o.max_overflow)
        held = len(self._out)
        busy = Counter(doing for _, doing, _ in list(self._busy.values()))
        stuck = busy[CONNECTING] + busy[PINGING]
        head = (
            f"django_sapool: no connection for alias {self.alias!r} became free within "
            f"TIMEOUT={o.timeout:g}s; all POOL_SIZE={o.pool_size} + MAX_OVERFLOW={overflow} "
            f"connections are in use: {held} held by the application, {busy[CONNECTING]} "
            f"connecting to and {busy[PINGING]} pinging the server."
        )
        if stuck > held:
            return (
                f"{head} The server or the network is not answering: checkouts end "
                f"within CONNECT_TIMEOUT={o.connect_timeout}s / PING_TIMEOUT="
                f"{o.ping_timeout}s (settings.DATABASES[{self.alias!r}]['POOL_OPTIONS'])."
            )
        return (
            f"{head} Raise POOL_SIZE or MAX_OVERFLOW in "
            f"settings.DATABASES[{self.alias!r}]['POOL_OPTIONS'] (mind the server's "
            f"max_connections), raise TIMEOUT, or make sure threads return connections "
            f"(django.db.close_old_connections())."
        )

    def return_abandoned(self, owner: weakref.ref[Any]) -> int:
        """Return the connections of a garbage-collected wrapper; return how many."""
        if self.pid != os.getpid():
            return 0  # inherited through fork: the parent owns them
        abandoned = [entry for entry in list(self._out.values()) if entry[1] is owner]
        for record, _, thread, _, _ in abandoned:
            logger.warning(
                "django_sapool: a connection of alias %r checked out by thread %r was "
                "never returned (the thread ended without connection.close() or "
                "close_old_connections()); returning it to the pool.",
                self.alias,
                thread.name,
            )
            self.checkin(record)
        return len(abandoned)

    # -- checkin --------------------------------------------------------------

    def checkin(self, record: ConnectionPoolEntry, suspect: bool = False) -> None:
        """Reset a connection per RESET_ON_RETURN and return it; discard it if broken.

        ``suspect``: a database error happened on it (Django's ``errors_occurred``).
        A driver that cannot tell a broken connection by itself (mysqlclient
        keeps ``open`` true after "server has gone away") then gets a ping, so a
        dead connection is not handed out again when PRE_PING is off.
        """
        entry = self._out.pop(id(record), None)
        if entry is None:
            return  # already returned
        if self._leaks_reported and id(record) in self._leaks_reported:
            self._leak_returned(record, entry, time.monotonic())
        raw = record.dbapi_connection
        if raw is None:  # already invalidated
            record.checkin(_fairy_was_created=False)  # type: ignore[attr-defined]
            return
        info = record.info
        try:
            if self.driver.is_closed(raw):
                raise ConnectionError("connection closed")
            self._reset(raw, info)
            if suspect and self._ping_suspects:
                self._count("pings")
                try:
                    self._talk(PINGING, self.driver.ping, raw)
                except Exception:
                    self._count("pings_failed")
                    raise
        except Exception as exc:
            self._discard(record, exc)
            return
        now = info[LAST_USED] = time.monotonic()
        if self._closing_returns and (
            self.disposed or record.starttime <= self._evicted_at  # type: ignore[attr-defined]
        ):
            # Disposed while this one was checked out (test database dropped,
            # dispose() called), or retired by evict(): close it now.
            info[RETIRED] = True
            record.invalidate()
            record.checkin(_fairy_was_created=False)  # type: ignore[attr-defined]
            return
        record.checkin(_fairy_was_created=False)  # type: ignore[attr-defined]
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "django_sapool: returned a connection of alias %r checked out in thread %r "
                "(%d checked out, %d idle)",
                self.alias,
                entry[2].name,
                self._pool.checkedout(),
                self._pool.checkedin(),
            )
        if now >= self._next_housekeeping:
            self.housekeep(now)

    def _reset(self, raw: Any, info: dict[str, Any]) -> None:
        options = self.options
        in_transaction = self.driver.in_transaction(raw)
        # Never hand out an open transaction, whatever the mode; a driver that
        # can tell (psycopg, sqlite3) saves the round trip when none is open.
        if in_transaction or (in_transaction is None and options.reset_on_return):
            commit = options.reset_on_return == RESET_COMMIT
            self._talk(RESETTING, self.driver.end_transaction, raw, commit)
        if self._session_reset:
            query = options.reset_query
            if query:
                self._talk(RESETTING, self.driver.execute, raw, query)
            else:
                self._talk(RESETTING, self.driver.strict_reset, raw)
            # That undid Django's session setup (time zone, role, isolation
            # level, sql_mode): redo it at the next checkout.
            info.pop(INITIALIZED, None)
            info[WAS_RESET] = True

    # -- housekeeping: idle connections and leaks ------------------------------

    def housekeep(self, now: float | None = None) -> int:
        """Close idle connections beyond MIN_IDLE, and report leaks; return how many closed.

        Runs from :meth:`checkin` (at most every ``housekeeping_interval``
        seconds) and from the process's housekeeper thread, so a pool that has
        gone quiet still gives its connections back. An idle connection is
        closed when it has been idle longer than IDLE_TIMEOUT, or is older than
        RECYCLE, as long as at least MIN_IDLE idle connections stay open;
        connections in use are never touched.
        """
        if now is None:
            now = time.monotonic()
        self._next_housekeeping = now + self.housekeeping_interval
        if self.disposed or self.pid != os.getpid():
            return 0
        if self._leak_timeout:
            self._report_leaks(now)
        victims = self._take_idle(now)
        self._close_idle(victims, swept=True)
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

    def _close_idle(self, victims: list[Any], swept: bool) -> None:
        """Close idle records taken out of the queue, freeing their slots."""
        for record in victims:
            if swept:
                record.info[SWEPT] = True
            try:
                record.close()
            except Exception:  # a dead socket may fail to close cleanly
                logger.debug("django_sapool: error closing an idle connection", exc_info=True)
            finally:
                self._pool._dec_overflow()

    def _take_idle(self, now: float | None) -> list[Any]:
        """Remove from the pool's queue the idle records to close, and return them.

        ``now=None`` takes every idle connection (:meth:`evict`).
        """
        idle_timeout = self.options.idle_timeout
        queue = getattr(self._pool, "_pool", None)
        if queue is None or not hasattr(queue, "mutex"):  # pragma: no cover - SQLAlchemy changed
            return []
        victims: list[Any] = []
        with queue.mutex:
            live = [r for r in queue.queue if r.dbapi_connection is not None]
            if now is None:
                for record in live:
                    queue.queue.remove(record)
                return live
            spare = len(live) - self.options.min_idle
            # Least recently used first.
            live.sort(key=lambda r: r.info.get(LAST_USED, 0.0))
            for record in live:
                if spare <= 0:
                    break
                info = record.info
                idle_too_long = idle_timeout is not None and (
                    now - info.get(LAST_USED, now) > idle_timeout
                )
                if idle_too_long or now >= info.get(EXPIRES, math.inf):
                    queue.queue.remove(record)
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
        checkouts = self._checkouts()
        seen, since = self._quiet
        if checkouts != seen or self._out or self._busy:
            self._quiet = (checkouts, now)
            return False
        return now - since > idle_timeout

    def _checkouts(self) -> int:
        """Return how many checkouts this pool has made (see ``_checkout_seq``)."""
        with self._lock:
            count = next(self._checkout_seq) - self._checkout_seq_reads
            self._checkout_seq_reads += 1
        return count

    def _report_leaks(self, now: float) -> None:
        """Log, once each, the connections checked out longer than LEAK_TIMEOUT.

        Checkouts stuck talking to the server (connecting, pinging) count too:
        they hold a slot of the pool as surely as a leak does.
        """
        limit = self._leak_timeout or math.inf
        for key, (thread, doing, since) in list(self._busy.items()):
            if now - since <= limit or -key in self._leaks_reported:
                continue
            self._leaks_reported[-key] = now
            self._count("leaks")
            logger.warning(
                "django_sapool: a checkout of alias %r in thread %r has been %s the "
                "server for %.1f s (LEAK_TIMEOUT=%g s): the server or the network is not "
                "answering (CONNECT_TIMEOUT=%s, PING_TIMEOUT=%s).",
                self.alias,
                thread.name,
                doing,
                now - since,
                limit,
                self.options.connect_timeout,
                self.options.ping_timeout,
            )
        stale = [key for key in self._leaks_reported if key < 0 and -key not in self._busy]
        for key in stale:
            self._leaks_reported.pop(key, None)
        for key, (_, _, thread, since, stack) in list(self._out.items()):
            if now - since <= limit or key in self._leaks_reported:
                continue
            self._leaks_reported[key] = now
            self._count("leaks")
            where = "".join(stack.format()) if stack is not None else "(unknown)\n"
            logger.warning(
                "django_sapool: possible connection leak: a connection of alias %r has been "
                "checked out by thread %r for %.1f s (LEAK_TIMEOUT=%g s). It was checked "
                "out at:\n%s",
                self.alias,
                thread.name,
                now - since,
                limit,
                where.rstrip("\n"),
            )

    def _leak_returned(self, record: Any, entry: tuple[Any, ...], now: float) -> None:
        self._leaks_reported.pop(id(record), None)
        logger.warning(
            "django_sapool: the connection of alias %r reported as a possible leak was "
            "returned by thread %r after %.1f s.",
            self.alias,
            entry[2].name,
            now - entry[3],
        )

    # -- lifecycle ------------------------------------------------------------

    def disarm_inherited(self) -> int:
        """In a forked child, point this (parent's) pool's sockets at /dev/null.

        The child's copies of the parent's sockets are the only way the child
        can hurt the parent's sessions: a driver's destructor (mysqlclient sends
        COM_QUIT, libpq a Terminate message) or a stray reset would go over
        them. Replacing the child's file descriptors with /dev/null makes every
        such write harmless, whatever runs at exit; the parent's own
        descriptors are untouched. Return how many sockets were disarmed.
        """
        if self.pid == os.getpid():
            return 0
        disarmed = 0
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for raw in list(self._raw.values()):
                fd = self.driver.socket_fd(raw)
                if fd is not None and fd >= 0:
                    os.dup2(devnull, fd)
                    disarmed += 1
        finally:
            os.close(devnull)
        return disarmed

    def has_connections(self) -> bool:
        """Return whether any raw connection this pool opened is still open."""
        return bool(self._raw)

    def evict(self, reason: str) -> int:
        """Retire every connection softly: idle ones now, checked-out ones when returned.

        HikariCP's ``softEvictConnections``: after a failover the sessions are on
        the old server, healthy but wrong. Checkouts in progress reconnect
        (SQLAlchemy's invalidation time). Return how many idle ones were closed.
        """
        with self._lock:
            self._evicted_at = time.time()
            self._closing_returns = True
            self._counters["evictions"] += 1
        self._pool._invalidate(None, None, _checkin=False)  # type: ignore[arg-type]
        victims = self._take_idle(None)
        self._close_idle(victims, swept=False)
        logger.warning(
            "django_sapool: retired every connection of alias %r (%s): %d idle closed now, "
            "%d checked out closed when returned",
            self.alias,
            reason,
            len(victims),
            len(self._out),
        )
        return len(victims)

    def dispose(self, reason: str = "dispose() was called") -> None:
        """Close idle connections; connections in use are closed when returned."""
        self.disposed = self._closing_returns = True
        self._pool.dispose()
        logger.info(
            "django_sapool: disposed pool for alias %r (%s): %s", self.alias, self.database, reason
        )

    def status(self) -> PoolStatus:
        """Return a snapshot: sizes now, counters, and the recent waits' percentiles."""
        pool = self._pool
        idle = pool.checkedin()
        checked_out = pool.checkedout()
        checkouts = self._checkouts()
        with self._lock:
            counters = dict(self._counters)
            waiting = self._waiting
            wait_ms_total = self._wait_ms_total
        # Copying a deque of floats runs in C without releasing the GIL, so a
        # concurrent append cannot interleave.
        window = sorted(self._wait_ms)
        busy = Counter(doing for _, doing, _ in list(self._busy.values()))
        return PoolStatus(
            alias=self.alias,
            vendor=self.vendor,
            database=self.database,
            pid=self.pid,
            pool_size=self.options.pool_size,
            max_overflow=self.options.max_overflow,
            size=idle + checked_out,
            checked_out=checked_out,
            idle=idle,
            overflow=max(0, pool.overflow()),
            connections_opened=counters["opened"],
            connections_closed=counters["closed"],
            connections_invalidated=counters["invalidated"],
            pings=counters["pings"],
            pings_failed=counters["pings_failed"],
            timeouts=counters["timeouts"],
            waiting=waiting,
            connections_recycled=counters["recycled"],
            checkouts=checkouts,
            checkout_waits=counters["checkout_waits"],
            wait_ms_total=round(wait_ms_total, 3),
            wait_ms_p50=round(percentile(window, 0.50), 3),
            wait_ms_p95=round(percentile(window, 0.95), 3),
            wait_ms_p99=round(percentile(window, 0.99), 3),
            wait_ms_max=round(window[-1] if window else 0.0, 3),
            connections_idle_closed=counters["idle_closed"],
            leaks=counters["leaks"],
            connecting=busy[CONNECTING],
            pinging=busy[PINGING],
            pings_timed_out=counters["pings_timed_out"],
            evictions=counters["evictions"],
        )
