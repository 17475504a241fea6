"""Pool statistics, declared once: :class:`PoolStatus` and what counts into it.

Each field of :class:`PoolStatus` carries its kind and, for Prometheus, its metric
name and help (``metadata``); ``prometheus.py`` and ``manage.py sapool --json``
read them from here, so a new counter is exported everywhere by being declared.
:class:`Stats` holds one pool's live counters and recent wait times.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .conf import PoolOptions

logger = logging.getLogger("django_sapool")
T = TypeVar("T")

#: How many of the most recent checkout waits the wait-time percentiles cover.
WAIT_WINDOW = 1024
#: Upper bounds (ms) of the wait-time histogram's buckets (Prometheus's
#: ``le``, in seconds there): a histogram, unlike percentiles, adds up across
#: worker processes.
WAIT_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

LABEL = "label"  # identifies the pool
GAUGE = "gauge"  # a size now
COUNTER = "counter"  # since the pool was created
WAIT = "wait"  # checkout wait times (a histogram and recent percentiles in Prometheus)


def _meta(kind: str, metric: str = "", help: str = "") -> Any:
    return field(metadata={"kind": kind, "metric": metric, "help": help})


def _label() -> Any:
    return _meta(LABEL)


def _gauge(metric: str, help: str) -> Any:
    return _meta(GAUGE, metric, help)


def _counter(metric: str, help: str) -> Any:
    return _meta(COUNTER, metric, help)


@dataclass(frozen=True)
class PoolStatus:
    """A snapshot of one pool. ``size`` counts open connections (idle + checked out).

    Counters run from the pool's creation. ``waiting`` is the number of threads
    waiting for a connection now; ``checkout_waits`` counts the checkouts that
    found the pool exhausted (no idle connection, no overflow left) and had to
    wait, and the ``wait_ms_*`` fields describe those waits (timed-out ones
    included): the total, percentiles over the last ``WAIT_WINDOW`` waits
    (0.0 while none has waited), and ``wait_ms_buckets``: how many waits took
    at most each bound of ``WAIT_BUCKETS_MS`` (cumulative, as Prometheus's
    buckets; :attr:`waits_ended` is the ``+Inf`` one). ``connecting`` and
    ``pinging`` count the checkouts talking to the server now; ``size``,
    ``checked_out`` and ``overflow`` count connections that exist, not those
    being opened.
    """

    alias: str = _label()
    vendor: str = _label()
    database: str = _label()
    pid: int = _meta("pid")
    #: Disposed of (``dispose()``, a settings change, a test database dropped):
    #: listed while connections it lent before are still out, which it closes
    #: when they are returned.
    disposed: bool = _meta("state")
    pool_size: int = _gauge("django_sapool_pool_size", "Configured POOL_SIZE.")
    max_overflow: int = _gauge(
        "django_sapool_pool_max_overflow", "Configured MAX_OVERFLOW (-1: no limit)."
    )
    size: int = _gauge("django_sapool_connections_open", "Open connections (idle + checked out).")
    checked_out: int = _gauge(
        "django_sapool_connections_checked_out", "Connections checked out now."
    )
    idle: int = _gauge("django_sapool_connections_idle", "Idle connections in the pool.")
    overflow: int = _gauge(
        "django_sapool_connections_overflow", "Connections open beyond POOL_SIZE."
    )
    connections_opened: int = _counter("django_sapool_connections_opened", "Connections opened.")
    connections_closed: int = _counter("django_sapool_connections_closed", "Connections closed.")
    connections_invalidated: int = _counter(
        "django_sapool_connections_invalidated", "Connections discarded as broken."
    )
    pings: int = _counter("django_sapool_pings", "Round-trip pings before a checkout.")
    pings_failed: int = _counter(
        "django_sapool_pings_failed", "Pings that found a dead connection."
    )
    timeouts: int = _counter(
        "django_sapool_checkout_timeouts", "Checkouts that waited TIMEOUT in vain."
    )
    waiting: int = _gauge("django_sapool_checkout_waiting", "Threads waiting for a connection now.")
    connections_recycled: int = _counter(
        "django_sapool_connections_recycled",
        "Connections replaced at checkout (RECYCLE exceeded, or retired after a dead one).",
    )
    checkouts: int = _counter("django_sapool_checkouts", "Connections handed out.")
    checkout_waits: int = _counter(
        "django_sapool_checkout_waits", "Checkouts that found the pool exhausted and waited."
    )
    wait_ms_total: float = _meta(WAIT)
    wait_ms_p50: float = _meta(WAIT)
    wait_ms_p95: float = _meta(WAIT)
    wait_ms_p99: float = _meta(WAIT)
    wait_ms_max: float = _meta(WAIT)
    wait_ms_buckets: tuple[int, ...] = _meta(WAIT)
    connections_idle_closed: int = _counter(
        "django_sapool_connections_idle_closed",
        "Idle connections closed (IDLE_TIMEOUT, or RECYCLE while idle).",
    )
    leaks: int = _counter(
        "django_sapool_leaks",
        "Checkouts reported by LEAK_TIMEOUT (held by the application, or stuck on the server).",
    )
    connecting: int = _gauge(
        "django_sapool_checkouts_connecting", "Checkouts opening a connection now."
    )
    pinging: int = _gauge("django_sapool_checkouts_pinging", "Checkouts pinging the server now.")
    pings_timed_out: int = _counter(
        "django_sapool_pings_timed_out", "Pings and resets that got no answer within PING_TIMEOUT."
    )
    evictions: int = _counter(
        "django_sapool_evictions", "Times every connection was retired (read-only server, evict())."
    )

    @property
    def waits_ended(self) -> int:
        """The waits that ended (with a connection or a timeout): the histogram's count.

        ``checkout_waits`` counts a wait when it starts, the buckets when it
        ends; :meth:`Stats.waited` moves a wait from ``waiting`` to its bucket
        under the lock a snapshot reads both with, so this is what the
        buckets hold, waits longer than the last bound included.
        """
        return self.checkout_waits - self.waiting


#: (metric, field, help) of every gauge and counter, in declaration order.
GAUGES = tuple(
    (f.metadata["metric"], f.name, f.metadata["help"])
    for f in fields(PoolStatus)
    if f.metadata["kind"] == GAUGE
)
COUNTERS = tuple(
    (f.metadata["metric"], f.name, f.metadata["help"])
    for f in fields(PoolStatus)
    if f.metadata["kind"] == COUNTER
)
#: The counters :class:`Stats` keeps in its dict (checkouts are counted apart).
COUNTED = tuple(name for _, name, _ in COUNTERS if name != "checkouts")


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of sorted values (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Stats:
    """One pool's counters and recent checkout waits."""

    __slots__ = (
        "counters",
        "checkout_seq",
        "_seq_reads",
        "waiting",
        "_wait_ms_total",
        "wait_ms",
        "_wait_buckets",
        "lock",
        "_labels",
    )

    def __init__(self, options: PoolOptions, **labels: Any) -> None:
        #: The fields of PoolStatus that never change (alias, pid, POOL_SIZE...).
        self._labels = {
            **labels,
            "pool_size": options.pool_size,
            "max_overflow": options.max_overflow,
        }
        # Reentrant: SQLAlchemy's "close" event may fire from a garbage-collected
        # connection's finalizer while this thread counts something.
        self.lock = threading.RLock()
        self.counters = dict.fromkeys(COUNTED, 0)
        # Checkouts are counted on the hot path without a lock: next() on an
        # itertools.count is one atomic C call. checkouts() reads the count by
        # drawing from it too, and subtracts its own draws (under the lock).
        self.checkout_seq = itertools.count()
        self._seq_reads = 0
        self.waiting = 0
        self._wait_ms_total = 0.0
        # deque.append with maxlen is atomic: waits are recorded without a lock.
        self.wait_ms: deque[float] = deque(maxlen=WAIT_WINDOW)
        # Waits per bucket of WAIT_BUCKETS_MS (not cumulative); the last one: longer.
        self._wait_buckets = [0] * (len(WAIT_BUCKETS_MS) + 1)

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] += 1

    def add(self, name: str, amount: int) -> None:
        with self.lock:
            self.counters[name] += amount

    def checkouts(self) -> int:
        """Return how many checkouts the pool has made."""
        with self.lock:
            count = next(self.checkout_seq) - self._seq_reads
            self._seq_reads += 1
        return count

    def waited(self, take: Callable[[], T], alias: str) -> T:
        """Return ``take()`` as a checkout that waits: count the waiting thread, time its wait.

        Timed-out waits count too.
        """
        with self.lock:
            self.waiting += 1
            self.counters["checkout_waits"] += 1
        started = time.perf_counter()
        try:
            return take()
        finally:
            waited_ms = (time.perf_counter() - started) * 1000.0
            self.wait_ms.append(waited_ms)
            with self.lock:
                self.waiting -= 1
                self._wait_ms_total += waited_ms
                self._wait_buckets[bisect.bisect_left(WAIT_BUCKETS_MS, waited_ms)] += 1
            logger.debug(
                "django_sapool: waited %.1f ms for a connection of alias %r "
                "(all POOL_SIZE + MAX_OVERFLOW connections were checked out)",
                waited_ms,
                alias,
            )

    def snapshot(self, **now: Any) -> PoolStatus:
        """Return a PoolStatus of these counters, the labels and ``now`` (sizes, busy counts)."""
        checkouts = self.checkouts()
        with self.lock:
            counters = dict(self.counters)
            waiting = self.waiting
            wait_ms_total = self._wait_ms_total
            buckets = tuple(itertools.accumulate(self._wait_buckets[:-1]))
        # Copying a deque of floats runs in C without releasing the GIL, so a
        # concurrent append cannot interleave.
        window = sorted(self.wait_ms)
        values: dict[str, Any] = {
            **self._labels,
            **now,
            **counters,
            "checkouts": checkouts,
            "waiting": waiting,
            "wait_ms_total": round(wait_ms_total, 3),
            "wait_ms_p50": round(percentile(window, 0.50), 3),
            "wait_ms_p95": round(percentile(window, 0.95), 3),
            "wait_ms_p99": round(percentile(window, 0.99), 3),
            "wait_ms_max": round(window[-1] if window else 0.0, 3),
            "wait_ms_buckets": buckets,
        }
        return PoolStatus(**values)
