"""``POOL_OPTIONS["LEND"] = "transaction"``: a connection is lent per statement or transaction.

With LEND "request" (the default) a wrapper holds its connection from its first
query until the request ends (``close_old_connections()``). With "transaction"
it gives the connection back as soon as nothing needs the server session:

- outside ``atomic()`` and in autocommit mode, when the last open cursor closes
  (Django's ORM closes its cursors once it has read the results; a cursor the
  user holds, a ``.iterator()``'s server-side cursor, keep it until closed);
- at the end of the outermost ``atomic()`` block (Django's ``Atomic.__exit__``
  calls ``set_autocommit(True)``), or at ``set_autocommit(True)`` after manual
  transaction management, when no cursor is open.

The next query checks one out again (``ensure_connection()`` sees
``connection is None``), on the same fast path as the next request would: the
connection this wrapper returned last, unless another thread took it. Django's
session setup runs as at any checkout (once per server connection, see
``wrapper.py``), and ``connection_created`` is sent at every checkout, as
with LEND "request" (Django's ``connect()`` sends it).

The release is the request end's own path: ``close_if_unusable_or_obsolete()``
(``lean.py``) → ``_close()`` → ``ManagedPool.checkin()``.

Constraint checks disabled (Django's ``disable_constraint_checking()``: SQLite's
schema editor, ``loaddata``, MySQL's ``SET foreign_key_checks=0``) keep the
connection until they are enabled again: the statements in between belong to
that session, and no other borrower may get it with the checks off.

Installed per wrapper, as instance attributes that shadow five of Django's
methods (``connect``, ``set_autocommit``, ``_cursor`` and the two constraint
checks' ones; ``SHADOWED``), so a wrapper with LEND "request" runs exactly the
code it ran before, at no cost. A cursor
is counted by turning its class into a subclass of its own (cached per class):
``close()``, its garbage collection, and a warning on statements whose effect
outlives the statement (``SET``, ``LISTEN``, temporary tables, session advisory
locks...) outside ``atomic()``: the next statement may run in another session.
"""

from __future__ import annotations

import re
import warnings
import weakref
from _thread import get_ident
from typing import Any

from .conf import LEND_TRANSACTION, read_pool_options

#: The wrapper methods an instance attribute shadows with LEND "transaction".
SHADOWED = (
    "connect",
    "set_autocommit",
    "_cursor",
    "disable_constraint_checking",
    "enable_constraint_checking",
)

#: Statements whose effect lives in the server session beyond the statement
#: (PgBouncer's transaction-mode list, and MySQL's equivalents): session
#: settings, LISTEN, temporary tables, prepared statements, holdable cursors,
#: session-level advisory locks (PostgreSQL) and named locks (MySQL). Not
#: PostgreSQL's SET CONSTRAINTS, which lasts the transaction (Django's schema
#: editor sends it outside atomic() in non-atomic migrations). SET LOCAL and
#: SET TRANSACTION stay: on MySQL they change the session.
SESSION_STATEMENT = re.compile(
    r"^\s*(?:SET(?!\s+CONSTRAINTS\b)|RESET|LISTEN|UNLISTEN|PREPARE|DECLARE|LOCK\s+TABLES?"
    r"|CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?TEMP(?:ORARY)?)\b"
    r"|\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(|\bGET_LOCK\s*\(",
    re.IGNORECASE,
)


#: SESSION_STATEMENT's answers by statement text: the ORM sends the same few
#: texts over and over (parameters apart), and a dict lookup costs a fraction
#: of a search. Emptied when full, so that ad hoc texts cannot grow it.
_SEEN: dict[str, bool] = {}
_SEEN_LIMIT = 2048


def sets_session_state(sql: str) -> bool:
    """Return whether a statement looks like it sets session state (SESSION_STATEMENT)."""
    answer = _SEEN.get(sql)
    if answer is None:
        if len(_SEEN) >= _SEEN_LIMIT:
            _SEEN.clear()
        answer = _SEEN[sql] = SESSION_STATEMENT.search(sql) is not None
    return answer


class LendWarning(UserWarning):
    """A statement's effect outlives it, but with LEND "transaction" its session may not."""


class Lent:
    """What a wrapper with LEND "transaction" keeps about its checkout."""

    __slots__ = ("cursors", "epoch", "settled", "busy", "pinned")

    def __init__(self) -> None:
        #: Cursors open on this checkout (opened, neither closed nor collected).
        self.cursors = 0
        #: One more per checkout: a cursor of an earlier one no longer counts.
        self.epoch = 0
        #: Whether this checkout went through our connect(): one that was
        #: under way when LEND changed to "transaction" is held as before.
        self.settled = False
        #: Django's connect() or set_autocommit() under way: their own cursors
        #: (session setup, connection_created receivers, SQLite's BEGIN) are
        #: counted but return nothing (the state is half-changed then).
        self.busy = 0
        #: Constraint checks disabled on this checkout's session (Django's
        #: disable_constraint_checking(): SQLite's schema editor, loaddata):
        #: the session keeps the connection until they are enabled again, or
        #: the statements in between would run on another session, with checks on.
        self.pinned = 0


