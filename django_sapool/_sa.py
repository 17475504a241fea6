"""The only module that touches SQLAlchemy's private names: a QueuePool with a few verbs.

django_sapool hands Django raw DBAPI connections and keeps SQLAlchemy's
connection records itself, without the per-checkout proxy ("fairy") that
``QueuePool.connect()`` builds. That needs a handful of QueuePool's and
``_ConnectionRecord``'s private methods and attributes. Every earlier library of
this kind broke when such a name changed in a SQLAlchemy release, so they are
named here and nowhere else, and ``tests/unit/test_sa.py`` checks that the
installed SQLAlchemy still has each one (``PRIVATE_NAMES``).

The verbs on the hot path are SQLAlchemy's own functions under our names
(``take``, ``connection``), or one plain call (``give_back``): every extra call
or keyword dict there costs each request (benchmarks/instructions.py).
"""

from __future__ import annotations

import logging
import operator
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import QueuePool
from sqlalchemy.pool.base import _ConnectionRecord

#: What this module relies on: (owner, private name). See tests/unit/test_sa.py.
PRIVATE_NAMES = (
    (QueuePool, "_do_get"),
    (QueuePool, "_dec_overflow"),
    (QueuePool, "_inc_overflow"),
    (QueuePool, "_invalidate"),
    (_ConnectionRecord, "_checkin_failed"),
    (_ConnectionRecord, "checkin(_fairy_was_created=...)"),
    (_ConnectionRecord, "get_connection"),
    ("QueuePool instance", "_overflow"),
    ("QueuePool instance", "_max_overflow"),
    ("QueuePool instance", "_pool (a queue with .queue and .mutex)"),
    ("QueuePool instance", "_timeout (what _do_get waits: SaPool._timeout)"),
)

#: Raised by :meth:`SaPool.take` when no connection became free within the timeout.
Timeout = sa_exc.TimeoutError

#: By thread (or greenlet: gevent patches get_ident, and a threading.local made
#: before its monkey-patching would be shared by a thread's greenlets): the
#: monotonic time by which a checkout that moved from a disposed pool to the
#: alias's new one must stop waiting (see :attr:`SaPool._timeout`). Usually empty.
moved_waits: dict[int, float] = {}

Record = Any  # sqlalchemy.pool.base._ConnectionRecord


def give_back(record: Record) -> None:
    """Put a record back in the pool (or close it, beyond POOL_SIZE).

    A function rather than ``functools.partial``: a partial with a keyword costs
    about a microsecond per call (it builds a dict), this costs one call.
    """
    record.checkin(_fairy_was_created=False)


