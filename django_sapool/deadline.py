"""Deadlines on blocking driver calls: a socket is shut down when its time is up.

No DBAPI driver offers a timeout on a single call: psycopg 3 and psycopg2 wait in
libpq or their own loop, mysqlclient in libmariadb, PyMySQL on a socket timeout
set at connect for every read (a 90 s query included). A silent network (a
black-holed path, a hung server, a dropped NAT entry) leaves such a call waiting
for the kernel's retransmission timeout, many minutes. So a ping or a reset runs
under a deadline: one watchdog thread per process sleeps until the earliest
armed deadline and, if the call is still running then, shuts the connection's
socket down (``shutdown(SHUT_RDWR)``). Whichever way the driver waits (poll,
select, recv, in C or in Python), it then sees the socket closed and fails at
once with its own "connection lost" error, and the pool discards the connection.

Only the socket is shut down (a duplicate descriptor is shut down and closed);
the driver still owns and closes its descriptor. Arming and disarming take one
lock; firing holds it, so a deadline that expires as the call returns is either
fired (the caller sees ``fired``) or cancelled, never half of each.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import ServerSilent
from .leaks import Busy

logger = logging.getLogger("django_sapool")


class Deadline:
    """One armed deadline: ``fired`` tells whether the watchdog shut the socket down."""

    __slots__ = ("fd", "when", "fired", "done")

    def __init__(self, fd: int, when: float) -> None:
        self.fd = fd
        self.when = when
        self.fired = False
        self.done = False


class Watchdog:
    """Shut down the sockets of calls that outlive their deadline (one thread per process)."""

    def __init__(self) -> None:
        self._seq = itertools.count()
        self.forget()

    def forget(self) -> None:
        """Start afresh in a forked child: the lock may have been held, the thread is gone.

        A no-op in the process whose thread runs: ``after_fork()`` may be
        called where nothing was forked (gunicorn's ``post_fork`` without
        preload, a test), and its pending deadlines must still fire.
        """
        if getattr(self, "_pid", 0) == os.getpid():
            return
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Deadline]] = []
        self._thread: threading.Thread | None = None
        self._pid = 0

    def arm(self, fd: int, seconds: float) -> Deadline:
        """Shut ``fd``'s socket down in ``seconds`` unless :meth:`disarm` comes first."""
        deadline = Deadline(fd, time.monotonic() + seconds)
        with self._cond:
            if self._thread is None:
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="django_sapool-watchdog", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (deadline.when, next(self._seq), deadline))
            if self._heap[0][2] is deadline:
                self._cond.notify()
        return deadline

    def disarm(self, deadline: Deadline) -> bool:
        """Cancel ``deadline``; return True if it had already fired."""
        with self._cond:
            deadline.done = True
            return deadline.fired

    def _run(self) -> None:
        pid = os.getpid()
        cond = self._cond  # its own, whatever forget() does in a child
        with cond:
            while pid == os.getpid():
                heap = self._heap
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                if not heap:
                    cond.wait()
                    continue
                delay = heap[0][0] - time.monotonic()
                if delay > 0:
                    cond.wait(delay)
                    continue
                deadline = heapq.heappop(heap)[2]
                deadline.fired = deadline.done = True
                shut_down(deadline.fd)


def shut_down(fd: int) -> None:
    """Shut a socket down for reading and writing without closing ``fd`` itself."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return  # already closed by its driver
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        logger.debug("django_sapool: shutdown() of a timed-out socket failed", exc_info=True)
    finally:
        sock.close()


#: The process's watchdog.
WATCHDOG = Watchdog()


class RoundTrips:
    """One pool's round trips (pings, resets), each within PING_TIMEOUT.

    While one runs, its thread shows in ``busy`` (``leaks.py``: pool_status(),
    LEAK_TIMEOUT, PoolExhausted's message). Past the deadline the watchdog
    shuts the socket down, which ends the driver's wait whatever it waits in;
    the connection is then useless, and the caller discards it.
    """

    __slots__ = ("alias", "timeout", "driver", "busy", "timed_out")

    def __init__(
        self,
        alias: str,
        timeout: float | None,
        driver: Any,
        busy: dict[int, Busy],
        timed_out: Callable[[], None],
    ) -> None:
        self.alias = alias
        self.timeout = timeout
        self.driver = driver
        self.busy = busy
        #: Called once for each round trip past its deadline (a counter).
        self.timed_out = timed_out

    def run(self, doing: str, call: Callable[..., None], raw: Any, *args: Any) -> None:
        """Run ``call(raw, *args)``; raise ServerSilent if the deadline fired."""
        key = threading.get_ident()
        self.busy[key] = Busy(threading.current_thread(), doing, time.monotonic())
        deadline = None
        if self.timeout is not None:
            fd = self.driver.socket_fd(raw)
            if fd is not None and fd >= 0:
                deadline = WATCHDOG.arm(fd, self.timeout)
        try:
            call(raw, *args)
        except BaseException as exc:
            if self._ended(key, deadline):
                raise self._silent(doing) from exc
            raise
        if self._ended(key, deadline):
            # It answered just as the deadline fired: the socket is shut down now.
            raise self._silent(doing)

    def _ended(self, key: int, deadline: Deadline | None) -> bool:
        """End a round trip; return whether its deadline fired."""
        self.busy.pop(key, None)
        if deadline is None or not WATCHDOG.disarm(deadline):
            return False
        self.timed_out()
        return True

    def _silent(self, doing: str) -> ServerSilent:
        return ServerSilent(
            f"django_sapool: the server did not answer within PING_TIMEOUT="
            f"{self.timeout:g}s ({doing} a connection of alias {self.alias!r}; a hung "
            f"server or a silent network): the connection was discarded."
        )


def forget_in_child() -> None:
    """After fork, in the child (``fork.py``): the watchdog's thread and lock are gone."""
    WATCHDOG.forget()
