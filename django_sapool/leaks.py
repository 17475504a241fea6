"""Who holds a pool's connections: lent ones, checkouts stuck on the server, leaks.

A pool lends a connection to one Django wrapper at a time (:class:`Lending`
keeps them, with who and since when, in the connection's :class:`ConnState`) and
notes the checkouts talking to the server (connecting, pinging) and the returns
resetting (:class:`Busy`). From that it reports leaks (LEAK_TIMEOUT), returns the
connections of wrappers that were garbage-collected, and says in PoolExhausted's
message whether the application or the server holds the slots.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import traceback
from collections import Counter
from typing import TYPE_CHECKING, Any, NamedTuple

from .state import STATE

if TYPE_CHECKING:
    from .conf import PoolOptions
    from .state import ConnState

logger = logging.getLogger("django_sapool")

#: What a checkout in progress is doing while it talks to the server.
CONNECTING = "connecting"
PINGING = "pinging"
RESETTING = "resetting"


#: Seconds after which a connect or ping under way counts as the server not
#: answering (in PoolExhausted's message): far beyond a round trip, within any
#: sane CONNECT_TIMEOUT and PING_TIMEOUT.
SLOW_ANSWER = 1.0


class Busy(NamedTuple):
    """A checkout (or a return) talking to the server now."""

    thread: threading.Thread
    doing: str
    since: float


def checkout_stack() -> traceback.StackSummary:
    """Where the connection is being checked out: the stack outside this package.

    Source lines are looked up only if a leak is reported.
    """
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "django_sapool."
    ):
        frame = frame.f_back
    stack = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=40, lookup_lines=False
    )
    stack.reverse()  # outermost call first, as in a traceback
    return stack


class Lending:
    """A pool's lent connections and busy checkouts, and the leak reports about them."""

    __slots__ = ("alias", "lent", "busy", "reported", "_stuck_reported")

    def __init__(self, alias: str) -> None:
        self.alias = alias
        #: Checked-out records by id. Strong references: a connection must never
        #: be garbage-collected behind our back (after a fork the driver's
        #: destructor would close the parent's session).
        self.lent: dict[int, Any] = {}
        #: Checkouts and returns talking to the server, by thread id.
        self.busy: dict[int, Busy] = {}
        #: Lent records reported as leaks (by id), and busy threads: when.
        self.reported: dict[int, float] = {}
        self._stuck_reported: dict[int, float] = {}

    def counts(self) -> Counter[str]:
        """Return how many checkouts are connecting, pinging, resetting now."""
        return Counter(busy.doing for busy in list(self.busy.values()))

    def report(self, now: float, limit: float, hint: str) -> int:
        """Log, once each, what has been out longer than ``limit`` s; return how many.

        Checkouts stuck talking to the server count too: they hold a slot of the
        pool as surely as a leak does. ``hint`` names the options that bound them.
        """
        reported = 0
        for key, _, state in self._lent_states():
            if now - state.lent_at <= limit or key in self.reported:
                continue
            self.reported[key] = now
            reported += 1
            stack = state.stack
            where = "".join(stack.format()) if stack is not None else "(unknown)\n"
            logger.warning(
                "django_sapool: possible connection leak: a connection of alias %r has been "
                "checked out by thread %r for %.1f s (LEAK_TIMEOUT=%g s). It was checked "
                "out at:\n%s",
                self.alias,
                state.thread.name if state.thread is not None else "?",
                now - state.lent_at,
                limit,
                where.rstrip("\n"),
            )
        for key, busy in list(self.busy.items()):
            if now - busy.since <= limit or key in self._stuck_reported:
                continue
            self._stuck_reported[key] = now
            reported += 1
            logger.warning(
                "django_sapool: a checkout of alias %r in thread %r has been %s the "
                "server for %.1f s (LEAK_TIMEOUT=%g s): the server or the network is not "
                "answering (%s).",
                self.alias,
                busy.thread.name,
                busy.doing,
                now - busy.since,
                limit,
                hint,
            )
        for key in [k for k in self._stuck_reported if k not in self.busy]:
            del self._stuck_reported[key]
        return reported

    def exhausted_message(self, options: PoolOptions) -> str:
        """Say who holds the connections: the application, or checkouts stuck on the server."""
        o = options
        overflow = "unlimited" if o.max_overflow < 0 else str(o.max_overflow)
        held = len(self.lent)
        busy = self.counts()
        # Blamed on the server only when its answers are late: a connect or ping
        # under way for a moment (a cold start with a short TIMEOUT) is not.
        late = time.monotonic() - SLOW_ANSWER
        stuck = sum(
            1
            for b in list(self.busy.values())
            if b.doing in (CONNECTING, PINGING) and b.since < late
        )
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

    def log_checkout(self, thread: threading.Thread | None, idle: int) -> None:
        logger.debug(
            "django_sapool: checked out a connection of alias %r in thread %r "
            "(%d checked out, %d idle)",
            self.alias,
            thread.name if thread is not None else "?",
            len(self.lent),
            idle,
        )

    def log_return(self, thread: threading.Thread | None, idle: int) -> None:
        logger.debug(
            "django_sapool: returned a connection of alias %r checked out in thread %r "
            "(%d checked out, %d idle)",
            self.alias,
            thread.name if thread is not None else "?",
            len(self.lent),
            idle,
        )

    def returned(self, key: int, state: ConnState, now: float) -> None:
        """Note the return of a lent connection; log it if it was reported as a leak."""
        if self.reported.pop(key, None) is None:
            return
        logger.warning(
            "django_sapool: the connection of alias %r reported as a possible leak was "
            "returned by thread %r after %.1f s.",
            self.alias,
            state.thread.name if state.thread is not None else "?",
            now - state.lent_at,
        )

    def reclaim_from_ended_threads(self) -> bool:
        """Collect garbage if a lent connection's thread has ended; True if that ran.

        A thread that ends without closing its connection leaves its Django
        wrapper in reference cycles: only the cycle collector frees it, and
        then ``registry.owner_gone`` returns the connection. A checkout about to
        wait allocates next to nothing, so the collector might not run before
        TIMEOUT: PoolExhausted with the connections there for the taking.
        """
        for _, _, state in self._lent_states():
            if state.thread is not None and has_ended(state.thread):
                gc.collect()
                return True
        return False

    def _lent_states(self) -> list[tuple[int, Any, ConnState]]:
        """Return the lent records with their keys and states, as of now.

        Read from a copy, by other threads than the borrowers': a record may be
        returned meanwhile, and reconnected by another checkout, which empties
        its ``info`` first; such a record is no longer lent and is skipped.
        """
        found = []
        for key, record in list(self.lent.items()):
            state = record.info.get(STATE)
            if state is not None:
                found.append((key, record, state))
        return found

    def abandoned_by(self, owner: Any) -> list[Any]:
        """Return the lent records of a garbage-collected wrapper, warning about each."""
        records = []
        for _, record, state in self._lent_states():
            if state.owner is not owner:
                continue
            records.append(record)
            thread = state.thread
            logger.warning(
                "django_sapool: a connection of alias %r checked out by thread %r was "
                "never returned (the thread ended without connection.close() or "
                "close_old_connections()); returning it to the pool.",
                self.alias,
                thread.name if thread is not None else "?",
            )
        return records


def has_ended(thread: threading.Thread) -> bool:
    """Return whether a borrower's thread (or greenlet) has ended.

    Under gevent a greenlet's thread is a dummy one, alive for ever by
    ``is_alive()``; gevent takes it out of ``threading._active`` when its
    greenlet dies.
    """
    if not thread.is_alive():
        return True
    if isinstance(thread, threading._DummyThread):
        active: dict[Any, threading.Thread] = getattr(threading, "_active", {})
        return active.get(thread.ident) is not thread
    return False