def lent(wrapper: Any) -> Lent | None:
    """Return a wrapper's LEND "transaction" state, or None when it lends per request."""
    state: Lent | None = wrapper.__dict__.get("_sapool_lent")
    return state


def configure(wrapper: Any, mode: str | None = None) -> None:
    """Lend per transaction or per request, as ``mode`` (default: the wrapper's LEND) says.

    Called when the wrapper is made, and again whenever its settings changed
    (``sapool_pool()``); a change applies from the next checkout on.
    """
    if mode is None:
        mode = read_pool_options(wrapper.alias, wrapper.settings_dict).lend
    state = lent(wrapper)
    if mode == LEND_TRANSACTION:
        if state is None:
            _install(wrapper)
    elif state is not None:
        for name in (*SHADOWED, "_sapool_lent"):
            wrapper.__dict__.pop(name, None)


def _install(wrapper: Any) -> None:
    cls = type(wrapper)
    django_connect = cls.connect
    django_set_autocommit = cls.set_autocommit
    django_cursor = cls._cursor
    django_disable_checks = cls.disable_constraint_checking
    django_enable_checks = cls.enable_constraint_checking
    state = Lent()
    # These functions live in the wrapper's __dict__: holding the wrapper itself
    # would add a reference cycle that nothing breaks. Django 6 breaks its own
    # (the wrapper's parts refer back to it) when a dropped wrapper is collected,
    # and tests that nothing is left for gc.garbage.
    me = weakref.ref(wrapper)

    def connect() -> None:
        wrapper: Any = me()  # alive: Django calls this on it
        state.epoch += 1
        state.cursors = 0
        state.pinned = 0
        state.settled = False
        state.busy += 1
        try:
            django_connect(wrapper)
        except BaseException:
            # Checked out, then the session setup or a connection_created
            # receiver failed: Django keeps the connection, half set up. Give
            # it back now, else this wrapper holds it for good. The next
            # statement checks out again and redoes what failed (the pool
            # marks the session setup done only when it succeeded).
            if wrapper.connection is not None:
                wrapper.close_if_unusable_or_obsolete()
            raise
        finally:
            state.busy -= 1
            state.settled = True

    def set_autocommit(
        autocommit: bool, force_begin_transaction_with_broken_autocommit: bool = False
    ) -> None:
        state.busy += 1
        try:
            django_set_autocommit(me(), autocommit, force_begin_transaction_with_broken_autocommit)
        finally:
            state.busy -= 1
            # The outermost atomic() block's end (Django's Atomic.__exit__), or
            # the end of manual transaction management; also when an on_commit()
            # callback (run in there) raised: autocommit is back on by then.
            if autocommit and not state.cursors:
                release(me(), state)

    def cursor(name: str | None = None) -> Any:
        # Counted once the backend has made it: what the backend runs on it
        # first (django-tenants' SET search_path, at every cursor) is its own
        # session setup, not the caller's statement, so it is not warned
        # about; a cursor the backend opens and closes meanwhile (its own, for
        # a named one) returns nothing.
        state.busy += 1
        try:
            wrapped = django_cursor(me(), name)
        finally:
            state.busy -= 1
        try:
            base = type(wrapped)
            # The counted class, made once per class: a dict lookup, not a call.
            wrapped.__class__ = _COUNTED.get(base) or _counted(base)
        except TypeError:  # a cursor class of another layout: held as with "request"
            return wrapped
        wrapped._sapool_epoch = state.epoch
        state.cursors += 1
        return wrapped

    def disable_constraint_checking() -> bool:
        # Busy meanwhile: its own statements (SQLite's PRAGMA, MySQL's SET)
        # return nothing and are not warned about.
        state.busy += 1
        try:
            disabled = bool(django_disable_checks(me()))
        finally:
            state.busy -= 1
        if disabled:
            state.pinned += 1
        elif not state.cursors:  # nothing disabled (PostgreSQL): nothing to keep
            release(me(), state)
        return disabled

    def enable_constraint_checking() -> None:
        state.busy += 1
        try:
            django_enable_checks(me())
        finally:
            state.busy -= 1
        if state.pinned:
            state.pinned -= 1
        if not state.cursors:
            release(me(), state)

    wrapper.__dict__.update(
        _sapool_lent=state,
        connect=connect,
        set_autocommit=set_autocommit,
        _cursor=cursor,
        disable_constraint_checking=disable_constraint_checking,
        enable_constraint_checking=enable_constraint_checking,
    )


def release(wrapper: Any, state: Lent) -> None:
    """Give the connection back when nothing needs its session; else keep it."""
    if (
        state.settled
        and not state.busy
        and not state.pinned
        and wrapper.connection is not None
        and wrapper.autocommit
        and not wrapper.in_atomic_block
        and wrapper._sapool_record is not None
        # A transaction the driver sees open although Django's autocommit is
        # on: a raw START TRANSACTION / BEGIN, whose statements until its
        # COMMIT or ROLLBACK must run in this session (the return's reset
        # would roll it back, and the next statement run in autocommit).
        and wrapper._sapool_state.flags.clean()
    ):
        # The request end's path (lean.py): Django's close(), leaner; it lets
        # a thread waiting for the connection take it (ManagedPool.checkin).
        wrapper.close_if_unusable_or_obsolete()


