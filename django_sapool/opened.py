"""Where connections are born: opened, given their state, kept while open, counted.

:class:`OpenConnections` is SQLAlchemy's creator and "connect" listener for one
pool. It opens a server connection within CONNECT_TIMEOUT (showing the checkout
as connecting meanwhile) and tunes its socket, gives it its :class:`ConnState`,
and keeps every open raw connection so that a forked child can disarm the
parent's sockets (``registry.py``). SQLAlchemy reconnects a connection record in
place (RECYCLE exceeded, or retired by a pool-wide invalidation), so a connect is
either a new connection or a recycle of a record closed earlier: it counts both.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from . import tcp
from .conf import PoolOptions
from .drivers import DriverOps
from .leaks import CONNECTING, Busy
from .state import BROKEN, EVICTED, IDLE, RETIRED, STATE, ConnState
from .stats import Stats

logger = logging.getLogger("django_sapool")

#: ``.job``: what the checkout in progress in this thread gives the creator of
#: a new connection (the Django wrapper checking out, see ``wrapper.py``).
#: Set by ``ManagedPool`` around the steps that may connect, and only there:
#: a checkout of a remembered connection never connects, and sets nothing.
checking_out = threading.local()


class PoolDisposed(Exception):
    """The pool was disposed while a checkout waited in it: check out of the alias's new one.

    Raised to the wrapper (``sapool_checkout``), which looks its pool up again
    and waits there until ``wait_ends`` (monotonic) at most: TIMEOUT counts
    from the first wait.
    """

    def __init__(self, alias: str, wait_ends: float) -> None:
        super().__init__(alias)
        self.wait_ends = wait_ends


class OpenConnections:
    """One pool's births (creator and "connect" event) and its open raw connections."""

    __slots__ = (
        "alias",
        "options",
        "driver",
        "_creator",
        "_busy",
        "_stats",
        "_tune_sockets",
        "_raw",
        "_closed_records",
        "_disposed",
    )

    def __init__(
        self,
        alias: str,
        options: PoolOptions,
        driver: DriverOps,
        creator: Callable[[Any], Any],
        busy: dict[int, Busy],
        stats: Stats,
        tune_sockets: bool,
    ) -> None:
        self.alias = alias
        self.options = options
        self.driver = driver
        self._creator = creator
        self._busy = busy
        self._stats = stats
        # Keepalive defaults, unless the user's OPTIONS set the driver's own.
        self._tune_sockets = driver.networked and tune_sockets
        self._raw: dict[int, Any] = {}
        # Records whose connection was closed while they stay in the pool: a
        # later connect on one of them is a recycle, not a new connection.
        self._closed_records: weakref.WeakSet[Any] = weakref.WeakSet()

    def all(self) -> list[Any]:
        """Return the raw connections opened and not closed."""
        return list(self._raw.values())

    def create(self) -> Any:
        """Open a new server connection (SQLAlchemy's creator), within CONNECT_TIMEOUT.

        The pool's ``creator`` opens it, given the job of the checkout in progress.

        The connect timeout itself is the driver's (``connect_timeout``, see
        ``wrapper.py``); here the checkout shows as connecting meanwhile, and the
        new socket gets the keepalive defaults.
        """
        job = getattr(checking_out, "job", None)
        if job is None:
            raise RuntimeError("django_sapool: a pool may only connect during a checkout")
        if self._disposed():
            # Disposed since this checkout found it: SQLAlchemy's dispose()
            # starts its count afresh, which would let it open one more, to be
            # closed at once. The checkout moves to the alias's new pool instead,
            # with a whole TIMEOUT: it has not waited.
            raise PoolDisposed(self.alias, time.monotonic() + self.options.timeout)
        key = threading.get_ident()
        self._busy[key] = Busy(threading.current_thread(), CONNECTING, time.monotonic())
        try:
            raw = self._creator(job)
        finally:
            self._busy.pop(key, None)
        if self._tune_sockets:
            fd = self.driver.socket_fd(raw)
            if fd is not None and fd >= 0:
                tcp.tune(fd, self.options.tcp_keepalive, self.options.tcp_user_timeout)
        return raw

    def born(self, raw: Any, record: Any) -> None:
        """Give a new connection its state and count it (SQLAlchemy's "connect" event)."""
        now = time.monotonic()
        recycle = self.options.recycle
        if recycle > 0:
            # Up to RECYCLE_JITTER early, so that connections opened together
            # (a fleet started at once, a pool refilled after a restart) are not
            # all replaced in the same second.
            expires = now + recycle * (1.0 - random.random() * self.options.recycle_jitter)
        else:
            expires = math.inf
        record.info[STATE] = ConnState(now, expires, self.driver.flags(raw))
        self._raw[id(raw)] = raw
        stats = self._stats
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
                recycle,
            )

    def listen(self, sa: Any, disposed: Callable[[], bool]) -> None:
        """Follow a pool's births and closes (SQLAlchemy's events); ``disposed``: is it?"""
        self._disposed = disposed
        event.listen(sa, "connect", self.born)
        event.listen(sa, "close", self.on_close)
        event.listen(sa, "close_detached", self.detached)

    def on_close(self, raw: Any, record: Any) -> None:
        """Count a close (SQLAlchemy's "close" event), the pool's own or SQLAlchemy's."""
        state = record.info.get(STATE) if record is not None else None
        reason = state.closing if state is not None else None
        # A broken or idle connection's record is not reconnected for it, and
        # neither are those of a disposed pool. One closed by evict() (idle) or
        # at its return after it (RETIRED) is replaced by a new connection, not
        # recycled: ``evictions`` counts those.
        self.closed(
            raw, record, reason not in (BROKEN, IDLE, EVICTED, RETIRED) and not self._disposed()
        )

    def closed(self, raw: Any, record: Any, reconnectable: bool) -> None:
        """Count a close; ``reconnectable``: the record may connect again (a recycle)."""
        self._raw.pop(id(raw), None)
        stats = self._stats
        with stats.lock:
            stats.counters["connections_closed"] += 1
            if record is not None and reconnectable:
                self._closed_records.add(record)

    def detached(self, raw: Any) -> None:
        """Forget a connection SQLAlchemy detached from its record (its "close_detached")."""
        self._raw.pop(id(raw), None)
