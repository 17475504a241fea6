"""The life of a pooled connection: born, lent, returned, retired.

One :class:`ManagedPool` per Django alias, connect settings and process (see
``registry.py``). Each step of a connection's life is one function:

- **born**: :meth:`OpenConnections.create` opens it (SQLAlchemy's creator, within
  CONNECT_TIMEOUT) and :meth:`OpenConnections.born` gives it its state (``opened.py``);
- **lent**: :meth:`ManagedPool.checkout` (checked by ``validation.py`` first);
  the connection its borrower returned last, when nobody took it meanwhile
  (``remembered.py``), or one from SQLAlchemy's queue;
- **returned**: :meth:`ManagedPool.checkin` (reset by ``validation.py``), then
  remembered for its borrower, or given back to the queue;
- **retired**: :meth:`Retirement.retire` (``retirement.py``, the pool's
  ``retire``), through which every close the pool makes goes, with its reason.

The rooms around it: ``_sa.py`` (the SQLAlchemy adapter), ``validation.py``,
``opened.py``, ``retirement.py``, ``remembered.py`` (the fast path), ``state.py``
(per connection), ``stats.py`` (counters), ``leaks.py`` (who holds what),
``deadline.py`` (round trips with a deadline), ``housekeeper.py`` (idle connections,
leaks, unused pools).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection
from typing import Any

from ._sa import Record, SaPool, Timeout, give_back
from .conf import PoolOptions
from .drivers import DriverOps
from .errors import PoolExhausted, ServerSilent
from .leaks import CONNECTING, PINGING, Lending, checkout_stack
from .opened import OpenConnections, PoolDisposed, checking_out
from .remembered import Remembered
from .retirement import Retirement
from .state import BROKEN, EVICTED, EXPIRED, RETIRED, STATE, ConnState
from .stats import PoolStatus, Stats
from .validation import Validation

logger = logging.getLogger("django_sapool")

#: While a checkout waits, how often it looks for connections that threads
#: ended without returning (seconds).
RECLAIM_EVERY = 0.5

_DEBUG = logging.DEBUG
#: The logger's own cache of isEnabledFor() answers, which logging clears in
#: place whenever levels change: False there means "not at DEBUG" for the
#: price of a dict lookup, on every checkout and return; anything else asks.
_known_levels: dict[int, bool] = getattr(logger, "_cache", {})


class ManagedPool:
    """A QueuePool of raw DBAPI connections for one Django alias in one process.

    The pool never holds connect parameters: ``creator`` is asked for a new raw
    connection only from inside :meth:`checkout`, and it is the checking-out
    wrapper's own Django ``get_new_connection`` (see ``wrapper.py``).
    """

    # Slots: a little faster than an instance dict on the hot path
    # (benchmarks/instructions.py sm), and CPython 3.11 stops specialising
    # attribute reads of an instance dict past 30 keys: keep that in mind.
    # fmt: off
    __slots__ = (
        "alias", "vendor", "database", "options", "driver", "pid", "disposed", "stats",
        "lending", "opened", "validation", "retirement", "retire", "_sa", "_lent",
        "_leaks_reported", "_checkout_seq", "_attempts", "_unfit", "_leak_timeout",
        "_wait_limit", "_idle", "_evicted_at", "_closing_returns", "remembered",
        "_by_owner", "_reclaim_lock", "_reclaiming", "__weakref__",
    )
    # fmt: on

    def __init__(
        self,
        *,
        alias: str,
        vendor: str,
        database: str,
        options: PoolOptions,
        driver: DriverOps,
        creator: Callable[[Any], Any],
        tune_sockets: bool = True,
    ) -> None:
        self.alias = alias
        self.vendor = vendor
        self.database = database
        self.options = options
        self.driver = driver
        self.pid = os.getpid()
        self.disposed = False
        self.stats = stats = Stats(
            options, alias=alias, vendor=vendor, database=database, pid=self.pid
        )
        self.lending = Lending(alias)
        self.opened = OpenConnections(
            alias, options, driver, creator, self.lending.busy, stats, tune_sockets
        )
        self.validation = Validation(alias, options, driver, self.lending.busy, stats.count)
        # Hot-path copies.
        self._unfit = self.validation.unfit
        self._lent = self.lending.lent
        self._leaks_reported = self.lending.reported
        self._checkout_seq = stats.checkout_seq
        self._attempts = options.pool_size + max(options.max_overflow, 0) + 1
        self._leak_timeout = options.leak_timeout
        # time.time() of the last evict(): connections opened before it are
        # closed when returned (SQLAlchemy reconnects them at checkout).
        self._evicted_at = 0.0
        # Set once disposed or evicted: checkin() then tests the two (one
        # attribute read on the hot path until then).
        self._closing_returns = False
        # One thread at a time looks for ended borrowers while checkouts wait (_wait).
        self._reclaim_lock = threading.Lock()
        self._reclaiming = False
        self._sa = SaPool(
            self.opened.create,
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
        self.remembered = Remembered(self._sa, options.pool_size, options.use_lifo)
        self._by_owner = self.remembered.by_owner
        self.retirement = Retirement(alias, self._sa, stats, self.remembered)
        self.retire = self.retirement.retire
        self.opened.listen(self._sa, lambda: self.disposed)

    def __repr__(self) -> str:
        return (
            f"<ManagedPool alias={self.alias!r} vendor={self.vendor!r} "
            f"database={self.database!r} pid={self.pid} {self._sa.status()}>"
        )

    # -- lent -------------------------------------------------------------------

    def checkout(self, owner: weakref.ref[Any] | None = None, job: Any = None) -> Record:
        """Return a live pooled connection's record, or raise PoolExhausted after TIMEOUT.

        SQLAlchemy's records without its per-checkout proxy: the Django wrapper
        holds the record until it returns it. ``owner``, a weak reference to the
        wrapper, is kept in the state so that its callback (``registry.owner_gone``)
        returns the connection of a wrapper garbage-collected without closing it.
        ``job``: what the creator is given if a connection must be opened.
        """
        # The fast path: what this borrower returned last, unless stolen. A
        # remembered connection is never older than a pool-wide invalidation
        # (evict() and a broken connection take them all back first), so only
        # its age, the driver's flag and its socket need a look, as below.
        record: Record = self._by_owner.pop(owner, None)
        if record is not None:
            state: ConnState = record.info[STATE]
            now = time.monotonic()
            if now < state.expires and self.validation.trusted(state, now):
                # _lend(), but its owner and thread are those of its last
                # checkout: the same wrapper, which Django keeps to one thread.
                state.lent_at = now
                state.stack = checkout_stack() if self._leak_timeout else None
                self._lent[id(record)] = record
                next(self._checkout_seq)
                if _known_levels.get(_DEBUG, True) and logger.isEnabledFor(_DEBUG):
                    self.lending.log_checkout(state.thread, len(self._idle))
                return record
        elif not self._idle and self._by_owner:
            # Nothing of its own, nothing in the queue: what another borrower
            # returned (as _take() would), lent on the same three checks.
            record = self.remembered.steal()
            if record is not None:
                state = record.info[STATE]
                now = time.monotonic()
                if now < state.expires and self.validation.trusted(state, now):
                    return self._lend(record, state, owner, now)
        checking_out.job = job
        try:
            return self._checkout(owner, record)
        finally:
            checking_out.job = None

    def _checkout(self, owner: weakref.ref[Any] | None, record: Record | None) -> Record:
        """Check out the long way: ``record`` (remembered, not trusted) or one from the queue."""
        # After a ping of this checkout went unanswered, a connection idle since
        # then is replaced rather than pinged: its path is likely dead too, and
        # one unanswered ping per checkout keeps the bound PING_TIMEOUT.
        silent_since = 0.0  # monotonic time of the unanswered ping; 0.0: none yet
        for _ in range(self._attempts):
            if record is None:
                began = time.monotonic()
                record = self._take()
                if self.disposed:
                    # Disposed while this checkout waited (dispose(), a settings
                    # change, a test database dropped): it opens nothing more,
                    # and the record goes on to the next waiter, which moves too.
                    self._give_up(record)
                    raise PoolDisposed(self.alias, began + self.options.timeout)
            raw = self._reconnect(record)
            state: ConnState = record.info[STATE]
            now = time.monotonic()
            if now >= state.expires or (silent_since and state.last_used < silent_since):
                # Older than RECYCLE (minus its jitter): replace it now.
                self.retire(record, EXPIRED)
                raw = self._reconnect(record)
                state = record.info[STATE]
            try:
                unfit = self._unfit(raw, state, now)
            except ServerSilent as silent:
                self.retire(record, BROKEN, silent)
                silent_since = time.monotonic()
                record = None
                continue
            if unfit is not None:
                self.retire(record, BROKEN, unfit)
                record = None
                continue
            return self._lend(record, state, owner, now)
        raise PoolExhausted(
            f"django_sapool: could not get a working connection for alias {self.alias!r} "
            f"after {self._attempts} attempts; every pooled connection failed its ping."
        )

    def _lend(
        self, record: Record, state: ConnState, owner: weakref.ref[Any] | None, now: float
    ) -> Record:
        """Note who holds a connection fit to lend, and since when; return it."""
        state.owner = owner
        thread = state.thread = threading.current_thread()
        state.lent_at = now
        state.stack = checkout_stack() if self._leak_timeout else None
        self._lent[id(record)] = record
        next(self._checkout_seq)
        if _known_levels.get(_DEBUG, True) and logger.isEnabledFor(_DEBUG):
            self.lending.log_checkout(thread, len(self._idle))
        return record

    def _take(self) -> Record:
        """Take a connection from the queue, or a remembered one before opening or waiting."""
        sa = self._sa
        if not self._idle and self._by_owner:
            record = self.remembered.steal()
            if record is not None:
                return record
        limit = self._wait_limit
        try:
            if limit < 0:  # no MAX_OVERFLOW: SQLAlchemy never waits
                return sa.take()
            if not self._idle and sa.overflow_now(sa) >= limit:
                # About to wait: first get back what ended threads left checked out.
                if not (self.lending.reclaim_from_ended_threads() and self._idle):
                    return self.remembered.wait(self._wait)
            # SQLAlchemy waits after all when another thread takes the idle
            # connection, or the last overflow slot, first: take as a waiter, so
            # that a connection returned meanwhile goes to the queue rather than
            # into its borrower's memory, where this thread would never see it.
            return self.remembered.wait(sa.take, queue_first=True)
        except Timeout:
            self.stats.count("timeouts")
            raise PoolExhausted(self.lending.exhausted_message(self.options)) from None
        except Exception:
            # A new connection failed to open (the server down, a bad password):
            # a checkout waiting meanwhile tries its own now, not after TIMEOUT.
            if self.remembered.waiting:
                sa.hand_over_slot()
            raise

    def _give_up(self, record: Record) -> None:
        """Give back a record taken but not lent: closed if it holds a connection."""
        if record.dbapi_connection is not None:
            self.retire(record, RETIRED)
        else:
            give_back(record)

    def _wait(self) -> Record:
        """Wait in SQLAlchemy's queue (up to TIMEOUT), while a thread looks for ended borrowers.

        Called registered as waiting (``Remembered.wait``). A thread that ends
        holding a connection leaves it in reference cycles, which only the
        garbage collector breaks (``reclaim_from_ended_threads``): a borrower
        that ends after the wait began must not make it last until TIMEOUT.
        The waits themselves stay whole, in the queue's order (first come,
        first served).
        """
        with self._reclaim_lock:
            start = not self._reclaiming
            self._reclaiming = True
        if start:
            threading.Thread(
                target=self._reclaim_while_waiting,
                name=f"django_sapool-reclaim-{self.alias}",
                daemon=True,
            ).start()
        return self.stats.waited(self._sa.take, self.alias)

    def _reclaim_while_waiting(self) -> None:
        """Every RECLAIM_EVERY s while checkouts wait, get back what ended threads hold."""
        try:
            while True:
                time.sleep(RECLAIM_EVERY)
                with self._reclaim_lock:
                    if not self.remembered.waiting or self.disposed:
                        self._reclaiming = False
                        return
                self.lending.reclaim_from_ended_threads()
        except BaseException:
            with self._reclaim_lock:
                self._reclaiming = False
            raise

    def _reconnect(self, record: Record) -> Any:
        """Connect a record again; if that fails, give it back as SQLAlchemy does."""
        try:
            return self._sa.connection(record)
        except BaseException as err:
            self._sa.connect_failed(record, err)
            raise

    # -- returned ---------------------------------------------------------------

    def checkin(
        self, record: Record, suspect: bool = False, iterator_cursors: Collection[Any] | None = None
    ) -> None:
        """Reset a connection per RESET_ON_RETURN and return it; discard it if broken.

        ``suspect``: a database error happened on it (Django's ``errors_occurred``).
        ``iterator_cursors``: the checkout's ``QuerySet.iterator()`` cursors, closed first
        (``Validation.close_cursors``).
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
        if iterator_cursors:
            try:
                self.validation.close_cursors(raw, iterator_cursors)
            except ServerSilent as silent:
                self.retire(record, BROKEN, silent)
                return
        # The common case costs one question to the connection's flags: open,
        # no transaction.
        if suspect or self.validation.resets_session or not state.flags.clean():
            try:
                self.validation.reset(raw, state, suspect)
            except Exception as exc:
                # A reset refused by a server that answered, on a connection its
                # driver still calls open (a deferred constraint failing the
                # COMMIT of RESET_ON_RETURN "commit"), says nothing about the
                # other connections: this one alone is closed.
                alone = not isinstance(exc, ServerSilent) and not state.flags.is_closed()
                self.retire(record, BROKEN, exc, alone=alone)
                return
        state.last_used = time.monotonic()
        if self._closing_returns and (
            self.disposed or SaPool.opened_at(record) <= self._evicted_at
        ):
            # Disposed while this one was checked out (test database dropped,
            # dispose() called), or retired by evict(): close it now.
            self.retire(record, RETIRED)
            return
        owner = state.owner
        if owner is not None and self.remembered.keep(owner, record):
            if _known_levels.get(_DEBUG, True) and logger.isEnabledFor(_DEBUG):
                self.lending.log_return(state.thread, len(self._idle) + len(self._by_owner))
            return
        if self.disposed:  # meanwhile
            self.retire(record, RETIRED)
            return
        self.remembered.give_back(record)
        if _known_levels.get(_DEBUG, True) and logger.isEnabledFor(_DEBUG):
            self.lending.log_return(state.thread, len(self._idle))
        if self.remembered.waiting:
            # It went to a checkout waiting in SQLAlchemy's queue, whose wait
            # ends when it gets the queue's lock and the GIL back: let it now.
            # Else this thread's next checkout takes it from the queue first,
            # and so on: with more threads than connections, a waiter could
            # wait until TIMEOUT while connections change hands thousands of
            # times a second (benchmarks/contention.py --timeout 0.5).
            time.sleep(0)

    # -- retired ----------------------------------------------------------------

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
        self.remembered.give_back_idle(0.0, 0.0)
        closed = self.retirement.close_idle(list, EVICTED)
        logger.warning(
            "django_sapool: retired every connection of alias %r (%s): %d idle closed now, "
            "%d checked out closed when returned",
            self.alias,
            reason,
            closed,
            len(self._lent),
        )
        return closed

    def dispose(self, reason: str = "dispose() was called") -> None:
        """Close idle connections; connections in use are closed when returned."""
        self.disposed = self._closing_returns = self.remembered.closed = True
        for record in self.remembered.take():
            self.retire(record, RETIRED)
        self._sa.dispose()
        if self.remembered.waiting:
            # Wake the checkouts waiting here: an empty record, which each one
            # hands on to the next as it moves to the alias's new pool (_checkout).
            self._sa.hand_over_slot()
        logger.info(
            "django_sapool: disposed pool for alias %r (%s): %s", self.alias, self.database, reason
        )

    def status(self) -> PoolStatus:
        """Return a snapshot: sizes now, counters, and the recent waits' percentiles."""
        sa = self._sa
        busy = self.lending.counts()
        if self.disposed:
            # SQLAlchemy's dispose() starts its count afresh; what is still out
            # is what this pool lent and was not given back (closed when it is).
            lent = list(self._lent.values())  # copied in one C call: others lend and return
            idle, checked_out = 0, sum(r.dbapi_connection is not None for r in lent)
        else:
            # SQLAlchemy counts a remembered connection as checked out; it is idle.
            # It also counts a record as checked out from the start of its connect,
            # which may wait up to CONNECT_TIMEOUT on a silent server: no connection
            # exists yet. (Both counts are read without SQLAlchemy's lock: a connect
            # ending meanwhile must not make the difference negative.)
            remembered = len(self._by_owner)
            idle = sa.idle_open() + remembered
            checked_out = max(0, sa.checkedout() - remembered - busy[CONNECTING])
        size = idle + checked_out
        return self.stats.snapshot(
            disposed=self.disposed,
            size=size,
            checked_out=checked_out,
            idle=idle,
            # Not SQLAlchemy's overflow: that counts the slots taken, connecting
            # ones and the empty records of closed connections (evict(), a
            # retire at return) included, until their slot is freed.
            overflow=max(0, size - self.options.pool_size),
            connecting=busy[CONNECTING],
            pinging=busy[PINGING],
        )