def _closed(cursor: Any) -> None:
    """Count a cursor closed (once); give the connection back after the last one.

    Only in the wrapper's own thread (or one it is shared with): the count is
    never changed by two threads at once, and Django refuses to close another
    thread's connection. A cursor closed or collected elsewhere (a reference
    cycle found by the garbage collector) stays counted: the connection is
    then held until the request ends, as with LEND "request".
    """
    wrapper = cursor.db
    if wrapper._thread_ident != get_ident() and not wrapper.allow_thread_sharing:
        return
    epoch = cursor.__dict__.pop("_sapool_epoch", None)
    if epoch is None:
        return
    state: Lent | None = wrapper.__dict__.get("_sapool_lent")  # lent(), without the call
    if state is None or state.epoch != epoch:
        return  # its checkout ended already (the request's end, or close())
    state.cursors -= 1
    if not state.cursors:
        release(wrapper, state)


def _warn(wrapper: Any, sql: str) -> None:
    statement = " ".join(sql.split())
    if len(statement) > 60:
        statement = statement[:57] + "..."
    warnings.warn(
        f"django_sapool: {statement!r} outside atomic() on alias {wrapper.alias!r}, which "
        f"lends connections per transaction (POOL_OPTIONS['LEND'] = 'transaction'): its "
        f"effect stays in a server session that goes back to the pool when this cursor "
        f"closes, so later statements may run in another session, and the next borrower "
        f"of this one inherits it. Run it inside transaction.atomic() (SET LOCAL, "
        f"pg_advisory_xact_lock), or give this work an alias with LEND 'request'.",
        LendWarning,
        stacklevel=3,
    )


class _CountedCursor:
    """Django's cursor wrapper, counted open on its wrapper until closed or collected.

    The base of every counted class; ``_counted()`` adds ``execute()`` and
    ``close()``, made per wrapped class so that they call the wrapped class's
    own methods directly (``super()`` costs a lookup at every statement).
    """

    cursor: Any
    db: Any
    __dict__: dict[str, Any]

    def __del__(self) -> None:
        # Dropped without close(): close the driver's cursor here only when
        # its checkout is still this thread's (a server-side cursor's CLOSE
        # must never reach a session lent to someone else since).
        try:
            epoch = self.__dict__.get("_sapool_epoch")
            if epoch is None:
                return
            wrapper = self.db
            state = lent(wrapper)
            if state is not None and state.epoch == epoch and wrapper._thread_ident == get_ident():
                lock = getattr(wrapper.connection, "lock", None)  # psycopg 3's
                if lock is not None and lock.locked():
                    # Found by the cycle collector, which runs at any allocation,
                    # inside the driver's own code too: psycopg 3 holds this lock
                    # there, and the CLOSE (or the return's reset) would wait for
                    # it in this very thread. It stays counted; the request's end
                    # returns the connection.
                    return
                try:
                    self.cursor.close()
                except Exception:
                    pass
            _closed(self)
        except Exception:  # never raise from a finalizer (interpreter shutdown...)
            pass


def _counting_methods(base: type) -> dict[str, Any]:
    """Return the ``execute()`` and ``close()`` of the counted subclass of ``base``.

    They look ``base``'s methods up at each call: a test's ``mock.patch`` of
    Django's ``CursorWrapper.execute``, or an APM agent instrumenting late,
    must see every statement.
    """

    def execute(self: Any, sql: Any, params: Any = None) -> Any:
        db = self.db
        if (
            type(sql) is str
            and not db.in_atomic_block
            and db.autocommit
            # sets_session_state(), without the call once the text was seen.
            and (_SEEN.get(sql) or (sql not in _SEEN and sets_session_state(sql)))
        ):
            state = lent(db)
            if state is not None and state.settled and not state.busy:
                _warn(db, sql)
        return base.execute(self, sql, params)  # type: ignore[attr-defined]

    # Django's CursorWrapper has no close() of its own: it passes close() on
    # to the driver's cursor. (Asked once: a failed getattr() at each call
    # raises and catches an AttributeError, ~2,500 instructions.)
    has_close = hasattr(base, "close")

    def close(self: Any) -> None:
        try:
            if has_close:
                base.close(self)  # type: ignore[attr-defined]
            else:
                self.cursor.close()
        finally:
            _closed(self)
            # No longer counted: back to its own class, so that its collection
            # does not call __del__ (a Python call per statement) for nothing.
            self.__class__ = base

    return {"execute": execute, "close": close}


_COUNTED: dict[type, type] = {}


def _counted(base: type) -> type:
    """Return the counted subclass of a cursor wrapper class (made once per class)."""
    counted = _COUNTED.get(base)
    if counted is None:
        counted = _COUNTED[base] = type(
            f"Lent{base.__name__}",
            (_CountedCursor, base),
            {
                **_counting_methods(base),
                "__module__": base.__module__,
                "__qualname__": f"Lent{base.__qualname__}",
            },
        )
    return counted
