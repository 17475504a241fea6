"""One SQLAlchemy QueuePool for one alias and connect fingerprint, plus what Django needs."""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from .conf import RESET_COMMIT, RESET_SESSION, PoolOptions
from .drivers import DriverOps
from .errors import PoolExhausted

logger = logging.getLogger("django_sapool")

#: ``info`` keys, stored per raw DBAPI connection (they vanish with it).
LAST_USED = "django_sapool.last_used"
INITIALIZED = "django_sapool.initialized"
#: Marks a healthy connection closed only because its pool was disposed.
RETIRED = "django_sapool.retired"
#: Marks a connection being invalidated (broken), between the two events that say so.
INVALIDATING = "django_sapool.invalidating"

#: How many of the most recent checkout waits the wait-time percentiles cover.
WAIT_WINDOW = 1024

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

    def __init__(
        self,
        *,
        alias: str,
        vendor: str,
        database: str,
        options: PoolOptions,
        driver: DriverOps,
        creator: Callable[[], Any],
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
        self._out: dict[int, tuple[PoolProxiedConnection, Any, str]] = {}
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
            ),
            0,
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
            creator,
            pool_size=options.pool_size,
            max_overflow=options.max_overflow,
            timeout=options.timeout,
            recycle=options.recycle,  # type: ignore[arg-type]
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

    def __repr__(self) -> str:
        return (
            f"<ManagedPool alias={self.alias!r} vendor={self.vendor!r} "
            f"database={self.database!r} pid={self.pid} {self._pool.status()}>"
        )

    # -- events ---------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        record.info[LAST_USED] = time.monotonic()
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
                if not self.disposed:
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

    def checkout(self, owner: weakref.ref[Any] | None = None) -> PoolProxiedConnection:
        """Return a live pooled connection, or raise PoolExhausted after TIMEOUT.

        ``owner`` is a weak reference to the Django wrapper, whose callback calls
        :meth:`return_abandoned` if the wrapper is garbage-collected with the
        connection still checked out (its thread ended without closing it). The
        entry keeps the weak reference alive so that its callback fires.
        """
        options = self.options
        pool = self._pool
        limit = self._wait_limit
        # Enough attempts to get past every stale connection the pool may hold.
        attempts = options.pool_size + max(options.max_overflow, 0) + 1
        for _ in range(attempts):
            try:
                if limit >= 0 and pool._overflow >= limit and not self._idle:
                    proxy = self._connect_waiting()
                else:
                    proxy = pool.connect()
            except sa_exc.TimeoutError:
                self._count("timeouts")
                raise PoolExhausted(self.exhausted_message()) from None
            if self._usable(proxy):
                thread_name = threading.current_thread().name
                self._out[id(proxy)] = (proxy, owner, thread_name)
                next(self._checkout_seq)
                if logger.isEnabledFor(_DEBUG):
                    logger.debug(
                        "django_sapool: checked out a connection of alias %r in thread %r "
                        "(%d checked out, %d idle)",
                        self.alias,
                        thread_name,
                        pool.checkedout(),
                        pool.checkedin(),
                    )
                return proxy
        raise PoolExhausted(
            f"django_sapool: could not get a working connection for alias {self.alias!r} "
            f"after {attempts} attempts; every pooled connection failed its ping."
        )

    def _connect_waiting(self) -> PoolProxiedConnection:
        """Check out of an exhausted pool: count the waiting thread and time its wait."""
        with self._lock:
            self._waiting += 1
            self._counters["checkout_waits"] += 1
        started = time.perf_counter()
        try:
            return self._pool.connect()
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

    def _usable(self, proxy: PoolProxiedConnection) -> bool:
        """Check a connection before handing it out, with a round trip only if needed.

        A connection used within PRE_PING_INTERVAL seconds, whose socket has
        nothing to read, is trusted as HikariCP does; a dead server that closed
        the socket makes it readable, so restarts and killed backends are still
        caught at no cost. After a longer idle time a real ping is made.
        """
        raw = proxy.dbapi_connection
        driver = self.driver
        if driver.is_closed(raw):
            self._discard(proxy, None)
            return False
        if not self.options.pre_ping or not driver.networked:
            return True
        idle_for = time.monotonic() - proxy.info.get(LAST_USED, 0.0)
        if idle_for <= self.options.pre_ping_interval and not driver.socket_has_news(raw):
            return True
        self._count("pings")
        try:
            driver.ping(raw)
        except Exception as exc:
            self._count("pings_failed")
            self._discard(proxy, exc)
            return False
        return True

    def _discard(self, proxy: PoolProxiedConnection, exc: BaseException | None) -> None:
        """Close a dead connection, and retire every older one on its next checkout.

        A dead connection usually means a restarted or failed-over server, which
        killed its siblings too: SQLAlchemy's invalidation timestamp makes the
        pool reconnect those lazily instead of failing once per connection.
        """
        invalidate_all = getattr(self._pool, "_invalidate", None)
        if invalidate_all is not None:
            invalidate_all(proxy, exc)  # type: ignore[arg-type]
        else:  # pragma: no cover - SQLAlchemy removed the private hook
            proxy.invalidate(exc)  # type: ignore[arg-type]

    def exhausted_message(self) -> str:
        o = self.options
        overflow = "unlimited" if o.max_overflow < 0 else str(o.max_overflow)
        return (
            f"django_sapool: no connection for alias {self.alias!r} became free within "
            f"TIMEOUT={o.timeout:g}s; all POOL_SIZE={o.pool_size} + "
            f"MAX_OVERFLOW={overflow} connections are checked out. Raise POOL_SIZE or "
            f"MAX_OVERFLOW in settings.DATABASES[{self.alias!r}]['POOL_OPTIONS'] (mind "
            f"the server's max_connections), raise TIMEOUT, or make sure threads "
            f"return connections (django.db.close_old_connections())."
        )

    def return_abandoned(self, owner: weakref.ref[Any]) -> int:
        """Return the connections of a garbage-collected wrapper; return how many."""
        if self.pid != os.getpid():
            return 0  # inherited through fork: the parent owns them
        abandoned = [entry for entry in list(self._out.values()) if entry[1] is owner]
        for proxy, _, thread_name in abandoned:
            logger.warning(
                "django_sapool: a connection of alias %r checked out by thread %r was "
                "never returned (the thread ended without connection.close() or "
                "close_old_connections()); returning it to the pool.",
                self.alias,
                thread_name,
            )
            self.checkin(proxy)
        return len(abandoned)

    # -- checkin --------------------------------------------------------------

    def checkin(self, proxy: PoolProxiedConnection) -> None:
        """Reset a connection per RESET_ON_RETURN and return it; discard it if broken."""
        entry = self._out.pop(id(proxy), None)
        if entry is None:
            return  # already returned
        raw = proxy.dbapi_connection
        if raw is None:  # already invalidated
            proxy.close()
            return
        try:
            if self.driver.is_closed(raw):
                raise ConnectionError("connection closed")
            self._reset(raw, proxy.info)
        except Exception as exc:
            self._discard(proxy, exc)
            return
        proxy.info[LAST_USED] = time.monotonic()
        if self.disposed:
            # Disposed while this one was checked out (test database dropped,
            # dispose() called): don't let it linger in a pool nobody uses.
            proxy.info[RETIRED] = True
            proxy.invalidate()
            return
        proxy.close()
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "django_sapool: returned a connection of alias %r checked out in thread %r "
                "(%d checked out, %d idle)",
                self.alias,
                entry[2],
                self._pool.checkedout(),
                self._pool.checkedin(),
            )

    def _reset(self, raw: Any, info: dict[str, Any]) -> None:
        options = self.options
        in_transaction = self.driver.in_transaction(raw)
        # Never hand out an open transaction, whatever the mode; a driver that
        # can tell (psycopg, sqlite3) saves the round trip when none is open.
        if in_transaction or (in_transaction is None and options.reset_on_return):
            self.driver.end_transaction(raw, commit=options.reset_on_return == RESET_COMMIT)
        query = options.reset_query
        if query or options.reset_on_return == RESET_SESSION:
            if query:
                self.driver.execute(raw, query)
            else:
                self.driver.strict_reset(raw)
            # That undid Django's session setup (time zone, role, isolation
            # level, sql_mode): redo it at the next checkout.
            info.pop(INITIALIZED, None)

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

    def dispose(self) -> None:
        """Close idle connections; connections in use are closed when returned."""
        self.disposed = True
        self._pool.dispose()
        logger.info("django_sapool: disposed pool for alias %r (%s)", self.alias, self.database)

    def status(self) -> PoolStatus:
        """Return a snapshot: sizes now, counters, and the recent waits' percentiles."""
        pool = self._pool
        idle = pool.checkedin()
        checked_out = pool.checkedout()
        with self._lock:
            counters = dict(self._counters)
            checkouts = next(self._checkout_seq) - self._checkout_seq_reads
            self._checkout_seq_reads += 1
            waiting = self._waiting
            wait_ms_total = self._wait_ms_total
        # Copying a deque of floats runs in C without releasing the GIL, so a
        # concurrent append cannot interleave.
        window = sorted(self._wait_ms)
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
        )
