"""One daemon thread per process that housekeeps every pool: the only place that sweeps.

Every ``housekeeping_interval`` seconds it closes idle connections (IDLE_TIMEOUT,
RECYCLE while idle), reports leaks (LEAK_TIMEOUT) and disposes of pools nobody
used for longer than IDLE_TIMEOUT. The registry hands it each new pool; a
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

if TYPE_CHECKING:
    from .pool import ManagedPool

logger = logging.getLogger("django_sapool")

_lock = threading.Lock()
_pools: weakref.WeakSet[ManagedPool] = weakref.WeakSet()
_wake = threading.Event()
_thread: threading.Thread | None = None
_pid = 0


def register(pool: ManagedPool) -> None:
    """Housekeep ``pool`` until it is garbage-collected; start the thread if needed."""
    global _thread, _pid
    with _lock:
        _pools.add(pool)
        if _thread is None or _pid != os.getpid() or not _thread.is_alive():
            _pid = os.getpid()
            _thread = threading.Thread(target=_run, name="django_sapool-housekeeper", daemon=True)
            _thread.start()
        else:
            _wake.set()  # a new pool may need a shorter interval


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
            if pool.unused(time.monotonic()):
                registry.retire(pool, "unused for longer than IDLE_TIMEOUT")
                continue
            pool.housekeep()
        except Exception:  # never let one pool's trouble stop the others
            logger.exception("django_sapool: housekeeping failed for alias %r", pool.alias)
    return min((p.housekeeping_interval for p in pools), default=30.0)


def forget_in_child() -> None:
    """After fork, in the child (``fork.py``): the thread is gone; pools are the parent's."""
    global _thread, _pools, _wake
    _thread = None
    _pools = weakref.WeakSet()
    _wake = threading.Event()
