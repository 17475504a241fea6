"""Django's steps at every checkout and return, repeated lean: the copies that pay.

Django opens a connection through ``ensure_connection()`` and ``connect()`` and
ends a request with ``close_if_unusable_or_obsolete()``. With a pool these run
at every request, so :class:`LeanDjangoSteps` repeats them, statement for
statement, minus what costs instructions and cannot matter for a pooled
connection; each says what it saves (``benchmarks/instructions.py``), and
``tests/unit/test_hot_path.py`` fails when a Django release changes the original.
Everything about the pool itself is in ``wrapper.py``.
"""

from __future__ import annotations

import _thread
import os
import time
from asyncio import _get_running_loop
from typing import Any

from django.core.exceptions import SynchronousOnlyOperation
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.utils import ProgrammingError

#: Passed by our connect() instead of get_connection_params(): a checkout of a
#: pooled connection needs none, and a new server connection gets parameters
#: worked out when it is opened (``_creator``). Django's side effects on the
#: wrapper (SQLite's transaction_mode, MySQL's isolation_level) still happen:
#: get_connection_params() runs once per wrapper and settings where it sets them
#: (``sapool_pool()``).
LAZY_PARAMS: dict[str, Any] = {}

#: django.utils.asyncio.async_unsafe's message (see ensure_connection()).
ASYNC_UNSAFE = "You cannot call this from an async context - use a thread or sync_to_async."


def _has_own_close(cls: type) -> bool:
    """Return whether a wrapper class overrides Django's close() (django-tenants does)."""
    django_close = next(
        (
            c.__dict__["close"]
            for c in cls.__mro__
            if c.__module__.startswith(("django.db.backends.", "django.contrib.gis."))
            and "close" in c.__dict__
        ),
        BaseDatabaseWrapper.close,
    )
    return getattr(cls, "close", django_close) is not django_close


#: Django's own ``BaseDatabaseWrapper.ensure_connection``, as last seen unpatched.
_djangos_ensure_connection: Any = None


def _patched_ensure_connection() -> Any:
    """Return ``BaseDatabaseWrapper.ensure_connection`` if a test tool replaced it, else None.

    Django's is known by its name (``async_unsafe`` keeps it): pytest-django
    may patch it before this module is imported, and puts Django's back when
    a test may use the database.
    """
    global _djangos_ensure_connection
    current = BaseDatabaseWrapper.ensure_connection
    if (
        getattr(current, "__module__", None) == BaseDatabaseWrapper.__module__
        and getattr(current, "__qualname__", None) == "BaseDatabaseWrapper.ensure_connection"
    ):
        _djangos_ensure_connection = current
        return None
    return current


def _defined_in(cls: type, name: str) -> str:
    """Return the module of the class in ``cls``'s MRO that defines ``name``."""
    return next((c.__module__ for c in cls.__mro__ if name in c.__dict__), "")