class MaskSecrets(logging.Filter):
    """Mask ``...pass...=value`` in what SQLAlchemy's pool logs (ECHO, or its DEBUG level).

    It logs the raw connection's repr, and psycopg2's shows the whole connection
    string but ``password``: ``sslpassword`` (the client key's passphrase) too.
    """

    SECRET = re.compile(r"(\b\w*pass\w*\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\\>,;]+)", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.SECRET.sub(r"\1********", message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


class SaPool(QueuePool):
    """SQLAlchemy's QueuePool of connection records, used without its proxy.

    Resets, recycling and pre-pings are ours (see ``pool.py``), so SQLAlchemy's
    are switched off.
    """

    # ECHO logs under SQLAlchemy's own logger names ("sqlalchemy.pool.impl.QueuePool.<alias>"),
    # as before this subclass existed: users' logging settings keep applying.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"

    def __init__(
        self,
        creator: Callable[[], Any],
        *,
        pool_size: int,
        max_overflow: int,
        timeout: float,
        use_lifo: bool,
        echo: bool | str,
        logging_name: str,
    ) -> None:
        super().__init__(
            creator,
            pool_size=pool_size,
            max_overflow=max_overflow,
            timeout=timeout,
            recycle=-1,
            use_lifo=use_lifo,
            # A reset of SQLAlchemy's would send a ROLLBACK that some drivers
            # don't skip when no transaction is open.
            reset_on_return=None,
            echo=echo,  # type: ignore[arg-type]
            logging_name=logging_name,
            pre_ping=False,
        )
        #: The idle records themselves (a deque, read without a lock: a
        #: checkout waits exactly when none is idle and the overflow is used up).
        self.idle_records = self._pool.queue  # type: ignore[attr-defined]
        logger = logging.getLogger(f"{self._sqla_logger_namespace}.{logging_name}")
        if not any(isinstance(f, MaskSecrets) for f in logger.filters):
            logger.addFilter(MaskSecrets())

    # QueuePool waits self._timeout in its queue (_do_get): TIMEOUT, or what is
    # left of it for a checkout that already waited in a pool disposed
    # meanwhile, so that its whole wait stays within TIMEOUT.
    @property  # type: ignore[override]
    def _timeout(self) -> float:
        ends = moved_waits.get(threading.get_ident()) if moved_waits else None
        if ends is None:
            return self.timeout_setting
        return max(0.0, min(self.timeout_setting, ends - time.monotonic()))

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self.timeout_setting = value

    # -- the hot path: SQLAlchemy's own functions --------------------------------

    #: Take a record out of the pool (idle, or a new one within MAX_OVERFLOW),
    #: waiting up to TIMEOUT; raise :data:`Timeout`.
    take = QueuePool._do_get

    #: Return a record's raw connection, connecting (again) if it has none or is
    #: older than the last :meth:`retire_all`. (Not ``connect``: that is
    #: QueuePool's public call that builds a proxy.)
    connection = staticmethod(_ConnectionRecord.get_connection)

    #: Put a record back in the pool (or close it, beyond POOL_SIZE).
    give_back = staticmethod(give_back)

    #: How many connections beyond POOL_SIZE are open (negative: fewer than
    #: POOL_SIZE). A checkout waits exactly when this reached MAX_OVERFLOW and no
    #: record is idle. A C-level getter: the checkout reads it every time.
    overflow_now = staticmethod(operator.attrgetter("_overflow"))

    # -- the rest ------------------------------------------------------------------

    @staticmethod
    def connect_failed(record: Record, error: BaseException) -> None:
        """Give a record whose (re)connect failed back, as SQLAlchemy's checkout does."""
        record._checkin_failed(error, _fairy_was_created=False)

    def hand_over_slot(self) -> None:
        """Give the slot of a new connection that failed to open to a checkout waiting.

        SQLAlchemy frees the slot, but a checkout waiting in the queue wakes
        only when a record is put back: it would wait until TIMEOUT before
        opening a connection itself. An empty record in the queue wakes one,
        whose checkout connects it, as any record closed earlier.
        """
        if self._inc_overflow():
            give_back(_ConnectionRecord(self, connect=False))

    def discard(self, record: Record, error: BaseException | None) -> None:
        """Close a broken record's connection and give the record back.

        Every connection opened before now is reconnected at its next checkout
        (SQLAlchemy's invalidation time): a dead connection usually means a
        restarted or failed-over server, which killed its siblings too.
        """
        self._invalidate(record, error, _checkin=False)  # type: ignore[arg-type]
        try:
            record.invalidate(error)
        finally:
            give_back(record)

    def close_and_give_back(self, record: Record) -> None:
        """Close a healthy record's connection (retired) and give the record back."""
        record.invalidate()
        give_back(record)

    def retire_all(self) -> None:
        """Make every connection open now reconnect at its next checkout."""
        self._invalidate(None, None, _checkin=False)  # type: ignore[arg-type]

    def idle_open(self) -> int:
        """Return how many idle records hold an open connection.

        A record whose connection was closed (broken, retired, failed to
        connect) goes back to the queue empty, and connects at its next
        checkout: SQLAlchemy's ``checkedin()`` counts it, but it is no
        connection.
        """
        queue: Any = self._pool  # sqlalchemy.util.queue.Queue: .queue, .mutex
        with queue.mutex:
            return sum(1 for record in queue.queue if record.dbapi_connection is not None)

    def take_idle(self, choose: Callable[[list[Record]], list[Record]]) -> list[Record]:
        """Remove the idle records ``choose`` picks (from the live ones) and return them.

        The caller closes each with :meth:`close_taken`, which frees its slot.
        """
        queue: Any = self._pool  # sqlalchemy.util.queue.Queue: .queue, .mutex
        with queue.mutex:
            live = [r for r in queue.queue if r.dbapi_connection is not None]
            chosen = choose(live)
            for record in chosen:
                queue.queue.remove(record)
        return chosen

    def close_taken(self, record: Record) -> None:
        """Close a record taken by :meth:`take_idle` and free its slot in the pool."""
        try:
            record.close()
        finally:
            self._dec_overflow()

    @staticmethod
    def opened_at(record: Record) -> float:
        """Return when (``time.time()``) the record's connection was opened."""
        return float(record.last_connect_time)
