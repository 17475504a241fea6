"""One SQLAlchemy QueuePool for one alias and connect fingerprint, plus what Django needs."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
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


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of one pool. ``size`` counts open connections (idle + checked out)."""

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
        self._lock = threading.Lock()
        # Checked-out connections by id of the proxy: (proxy, weak reference to
        # the owning wrapper, thread name). Strong references: a connection must
        # never be garbage-collected behind our back (after a fork the driver's
        # destructor would close the parent's session).
        self._out: dict[int, tuple[PoolProxiedConnection, Any, str]] = {}
        self._counters = dict.fromkeys(
            ("opened", "closed", "invalidated", "pings", "pings_failed", "timeouts"), 0
        )
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
        self._count("opened")

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        self._raw.pop(id(dbapi_connection), None)
        self._count("closed")

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        self._raw.pop(id(dbapi_connection), None)

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        if record is not None and record.info.pop(RETIRED, False):
            # Not broken: it came back to a disposed pool and is closed on purpose
            # (the "close" event still counts it).
            logger.debug("django_sapool: closed a connection of disposed pool %r", self.alias)
            return
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
        # Enough attempts to get past every stale connection the pool may hold.
        attempts = options.pool_size + max(options.max_overflow, 0) + 1
        for _ in range(attempts):
            try:
                proxy = self._pool.connect()
            except sa_exc.TimeoutError:
                self._count("timeouts")
                raise PoolExhausted(self.exhausted_message()) from None
            if self._usable(proxy):
                self._out[id(proxy)] = (proxy, owner, threading.current_thread().name)
                return proxy
        raise PoolExhausted(
            f"django_sapool: could not get a working connection for alias {self.alias!r} "
            f"after {attempts} attempts; every pooled connection failed its ping."
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
        if self._out.pop(id(proxy), None) is None:
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
        pool = self._pool
        idle = pool.checkedin()
        checked_out = pool.checkedout()
        with self._lock:
            counters = dict(self._counters)
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
        )
