"""Connections remembered by their last borrower: the fast path of a checkout.

HikariCP's ConcurrentBag, in Python: a connection returned by a Django wrapper
(one per thread, or greenlet, per alias) is remembered for that wrapper instead
of going back to SQLAlchemy's queue, and the wrapper's next checkout takes it
back with one ``dict.pop``, skipping the queue's lock and condition both ways.
Nothing is lost to a thread that needs a connection: when the queue has none
idle, a checkout *steals* a remembered one before it would open a new
connection or wait, so POOL_SIZE, MAX_OVERFLOW and TIMEOUT mean what they say.

SQLAlchemy counts a remembered connection as checked out; the pool counts it
as idle (``ManagedPool.status()``), the housekeeper gives the ones idle for a
while back to the queue before it sweeps (IDLE_TIMEOUT, MIN_IDLE, RECYCLE), and
dispose, evict, fork and a wrapper's death see it (``pool.py``, ``registry.py``).

Thread safety rests on the GIL: ``dict.pop``, ``dict.popitem`` and
``list.append``/``pop`` are atomic. A waiter and a returner never miss each
other, whatever the interleaving: a checkout that is about to wait counts
itself as waiting *then* steals; a return remembers *then* looks for waiters,
and if there are any gives the connection to the queue, where they wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._sa import Record, SaPool, give_back
from .state import state_of


class Remembered:
    """One pool's remembered connections, by the weak reference of their last borrower."""

    __slots__ = ("by_owner", "waiting", "closed", "_sa", "_idle", "_pool_size", "_lifo")

    def __init__(self, sa: SaPool, pool_size: int, lifo: bool) -> None:
        self._sa = sa
        self._idle = sa.idle_records
        self._pool_size = pool_size
        #: USE_LIFO: steal the connection remembered last (else first), the
        #: order SQLAlchemy's queue hands idle connections out in.
        self._lifo = lifo
        #: ``weakref.ref(wrapper) -> record``: read and written on the hot path.
        self.by_owner: dict[Any, Record] = {}
        #: One item per checkout waiting in SQLAlchemy's queue (a list: atomic
        #: append/pop, and its truth value is one C-level check).
        self.waiting: list[None] = []
        #: Set when the pool is disposed: nothing is remembered any more.
        self.closed = False

    def __len__(self) -> int:
        return len(self.by_owner)

    def keep(self, owner: Any, record: Record) -> bool:
        """Remember a returned connection for ``owner``; False: give it to the queue instead.

        Not while POOL_SIZE connections are idle (remembered ones included; a
        POOL_SIZE of 0, SQLAlchemy's unbounded queue, remembers nothing).
        """
        by_owner = self.by_owner
        if len(self._idle) + len(by_owner) >= self._pool_size:
            return False
        by_owner[owner] = record
        if not (self.waiting or self.closed):
            return True
        # Remembered, then look for waiters (see the module's docstring): one
        # that came meanwhile waits in the queue, so the connection goes there.
        # Stolen meanwhile (nothing to pop): someone has it, nothing to do.
        return by_owner.pop(owner, None) is None

    def steal(self) -> Record | None:
        """Take a remembered connection (its borrower takes another next time), or None."""
        by_owner = self.by_owner
        try:
            if self._lifo:
                return by_owner.popitem()[1]
            # The first remembered (dicts keep insertion order); another thread
            # may take it first or change the dict under next(): look again.
            while by_owner:
                try:
                    record = by_owner.pop(next(iter(by_owner)), None)
                except RuntimeError:  # changed size during iteration
                    continue
                if record is not None:
                    return record
        except KeyError:
            pass
        return None

    def give_back(self, record: Record) -> None:
        """Give a connection to SQLAlchemy's queue, or close it beyond POOL_SIZE idle.

        SQLAlchemy closes a returned connection when its queue is full, i.e.
        POOL_SIZE are idle; remembered ones are idle too, so they count.
        """
        by_owner = self.by_owner
        if by_owner and len(self._idle) + len(by_owner) >= self._pool_size:
            self._sa.close_taken(record)
        else:
            give_back(record)

    def forget(self, owner: Any) -> None:
        """Give back the connection remembered for a wrapper that died (``registry.owner_gone``)."""
        try:
            record = self.by_owner.pop(owner, None)
        except TypeError:
            # A dead weak reference hashed for the first time ("weak object has
            # gone away"): one never hashed while alive was never a key here.
            return
        if record is not None:
            self.give_back(record)

    def give_back_idle(self, idle_for: float, now: float) -> int:
        """Give the connections unused for ``idle_for`` seconds back to the queue; count them.

        The housekeeper does it before it sweeps, so that IDLE_TIMEOUT and
        MIN_IDLE see every idle connection; ``evict()`` with 0, to close them all.
        """
        taken = self.take(idle_for, now)
        for record in taken:
            self.give_back(record)
        return len(taken)

    def take(self, idle_for: float = 0.0, now: float = 0.0) -> list[Record]:
        """Take the remembered connections unused for at least ``idle_for`` seconds at ``now``.

        ``idle_for`` 0 takes all of them (dispose, evict).
        """
        by_owner = self.by_owner
        taken = []
        for owner in list(by_owner):
            record = by_owner.get(owner)
            if record is None:
                continue
            if idle_for and now - state_of(record).last_used < idle_for:
                continue
            # Whatever is remembered for it now (reclaimed and returned again
            # meanwhile, perhaps): an idle connection either way, never lost.
            record = by_owner.pop(owner, None)
            if record is not None:
                taken.append(record)
        return taken

    def wait(self, take: Callable[[], Record], queue_first: bool = False) -> Record:
        """Wait in the queue with ``take``, stealing first (see the module's docstring).

        ``queue_first``: steal only if the queue has no idle connection (by
        now): ``take`` may well not wait, and a remembered connection stays
        with its borrower then.
        """
        waiting = self.waiting
        waiting.append(None)
        try:
            record = None if queue_first and self._idle else self.steal()
            return take() if record is None else record
        finally:
            waiting.pop()
