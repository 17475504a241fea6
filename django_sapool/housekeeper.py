"""One daemon thread per process that housekeeps every pool: the only place that sweeps.

Every :func:`interval` seconds it closes idle connections (IDLE_TIMEOUT, RECYCLE
while idle) down to MIN_IDLE, reports leaks (LEAK_TIMEOUT) and disposes of pools
nobody used for longer than IDLE_TIMEOUT. The registry hands it each new pool; a
request's return never sweeps, so the hot path stays short.

Fork-safe: a thread does not survive ``fork()``; the child (``fork.py``) starts
its own thread when it creates its first pool, and never touches the parent's
pools.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from .state import IDLE, state_of

if TYPE_CHECKING:
    from ._sa import Record
    from .conf import PoolOptions
    from .pool import ManagedPool

logger = logging.getLogger("django_sapool")

_lock = threading.Lock()
_pools: weakref.WeakSet[ManagedPool] = weakref.WeakSet()
#: Wakes the thread up; made anew with each thread (register()).
_wake = threading.Event()
_thread: threading.Thread | None = None
_pid = 0
# Each pool's checkout count when the housekeeper last saw it change, and when.
_quiet: weakref.WeakKeyDictionary[ManagedPool, tuple[int, float]] = weakref.WeakKeyDictionary()


def interval(options: PoolOptions) -> float:
    """Return how often a pool needs housekeeping, in seconds (0.0: never)."""
    timeouts = [t for t in (options.idle_timeout, options.leak_timeout) if t]
    if options.recycle > 0:
        timeouts.append(options.recycle)
    return min(30.0, max(0.05, min(timeouts) / 4)) if timeouts else 0.0


def register(pool: ManagedPool) -> None:
    """Housekeep ``pool`` until it is garbage-collected; start the thread if needed."""
    global _thread, _pid, _wake
    if not interval(pool.options):
        return
    with _lock:
        _pools.add(pool)
        thread = _thread
        # A thread made but not started yet (no ident) is on its way.
        gone = thread is None or (thread.ident is not None and not thread.is_alive())
        if gone or _pid != os.getpid():
            _pid = os.getpid()
            # Made now, from the threading module as it is now: a gevent worker
            # patches it after fork, after a preloaded app made its pools, and a
            # greenlet waiting on an unpatched event blocks the whole worker.
            _wake = threading.Event()
            thread = _thread = threading.Thread(
                target=_run, name="django_sapool-housekeeper", daemon=True
            )
        else:
            _wake.set()  # a new pool may need a shorter interval
            thread = None
    if thread is not None:
        # Outside the lock: under gevent, start() runs the new greenlet at once,
        # and its sweep() takes the lock (a deadlock, with an unpatched lock).
        thread.start()


def _run() -> None:
    pid = os.getpid()
    while pid == os.getpid():
        interval = sweep(pid)
        _wake.wait(interval)
        _wake.clear()


def sweep(pid: int) -> float:
    """Housekeep every live pool of this process once; return the seconds to the next run.

    A pool unused for longer than IDLE_TIMEOUT is disposed of: MIN_IDLE keeps
    connections warm for traffic that comes back, not for an alias used once
    (a management command's, an old tenant's) or settings long gone.
    """
    from . import registry

    with _lock:
        pools = [p for p in _pools if p.pid == pid and not p.disposed]
    for pool in pools:
        try:
            if unused(pool, time.monotonic()):
                registry.retire(pool, "unused for longer than IDLE_TIMEOUT")
                continue
            housekeep(pool)
        except Exception:  # never let one pool's trouble stop the others
            logger.exception("django_sapool: housekeeping failed for alias %r", pool.alias)
    return min((interval(p.options) for p in pools), default=30.0)


def housekeep(pool: ManagedPool, now: float | None = None) -> int:
    """Close a pool's idle connections beyond MIN_IDLE, and report leaks; return how many closed.

    An idle connection is closed when it is older than RECYCLE (its record
    connects again at its next checkout: a recycle), or has been idle longer
    than IDLE_TIMEOUT as long as at least MIN_IDLE idle connections stay open;
    connections in use are never touched.
    """
    if now is None:
        now = time.monotonic()
    if pool.disposed or pool.pid != os.getpid():
        return 0
    options = pool.options
    # Remembered connections (remembered.py) are idle too: those unused since
    # the last pass go back to the queue, where the sweep below sees them.
    pool.remembered.give_back_idle(interval(options), now)
    if options.leak_timeout:
        hint = f"CONNECT_TIMEOUT={options.connect_timeout}, PING_TIMEOUT={options.ping_timeout}"
        leaks = pool.lending.report(now, options.leak_timeout, hint)
        if leaks:
            pool.stats.add("leaks", leaks)
    recycled = pool.retirement.recycle_idle(lambda live: expired(live, now))
    # Those still remembered (used since the last pass) count towards MIN_IDLE.
    remembered = len(pool.remembered)
    closed = recycled + pool.retirement.close_idle(
        lambda live: idle_victims(live, now, options, remembered), IDLE
    )
    if closed:
        logger.info(
            "django_sapool: closed %d idle connection(s) of alias %r (IDLE_TIMEOUT=%s, "
            "RECYCLE=%s, MIN_IDLE=%d)",
            closed,
            pool.alias,
            options.idle_timeout,
            options.recycle,
            options.min_idle,
        )
    return closed


def idle_victims(
    live: list[Record], now: float, options: PoolOptions, also_idle: int = 0
) -> list[Record]:
    """Pick the idle connections to close, least recently used first.

    ``also_idle``: idle connections kept elsewhere (remembered), counted for MIN_IDLE.
    """
    idle_timeout = options.idle_timeout
    spare = len(live) + also_idle - options.min_idle
    victims: list[Record] = []
    for record in sorted(live, key=lambda r: state_of(r).last_used):
        if spare <= 0:
            break
        state = state_of(record)
        if idle_timeout is not None and now - state.last_used > idle_timeout:
            victims.append(record)
            spare -= 1
    return victims


def expired(live: list[Record], now: float) -> list[Record]:
    """Pick the idle connections older than RECYCLE, whatever MIN_IDLE says.

    Their next checkout would replace them anyway, and RECYCLE bounds how
    long a session lives on the server (a revoked password, a server to drain).
    """
    return [record for record in live if now >= state_of(record).expires]


def unused(pool: ManagedPool, now: float) -> bool:
    """Return whether nothing used a pool for longer than IDLE_TIMEOUT (dispose of it).

    A pool is quiet while its checkout count does not change, which costs the
    hot path nothing.
    """
    idle_timeout = pool.options.idle_timeout
    if idle_timeout is None:
        return False
    checkouts = pool.stats.checkouts()
    seen, since = _quiet.get(pool, (-1, now))
    if checkouts != seen or pool.lending.lent or pool.lending.busy:
        _quiet[pool] = (checkouts, now)
        return False
    return now - since > idle_timeout


def forget_in_child() -> None:
    """After fork, in the child (``fork.py``): the thread is gone; pools are the parent's.

    A no-op in the process whose thread runs: ``after_fork()`` may be called
    where nothing was forked (a worker hook after the app already queried),
    and this process's pools must go on being housekept.
    """
    global _thread, _pools, _quiet, _lock
    if _thread is not None and _pid == os.getpid():
        return
    _thread = None  # register() starts one, with an event of its own
    _quiet = weakref.WeakKeyDictionary()
    _pools = weakref.WeakSet()
    # The parent's thread may have held it at fork(): held for ever in the child.
    _lock = threading.Lock()
