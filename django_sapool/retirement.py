"""Where connections die: every close the pool makes, by its reason, counted there.

A connection is retired for one of the reasons in ``state.py``: ``broken`` (a
failed ping, reset or driver check), ``expired`` (RECYCLE, replaced at
checkout), ``idle`` (housekeeping), ``evicted`` (``evict()``, a read-only
server) or ``retired`` (returned to a disposed or evicted pool). Each takes its
own SQLAlchemy verb (``_sa.py``); the reason stays in the connection's state
for the "close" event, which counts every close (``opened.py``), including
those SQLAlchemy makes by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._sa import Record, SaPool
from .remembered import Remembered
from .state import BROKEN, EXPIRED, IDLE, RETIRED, STATE
from .stats import Stats
from .validation import Closed

logger = logging.getLogger("django_sapool")


class Retirement:
    """One pool's closes: :meth:`retire` for one connection, :meth:`close_idle` for many."""

    __slots__ = ("alias", "_sa", "_stats", "_remembered")

    def __init__(self, alias: str, sa: SaPool, stats: Stats, remembered: Remembered) -> None:
        self.alias = alias
        self._sa = sa
        self._stats = stats
        self._remembered = remembered

    def retire(
        self, record: Record, reason: str, error: BaseException | None = None, alone: bool = False
    ) -> None:
        """Close a connection for ``reason`` (see ``state.py``), counting it here.

        ``alone``: a broken connection whose server answered; the others are
        not suspected (else every older connection is retired with it).
        """
        state = record.info.get(STATE)
        if state is not None:
            state.closing = reason
        sa = self._sa
        if reason == BROKEN:
            self._stats.count("connections_invalidated")
            logger.warning(
                "django_sapool: discarded a connection of alias %r (%s)",
                self.alias,
                "unusable" if error is None or type(error) is Closed else type(error).__name__,
            )
            if alone:
                sa.close_and_give_back(record)
                return
            # Also retires every older connection at its next checkout: a dead
            # connection usually means a restarted or failed-over server.
            sa.discard(record, error)
            # Remembered ones too, which their borrowers take back without
            # asking SQLAlchemy (remembered.py): back to the queue, where it does.
            self._remembered.give_back_idle(0.0, 0.0)
        elif reason == EXPIRED:
            record.close()  # the checkout that found it connects it again
        elif reason == RETIRED:
            logger.debug("django_sapool: closed a connection of retired pool %r", self.alias)
            sa.close_and_give_back(record)
        else:  # IDLE, EVICTED: taken out of the idle queue by close_idle()
            if reason == IDLE:
                self._stats.count("connections_idle_closed")
            try:
                sa.close_taken(record)
            except Exception:  # a dead socket may fail to close cleanly
                logger.debug("django_sapool: error closing an idle connection", exc_info=True)

    def recycle_idle(self, pick: Callable[[list[Record]], list[Record]]) -> int:
        """Close the idle connections ``pick`` chooses (older than RECYCLE); count them.

        Each counts as an idle connection closed now. Their records go back to
        the queue, empty: the next checkout of each connects it again, which
        counts and logs it as recycled (``opened.py``).
        """
        victims = self._sa.take_idle(pick)
        if victims:
            self._stats.add("connections_idle_closed", len(victims))
        for record in victims:
            state = record.info.get(STATE)
            if state is not None:
                state.closing = EXPIRED
            self._sa.close_and_give_back(record)
        return len(victims)

    def close_idle(self, pick: Callable[[list[Record]], list[Record]], reason: str) -> int:
        """Retire the idle connections ``pick`` chooses among them; return how many."""
        victims = self._sa.take_idle(pick)
        for record in victims:
            self.retire(record, reason)
        return len(victims)
