"""What the pool keeps per connection: one small object in the record's ``info``.

SQLAlchemy gives each connection record an ``info`` dict that lives exactly as
long as the raw connection (it is cleared when the record reconnects). The pool
keeps one :class:`ConnState` there under :data:`STATE`, made when the connection
is born, instead of a handful of loose keys.
"""

from __future__ import annotations

import threading
import traceback
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .drivers.base import Flags

#: The ``info`` key of a connection's ConnState.
STATE = "django_sapool"

#: Why a connection is being closed (ConnState.closing), counted by the pool.
BROKEN = "broken"  # the driver, a ping or a reset failed: discarded
EXPIRED = "expired"  # older than RECYCLE, replaced at checkout
IDLE = "idle"  # idle longer than IDLE_TIMEOUT, or expired while idle
EVICTED = "evicted"  # evict(): a read-only server, an ops signal
RETIRED = "retired"  # returned to a disposed pool, or after evict()


class ConnState:
    """One raw connection's state in the pool, and while lent, who holds it."""

    __slots__ = (
        "flags",
        "last_used",
        "expires",
        "poller",
        "initialized",
        "was_reset",
        "autocommit",
        "closing",
        "owner",
        "thread",
        "lent_at",
        "stack",
    )

    def __init__(self, now: float, expires: float, flags: Flags) -> None:
        #: Its driver's flags: closed? clean? autocommit? (``drivers.base.Flags``).
        self.flags = flags
        #: When (time.monotonic()) it was last returned, or opened.
        self.last_used = now
        #: When it is due for recycling: RECYCLE, minus its jitter.
        self.expires = expires
        #: A poll object watching its socket, made at the first cheap check.
        self.poller: Any = None
        #: Django's session setup (init_connection_state) has run on it.
        self.initialized = False
        #: Its session was reset on return: Django's setup must be redone.
        self.was_reset = False
        #: Django's autocommit mode when a wrapper last returned it, i.e. the
        #: driver's (Django switches both together): True spares the next
        #: checkout a question to the driver. False: unknown, or off.
        self.autocommit = False
        #: Why the pool is closing it (BROKEN, EXPIRED...), while it does.
        self.closing: str | None = None
        #: While lent: a weak reference to the Django wrapper, its thread, since
        #: when, and (LEAK_TIMEOUT) the stack of the checkout.
        self.owner: weakref.ref[Any] | None = None
        self.thread: threading.Thread | None = None
        self.lent_at = 0.0
        self.stack: traceback.StackSummary | None = None


def state_of(record: Any) -> ConnState:
    """Return the ConnState of a connection record (one that has a connection)."""
    state: ConnState = record.info[STATE]
    return state