class LeanDjangoSteps:
    """Django's ensure_connection(), connect() and close(), for a pooled connection."""

    #: False when the class overrides Django's close() (set per class, below).
    _sapool_inline_close = True
    #: False when a subclass overrides our init_connection_state() (set per class).
    _sapool_inline_init = True
    #: False when the backend re-checks no session state at a checkout (set per class).
    _sapool_refreshes = True

    # Declared for type checkers; provided by Django's BaseDatabaseWrapper and
    # by PooledDatabaseWrapperMixin (wrapper.py).
    settings_dict: dict[str, Any]
    connection: Any
    savepoint_ids: list[Any]
    atomic_blocks: list[Any]
    run_on_commit: list[Any]
    run_commit_hooks_on_set_autocommit_on: bool
    in_atomic_block: bool
    closed_in_transaction: bool
    _thread_ident: int
    _sapool_record: Any
    _sapool_state: Any
    _sapool_reused: bool
    _sapool_mode_is_clients: bool

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Our close_if_unusable_or_obsolete() repeats Django's close() to save
        # a call per request; a backend with a close() of its own (it forgets
        # state it keeps per connection, as django-tenants does) gets it called.
        cls._sapool_inline_close = not _has_own_close(cls)
        # connect() skips the call to our init_connection_state() for a reused
        # connection; a subclass that overrides it gets it called.
        cls._sapool_inline_init = _defined_in(cls, "init_connection_state").startswith(
            "django_sapool."
        )
        # ... and of sapool_refresh_session() when the backend has none but
        # the mixin's, which does nothing (MySQL, SQLite): a call saved per
        # checkout (MySQL's sq: 157.3k -> 156.1k, the mean of hash seeds 1-4).
        cls._sapool_refreshes = (
            _defined_in(cls, "sapool_refresh_session") != "django_sapool.wrapper"
        )

    def ensure_connection(self) -> None:
        """Guarantee that a connection to the database is established (Django's, leaner).

        Django's ``ensure_connection()`` under its ``async_unsafe`` decorator,
        statement for statement (``tests/unit/test_hot_path.py`` watches both),
        but asking whether an event loop runs in this thread without raising
        and catching an exception when none does. It runs at every checkout
        and every query (``cursor()`` calls it). With the thread test first in
        ``close_if_unusable_or_obsolete()`` and no ``connection_created.send()``
        call without receivers: ``benchmarks/instructions.py --cycles 2000 sc``
        65.5k -> 55.6k, sq 205.8k -> 195.1k (2026-12-04). Django's error
        wrapper is entered only when ``connect()`` raised, around the same
        exception (a ``with`` block on every checkout: 2,300 instructions).

        Where a test tool replaced Django's (pytest-django's database blocker,
        SimpleTestCase's refusal of databases a test did not declare), that
        one runs instead: it decides whether the test may connect at all.
        """
        if BaseDatabaseWrapper.ensure_connection is not _djangos_ensure_connection:
            patched = _patched_ensure_connection()
            if patched is not None:
                return patched(self)  # type: ignore[no-any-return]
        if _get_running_loop() is not None and not os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
            raise SynchronousOnlyOperation(ASYNC_UNSAFE)
        if self.connection is None:
            # Django 5.0's refusal, on 4.2 too: there Django's close() inside
            # atomic() keeps the closed connection, so the block's next
            # statement fails; ours is back in the pool, and a new one would
            # run the rest of the block in autocommit, outside its transaction.
            if self.in_atomic_block and self.closed_in_transaction:
                raise ProgrammingError("Cannot open a new connection in an atomic block.")
            try:
                self.connect()
            except Exception:
                # Django's error wrapper, entered only when there is something
                # to translate: the same exception, raised inside it.
                with self.wrap_database_errors:  # type: ignore[attr-defined]
                    raise

    def connect(self) -> None:
        """Check a connection out of the pool; Django's connect(), minus dead weight.

        The same steps as Django's ``BaseDatabaseWrapper.connect()`` (identical
        from Django 4.2 to 6.1; ``tests/unit/test_hot_path.py`` watches it), in
        the same order, with three savings on a pooled connection: the connect
        parameters are worked out only when a new server connection is opened
        (and, for SQLite and MySQL, once per wrapper and settings, for their
        side effects on it);
        ``set_autocommit()`` switches the driver only if its mode differs; and
        the session setup runs once per server connection (see
        ``init_connection_state``). ``check_settings()`` runs whenever the
        settings changed (``sapool_pool()``). Not wrapped in ``async_unsafe``
        again: Django reaches it through ``ensure_connection()``, which is.

        A copy that pays: calling Django's ``connect()`` instead costs 32,000
        more instructions per checkout and return (``benchmarks/instructions.py
        --cycles 2000 sc``: 117.5k against 85.2k, 2026-12-03).
        """
        # The pool found last, when nothing it depends on changed (else the
        # lookup: settings checked, and whether this wrapper pools at all).
        pool = self.sapool_current_pool()  # type: ignore[attr-defined]
        if pool is None:
            if not self.sapool_enabled():  # type: ignore[attr-defined]
                return super().connect()  # type: ignore[misc,no-any-return]
            pool = self.sapool_pool()  # type: ignore[attr-defined]
        self.in_atomic_block = False
        self.savepoint_ids = []
        self.atomic_blocks = []
        self.needs_rollback = False
        settings_dict = self.settings_dict
        self.health_check_enabled = settings_dict["CONN_HEALTH_CHECKS"]
        max_age = settings_dict["CONN_MAX_AGE"]
        self.close_at = None if max_age is None else time.monotonic() + max_age
        self.closed_in_transaction = False
        self.errors_occurred = False
        self.health_check_done = True
        self.connection = self.sapool_checkout(pool, LAZY_PARAMS)  # type: ignore[attr-defined]
        autocommit = settings_dict["AUTOCOMMIT"]
        if not self._sapool_reused:
            # A new server connection: Django's session setup, within CONNECT_TIMEOUT.
            self.sapool_set_up_session(autocommit)  # type: ignore[attr-defined]
        else:
            if (
                autocommit
                and not self.run_commit_hooks_on_set_autocommit_on
                and (
                    self._sapool_state.autocommit
                    if self._sapool_mode_is_clients
                    else self._sapool_state.flags.autocommit() is True
                )
            ):
                # What set_autocommit(True) leaves behind on a connection already
                # in autocommit mode, without its checks (nothing is open yet).
                self.autocommit = True
            else:
                self.set_autocommit(autocommit)  # type: ignore[attr-defined]
            if self._sapool_inline_init:
                # What our init_connection_state() does for a connection that has
                # Django's session setup already, without the call to it.
                self._sapool_reused = False
                if self._sapool_refreshes:
                    self.sapool_refresh_session()  # type: ignore[attr-defined]
            else:
                self.init_connection_state()  # type: ignore[attr-defined]
        if connection_created.receivers:  # what send() looks at first, without the call
            connection_created.send(sender=self.__class__, connection=self)
        self.run_on_commit = []

    def close_if_unusable_or_obsolete(self) -> None:
        if self._sapool_record is None:
            if self.connection is None:
                # What Django's does then (nothing), without the call: at every
                # request's start, and at its end with LEND "transaction".
                return
            return super().close_if_unusable_or_obsolete()  # type: ignore[misc]
        if not self._sapool_inline_close:
            return self.close()  # type: ignore[attr-defined,no-any-return]
        # CONN_MAX_AGE is always 0 with a pool, so Django would close anyway; it
        # would first spend a round trip on is_usable() after an error, which the
        # pool's reset on return makes unnecessary. What follows is Django's
        # close() (watched by tests/unit/test_hot_path.py) without its second
        # async_unsafe check: close_if_unusable_or_obsolete() has none in Django
        # either, and runs at every request's end. A copy that pays: Django's
        # own costs 11,900 more instructions per cycle (instructions.py sc:
        # 97.1k against 85.2k, 2026-12-03).
        # Django's validate_thread_sharing(), cheapest test first: the thread.
        if self._thread_ident != _thread.get_ident():
            self.validate_thread_sharing()  # type: ignore[attr-defined]
        self.run_on_commit = []
        if self.closed_in_transaction or self.connection is None:
            return
        try:
            self._close()  # type: ignore[attr-defined]
        finally:
            if self.in_atomic_block:
                self.closed_in_transaction = True
                self.needs_rollback = True
            else:
                self.connection = None
