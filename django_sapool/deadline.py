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

The watchdog is an operating-system thread with locks of its own even where
gevent monkey-patched ``threading``: a greenlet watchdog cannot run while the
hub's thread waits in a driver's C code (mysqlclient, psycopg2 without a wait
callback), which is when it is needed; the driver releases the GIL meanwhile.
"""

from __future__ import annotations

import _socket
import _thread
import heapq
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import ServerSilent
from .leaks import Busy

logger = logging.getLogger("django_sapool")


class Deadline:
    """One armed deadline: ``fired`` tells whether the watchdog shut the socket down."""

    __slots__ = ("fd", "inode", "when", "fired", "done")

    def __init__(self, fd: int, when: float) -> None:
        self.fd = fd
        #: The socket's own identity: by the deadline its driver may have closed
        #: ``fd`` (a failed call; a connect moving on to another host) and the
        #: number may belong to another socket then, which is left alone.
        self.inode = inode_of(fd)
        self.when = when
        self.fired = False
        self.done = False


def _native_threads() -> tuple[Callable[..., int], Callable[[], Any]]:
    """Return ``_thread.start_new_thread`` and ``allocate_lock`` as they were before gevent."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        start, allocate = monkey.get_original("_thread", ["start_new_thread", "allocate_lock"])
        return start, allocate
    return _thread.start_new_thread, _thread.allocate_lock


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
        self._start_thread, allocate_lock = _native_threads()
        #: Guards the heap and each deadline's ``fired`` and ``done``.
        self._lock = allocate_lock()
        #: Released to wake the thread up (a binary semaphore: a wake-up given
        #: while the thread is busy is seen at its next wait, never lost).
        self._wake = allocate_lock()
        self._wake.acquire()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._pid = 0
        #: Threads started in this process: one, once a deadline was armed.
        self.threads_started = 0

    def arm(self, fd: int, seconds: float) -> Deadline:
        """Shut ``fd``'s socket down in ``seconds`` unless :meth:`disarm` comes first."""
        deadline = Deadline(fd, time.monotonic() + seconds)
        with self._lock:
            if not self._pid:
                self._pid = os.getpid()
                self._start_thread(self._run, ())
                self.threads_started += 1
            heapq.heappush(self._heap, (deadline.when, next(self._seq), deadline))
            earliest = self._heap[0][2] is deadline
        if earliest:
            try:
                self._wake.release()
            except RuntimeError:  # released already: the thread looks again anyway
                pass
        return deadline

    def disarm(self, deadline: Deadline) -> bool:
        """Cancel ``deadline``; return True if it had already fired."""
        with self._lock:
            deadline.done = True
            return deadline.fired

    def _run(self) -> None:
        pid = os.getpid()
        lock, wake = self._lock, self._wake  # its own, whatever forget() does in a child
        while pid == os.getpid():
            with lock:
                heap = self._heap
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                delay = heap[0][0] - time.monotonic() if heap else -1.0
                if heap and delay <= 0:
                    deadline = heapq.heappop(heap)[2]
                    deadline.fired = deadline.done = True
                    shut_down(deadline.fd, deadline.inode)
                    continue
            wake.acquire(True, delay)  # -1: until woken


def inode_of(fd: int) -> int | None:
    """Return the identity of the file (socket) behind ``fd``, or None if it is closed."""
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


def shut_down(fd: int, inode: int | None = None) -> None:
    """Shut a socket down for reading and writing without closing ``fd`` itself.

    ``inode``: only if ``fd`` is still that socket (see ``Deadline.inode``).
    A socket still connecting (an unanswered SYN) gives up its connect too.
    """
    try:
        # _socket's own type, which gevent never replaces: no hub in this thread.
        sock = _socket.socket(fileno=os.dup(fd))
    except OSError:
        return  # already closed by its driver
    try:
        if inode is not None and os.fstat(sock.fileno()).st_ino != inode:
            return  # closed by its driver meanwhile; this number is another socket's
        sock.shutdown(_socket.SHUT_RDWR)
    except OSError:
        logger.debug("django_sapool: shutdown() of a timed-out socket failed", exc_info=True)
    finally:
        sock.close()


#: The process's watchdog.
WATCHDOG = Watchdog()


def run_within(
    seconds: float | None, fd: int | None, call: Callable[[], None], silent: Callable[[], Exception]
) -> None:
    """Run ``call()``; past ``seconds``, shut ``fd``'s socket down and raise ``silent()``.

    None for ``seconds`` or ``fd``: no deadline.
    """
    deadline = None
    if seconds is not None and fd is not None and fd >= 0:
        deadline = WATCHDOG.arm(fd, seconds)
    try:
        call()
    except BaseException as exc:
        if deadline is not None and WATCHDOG.disarm(deadline):
            raise silent() from exc
        raise
    if deadline is not None and WATCHDOG.disarm(deadline):
        # It answered just as the deadline fired: the socket is shut down now.
        raise silent()


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
        fd = self.driver.socket_fd(raw) if self.timeout is not None else None
        try:
            run_within(self.timeout, fd, lambda: call(raw, *args), lambda: self._silent(doing))
        finally:
            self.busy.pop(key, None)

    def _silent(self, doing: str) -> ServerSilent:
        """Count a round trip past its deadline; return the error to raise."""
        self.timed_out()
        return ServerSilent(
            f"django_sapool: the server did not answer within PING_TIMEOUT="
            f"{self.timeout:g}s ({doing} a connection of alias {self.alias!r}; a hung "
            f"server or a silent network): the connection was discarded."
        )


def forget_in_child() -> None:
    """After fork, in the child (``fork.py``): the watchdog's thread and lock are gone."""
    WATCHDOG.forget()
