"""The mixins every pooled backend's DatabaseWrapper and DatabaseCreation use.

Django keeps driving its own backend: ``get_connection_params()``, the cursor
and transaction machinery are untouched; ``ensure_connection()``, ``connect()``
and the request's ``close()`` run as lean copies (``lean.py``). We fill four hooks:

- ``get_new_connection`` checks a *raw* DBAPI connection out of the pool. Django
  gets the driver's own connection object, never SQLAlchemy's proxy, so
  ``conn.autocommit = x`` and psycopg's ``conn.info`` behave as Django expects.
  When the pool needs a new connection it calls Django's own
  ``get_new_connection`` for this wrapper, so every vendor's setup (SQLite
  functions, psycopg adapters, isolation level) happens exactly as without us,
  with parameters worked out for that connection (``get_connection_params()``,
  then POOL_OPTIONS' PASSWORD_PROVIDER): a backend that puts a short-lived token
  there connects with a current one. A wrapper that never pools (Django's
  ``_nodb_cursor()``, SQLite in memory) opens its connection the same way.
- ``init_connection_state`` runs once per raw connection, not per checkout: what
  it sets lives in the server session, and re-sending it would cost round trips.
- ``_close`` returns the connection to the pool (reset per RESET_ON_RETURN), or
  discards it when broken, and leaves ``self.connection = None``.
- ``check_settings`` refuses CONN_MAX_AGE != 0 and OPTIONS["pool"].

A wrapped backend (``wrapping.py``) that overrides ``close()`` to forget
per-connection state it keeps on the wrapper (django-tenants' search_path
cache) gets its ``close()`` called at every return, as Django would.
"""

from __future__ import annotations

import operator
import os
import sys
import threading
import weakref
from typing import Any

from django.core.signals import setting_changed
from django.db.backends.base.base import NO_DB_ALIAS  # the alias of _nodb_cursor()
from django.db.utils import DatabaseErrorWrapper
from django.utils.functional import cached_property

from . import aliases, credentials, deadline, fork, lend, registry
from ._sa import Record, moved_waits
from .backends import GENERIC, backend_for
from .conf import check_connection_settings, parse_pool_options, read_pool_options
from .drivers import DriverOps
from .errors import ServerSilent
from .lean import LAZY_PARAMS, LeanDjangoSteps
from .opened import PoolDisposed
from .pool import ManagedPool
from .state import STATE, ConnState

#: Django settings changed (``override_settings``) this many times: a wrapper
#: then asks ``sapool_fingerprint_extra()`` again before it uses its pool.
_settings_changes = 0


def _count_settings_change(**kwargs: Any) -> None:
    global _settings_changes
    _settings_changes += 1


setting_changed.connect(_count_settings_change)

#: What a wrapper watches in settings_dict, beyond which a change needs no new
#: pool (the fingerprint's fields, and the two that check_settings() refuses).
WATCHED_FIELDS = (*registry.FINGERPRINT_FIELDS, "CONN_MAX_AGE", "CONN_HEALTH_CHECKS")


def _snapshot(value: Any) -> Any:
    """Copy dicts and lists (recursively) so in-place changes show; keep other objects."""
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    return value


def _creator(wrapper: PooledDatabaseWrapperMixin) -> Any:
    """Open a new server connection for the wrapper checking out (the pool's creator).

    The pool gives it the wrapper whose ``sapool_checkout()`` is under way (see
    ``opened.checking_out``), so the pool itself never holds connect parameters.
    """
    # Parameters worked out earlier in this same checkout serve its first new
    # connection only; any other (a retry, a recycle) works them out again.
    params, wrapper._sapool_fresh = wrapper._sapool_fresh, None
    return wrapper.sapool_new_connection(wrapper.sapool_connect_params(params))


class _PoolLookup:
    """The pool a wrapper found for its settings, with what it checks them against."""

    __slots__ = ("watch", "watched", "size", "changes", "pool")

    def __init__(self, settings: dict[str, Any], pool: ManagedPool) -> None:
        fields = [f for f in WATCHED_FIELDS if f in settings]
        #: Reads the watched fields of a settings_dict (a C-level itemgetter).
        self.watch = operator.itemgetter(*fields)
        #: A copy of them when the pool was looked up (in memory only: it holds
        #: what settings_dict holds; it is never shown). Values are compared by
        #: identity first, so the common case costs a lookup per field.
        self.watched = tuple(_snapshot(v) for v in self.watch(settings))
        #: How many keys settings_dict had: a watched field added shows here.
        self.size = len(settings)
        #: _settings_changes then.
        self.changes = _settings_changes
        self.pool = pool


class _ErrorWatch(DatabaseErrorWrapper):
    """Django's error wrapper, retiring the pool on errors that say the server is read-only.

    Such a write error after a failover (a demoted primary, a standby behind
    the writer's address) retires every connection of the pool at once (this
    one when it is returned), so the next checkouts reach the new writer. It
    must happen here: by the time the connection is returned, ``atomic()``'s
    rollback has reset ``errors_occurred``. Costs nothing unless an exception
    passes.
    """

    wrapper: PooledDatabaseWrapperMixin

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is None:  # as Django's, without a second call on the hot path
            return
        wrapper = self.wrapper
        pool = wrapper._sapool_pool
        if (
            pool is not None
            and wrapper.connection is not None
            and wrapper.sapool_driver.is_read_only_error(wrapper.connection, exc_value)
            and not wrapper.sapool_read_only_by_choice()
        ):
            pool.evict("a write failed on a read-only server")
        super().__exit__(exc_type, exc_value, traceback)


def _lookup(
    wrapper: PooledDatabaseWrapperMixin, settings_dict: dict[str, Any], extra: tuple[Any, ...]
) -> ManagedPool:
    """Return this process's pool for a wrapper's settings, making it the first time."""
    fp = registry.fingerprint(settings_dict, *extra)

    def build() -> ManagedPool:
        driver = wrapper.sapool_driver
        return ManagedPool(
            alias=wrapper.alias,
            vendor=wrapper.vendor,
            database=str(settings_dict.get("NAME")),
            options=parse_pool_options(wrapper.alias, settings_dict),
            driver=driver,
            creator=_creator,
            tune_sockets=not driver.sets_own_keepalive(settings_dict.get("OPTIONS") or {}),
        )

    return registry.get_pool(wrapper.alias, fp, build)


def check_all_aliases() -> None:
    """Validate the pool settings of every alias in settings.DATABASES that pools.

    Raise ImproperlyConfigured naming the first bad setting, or an option its
    backend cannot do (``aliases.support_errors``). Cheap enough to run at every
    wrapper creation (once per thread and alias). Aliases whose errors the
    caller reports itself are left out (``aliases.leaving_out``).
    """
    from django.conf import settings

    from .wrapping import wrapper_for

    databases = getattr(settings, "DATABASES", None) or {}
    left_out = aliases.left_out()
    for alias, settings_dict in databases.items():
        if not isinstance(settings_dict, dict) or alias in left_out:
            continue
        engine = settings_dict.get("ENGINE")
        # Ours, the generic one, and a project's module (pooled_wrapper() or a
        # subclass of ours); backend_for() remembers an imported ENGINE's answer.
        if backend_for(engine, settings_dict) is None:
            continue
        options = parse_pool_options(alias, settings_dict)
        if engine == GENERIC:
            wrapper_for(alias, settings_dict)  # BACKEND importable and poolable
        aliases.refuse(aliases.support_errors(alias, settings_dict, options))


class PooledDatabaseWrapperMixin(LeanDjangoSteps):
    """Put a process-wide SQLAlchemy QueuePool under a Django DatabaseWrapper."""

    #: Driver operations (transaction status, liveness, reset); set by each backend.
    sapool_driver: DriverOps
    #: Where the vendor's get_connection_params() puts PASSWORD (None: no password).
    sapool_password_key: str | None = "password"
    #: The ENGINE a pooled_wrapper() class wraps; None for our own backends.
    sapool_wraps: str | None = None

    # Declared for type checkers; provided by Django's BaseDatabaseWrapper
    # (more in LeanDjangoSteps).
    alias: str
    vendor: str

    _sapool_record: Any = None  # the SQLAlchemy connection record checked out
    _sapool_state: ConnState | None = None  # its state (the last one checked out)
    _sapool_pool: ManagedPool | None = None
    _sapool_owner: weakref.ref[Any] | None = None
    _sapool_reused = False  # set by get_new_connection, read by init_connection_state
    _sapool_cache: _PoolLookup | None = None
    # get_connection_params() of this wrapper's last settings change (or Django's
    # parameters given to get_new_connection()), until the checkout it happened
    # in hands it to its new connection (_creator), or to nothing.
    _sapool_fresh: dict[str, Any] | None = None
    #: The driver's cursors of ``QuerySet.iterator()`` opened on this checkout
    #: (``chunked_cursor()``), closed when the connection goes back: see _close().
    #: Weak: a batch job's thousands of iterators in one checkout keep nothing.
    _sapool_iterator_cursors: weakref.WeakSet[Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Instance copies of class-wide facts read at every checkout: CPython
        # 3.11 specialises reads of instance attributes, not of class ones.
        self._sapool_inline_close = self._sapool_inline_close
        self._sapool_inline_init = self._sapool_inline_init
        self._sapool_refreshes = self._sapool_refreshes
        self._sapool_mode_is_clients = self.sapool_driver.mode_is_clients
        self.sapool_driver = self.sapool_driver
        self._sapool_iterator_cursors = None
        if self.sapool_enabled():
            # Fail at startup, not at the first query, on bad POOL_OPTIONS; and
            # never run half-configured: every pooled alias is checked when the
            # first one is used, so a typo in a rarely used alias shows at once.
            options = parse_pool_options(self.alias, self.settings_dict)
            aliases.refuse(aliases.unsupported(self.alias, options, self))
            check_all_aliases()
            lend.configure(self, options.lend)  # LEND "transaction": lend.py

    #: Whether the backend's ``get_connection_params()`` sets attributes on the
    #: wrapper (SQLite's, MySQL's do), so that it must run for each wrapper even
    #: when no connection is opened. Else it runs only for a new server
    #: connection: a wrapped IAM backend's token request is not made for every
    #: thread's (under ASGI, every request's) first checkout.
    sapool_params_set_wrapper = True

    def sapool_enabled(self) -> bool:
        """Return whether this wrapper pools (not for Django's _nodb_cursor())."""
        return self.alias != NO_DB_ALIAS

    def sapool_fingerprint_extra(self) -> tuple[Any, ...]:
        """Return global state, beyond settings_dict, that shapes the session."""
        return ()

    def sapool_pool(self) -> ManagedPool:
        """Return this process's pool for the wrapper's current settings.

        Whenever the settings changed since this wrapper's last call (and the
        first time), they are validated (``check_settings()``) and, where
        ``sapool_params_set_wrapper``, Django's ``get_connection_params()``
        runs, for the wrapper attributes it sets (SQLite's transaction_mode,
        MySQL's isolation_level); its parameters serve a new connection opened
        in the same checkout, if one is.
        """
        pool = self.sapool_current_pool()
        if pool is not None:
            return pool
        self.check_settings()
        settings_dict = self.settings_dict
        pool = _lookup(self, settings_dict, self.sapool_fingerprint_extra())
        if self.sapool_params_set_wrapper:
            self._sapool_fresh = self.get_connection_params()  # type: ignore[attr-defined]
        self._sapool_cache = _PoolLookup(settings_dict, pool)
        lend.configure(self)  # LEND may have changed too: from the next checkout on
        self.sapool_settings_changed()
        return pool

    def sapool_settings_changed(self) -> None:
        """Work out what every checkout reads and only the settings decide (a backend's hook).

        Called when the pool is looked up again, i.e. the first time and after
        any change that ``sapool_current_pool()`` watches.
        """

    def sapool_current_pool(self) -> ManagedPool | None:
        """Return the pool found last if nothing it depends on changed since, else None.

        What runs at every checkout instead of hashing the settings (~10 us):
        the watched fields of settings_dict against a copy, Django's setting
        changes (TIME_ZONE, USE_TZ: ``sapool_fingerprint_extra()``), and the
        pool neither disposed nor inherited through fork(). A watched key
        deleted in place (``del settings_dict["POOL_OPTIONS"]``: back to the
        defaults) is a change too.
        """
        cache = self._sapool_cache
        if cache is None:
            return None
        settings_dict = self.settings_dict
        pool = cache.pool
        watch = cache.watch  # read, then called: CPython 3.11 specialises that
        # The whole test in the try: free in CPython 3.11+ unless raised (a
        # try around the call alone costs ~70 instructions per checkout).
        try:
            if (
                watch(settings_dict) == cache.watched
                and len(settings_dict) == cache.size
                and cache.changes == _settings_changes
                and not pool.disposed
                and pool.pid == fork.pid
            ):
                return pool
        except KeyError:  # watch(): a watched key is gone, the settings changed
            pass
        return None

    # -- Django hooks -----------------------------------------------------------

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        return _ErrorWatch(self)

    def check_settings(self) -> None:
        super().check_settings()  # type: ignore[misc]
        if self.sapool_enabled():
            check_connection_settings(self.alias, self.settings_dict)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not self.sapool_enabled():
            return self.sapool_unpooled_connection(conn_params)
        return self.sapool_checkout(self.sapool_pool(), conn_params)

    def sapool_unpooled_connection(self, conn_params: dict[str, Any]) -> Any:
        """Open a server connection that no pool keeps, as a pooled one is opened.

        Django's ``_nodb_cursor()`` (test database creation and destruction,
        PostgreSQL's connection to its 'postgres' database) connects with a
        copy of the alias's settings under the alias ``NO_DB_ALIAS``, which
        never pools; it still needs the alias's PASSWORD_PROVIDER password and
        CONNECT_TIMEOUT (``credentials.py``). Only POOL_OPTIONS is read: a
        wrapper that never pools (SQLite's in-memory database) is not refused
        CONN_MAX_AGE, and gets Django's parameters unchanged.
        """
        options = read_pool_options(self.alias, self.settings_dict)
        return self.sapool_new_connection(credentials.connect_params(self, options, conn_params))

    def sapool_checkout(self, pool: ManagedPool, conn_params: dict[str, Any]) -> Any:
        """Check a raw connection out of ``pool`` for this wrapper; return it.

        ``conn_params``: Django's, or LAZY_PARAMS (worked out if a new server
        connection is opened).
        """
        if conn_params is not LAZY_PARAMS:
            self._sapool_fresh = conn_params  # worked out by the caller, just now
        owner = self._sapool_owner
        if owner is None:
            owner = self._sapool_owner = weakref.ref(self, registry.owner_gone)
        try:
            record = pool.checkout(owner, self)
        except PoolDisposed as moved:
            record, pool = self._sapool_checkout_moved(moved, owner)
        finally:
            if self._sapool_fresh is not None:
                self._sapool_fresh = None  # this checkout's, or no one's
        state = self._sapool_state = record.info[STATE]
        self._sapool_record = record
        self._sapool_pool = pool
        self._sapool_reused = state.initialized
        return record.dbapi_connection

    def _sapool_checkout_moved(
        self, moved: PoolDisposed, owner: weakref.ref[Any]
    ) -> tuple[Record, ManagedPool]:
        """Check out of the alias's pool now, after the one waited in was disposed.

        The wait there ends when the first one would have (``moved_waits``):
        a checkout blocks at most TIMEOUT however often the pool is replaced.
        """
        self._sapool_fresh = None  # the first pool's checkout's, or no one's
        me = threading.get_ident()
        moved_waits[me] = moved.wait_ends
        try:
            while True:
                pool = self.sapool_pool()
                try:
                    return pool.checkout(owner, self), pool
                except PoolDisposed:
                    continue  # disposed again meanwhile: the same deadline holds
        finally:
            moved_waits.pop(me, None)

    def sapool_connect_params(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the parameters of one new server connection, worked out now.

        ``params``: ``get_connection_params()`` of a moment ago (this checkout);
        None calls it now. Adds CONNECT_TIMEOUT and PASSWORD_PROVIDER's password
        (``credentials.py``).
        """
        cache = self._sapool_cache
        options = (
            cache.pool.options
            if cache is not None
            else parse_pool_options(self.alias, self.settings_dict)
        )
        return credentials.connect_params(self, options, params)

    def sapool_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Open a new server connection the way Django's own backend does."""
        return super().get_new_connection(conn_params)  # type: ignore[misc]

    def sapool_set_up_session(self, autocommit: bool) -> None:
        """Run Django's session setup on a new server connection, within CONNECT_TIMEOUT.

        The driver's connect timeout ends with the login. A server that hangs
        right after it (a frozen host whose kernel still acknowledges, a
        stalled proxy) would keep the setup's statements (the time zone,
        autocommit, the role) waiting for ever: past CONNECT_TIMEOUT the
        watchdog shuts the socket down and the checkout fails.
        """

        def set_up() -> None:
            self.set_autocommit(autocommit)  # type: ignore[attr-defined]
            self.init_connection_state()

        pool = self._sapool_pool
        seconds = pool.options.connect_timeout if pool is not None else None
        deadline.run_within(
            seconds,
            self.sapool_driver.socket_fd(self.connection) if seconds is not None else None,
            set_up,
            lambda: ServerSilent(
                f"django_sapool: the server did not answer Django's session setup of a new "
                f"connection of alias {self.alias!r} within CONNECT_TIMEOUT={seconds:g}s "
                f"(a hung server or a silent network): the connection is discarded."
            ),
        )

    def init_connection_state(self) -> None:
        # Skip Django's session setup only inside connect(), for a server
        # connection that already has it; an explicit call still runs it.
        reused, self._sapool_reused = self._sapool_reused, False
        if reused:
            self.sapool_refresh_session()
            return
        state: ConnState | None = None
        if self._sapool_record is not None:
            state = self._sapool_record.info[STATE]
            if state.was_reset:
                # Before Django's setup, as the driver's own at connect: where
                # both set something (init_command's isolation level), Django's wins.
                self.sapool_restore_session()
                state.was_reset = False
        super().init_connection_state()  # type: ignore[misc]
        if state is not None:
            state.initialized = True

    def sapool_refresh_session(self) -> None:
        """Re-check session state that may have changed, without a round trip."""

    def sapool_read_only_by_choice(self) -> bool:
        """Return whether this alias's own settings make its sessions read-only (a backend's hook).

        A write refused on such an alias is the application's mistake, not a
        failover: the pool is not retired for it (see _ErrorWatch).
        """
        return False

    def sapool_restore_session(self) -> None:
        """Redo connect-time session setup that a session reset undid.

        Called before Django's ``init_connection_state()`` on a connection
        whose session was reset on return (RESET_ON_RETURN 'reset' or an SQL
        statement), as the driver's own setup runs before Django's at connect.
        """

    def is_usable(self) -> bool:
        # _close() leaves self.connection = None; Django's MySQL is_usable()
        # would call None.ping() (PostgreSQL's checks since Django's own pool).
        if self.connection is None:
            return False
        return super().is_usable()  # type: ignore[misc,no-any-return]

    def close_pool(self) -> None:
        """Dispose of this alias's pools (Django's hook for "close the connection pool").

        Django 5.1+ calls it before cloning or dropping a PostgreSQL test
        database and when TIME_ZONE changes (``ensure_timezone()``); a project
        may call it too. Idle connections close now, checked-out ones when
        returned; the next checkout makes a new pool.
        """
        registry.dispose(self.alias)

    def chunked_cursor(self) -> Any:
        # The cursor of a QuerySet.iterator() (PostgreSQL: a named, server-side
        # one), which may outlive the checkout: an iterator dropped later, in
        # any thread (an abandoned async iterator, collected in the event
        # loop's), closes its cursor on a connection by then another
        # borrower's. Closed when the connection goes back, if still open
        # then, its late close() is a no-op (Validation.close_cursors).
        cursor = super().chunked_cursor()  # type: ignore[misc]
        if self._sapool_record is not None:
            if self._sapool_iterator_cursors is None:
                self._sapool_iterator_cursors = weakref.WeakSet()
            self._sapool_iterator_cursors.add(cursor.cursor)
        return cursor

    def _close(self) -> None:
        record, pool = self._sapool_record, self._sapool_pool
        if record is None or pool is None:
            return super()._close()  # type: ignore[misc]
        self._sapool_record = self._sapool_pool = None
        self._sapool_state.autocommit = self.autocommit  # type: ignore[union-attr,attr-defined]
        iterator_cursors = self._sapool_iterator_cursors
        try:
            if iterator_cursors is not None:
                self._sapool_iterator_cursors = None
            if pool.pid != fork.pid:
                # Inherited through fork(): the parent owns it; never touch it.
                registry.keep_inherited(record, self.connection)
            else:
                pool.checkin(record, self.errors_occurred, iterator_cursors)  # type: ignore[attr-defined]
        finally:
            # Even inside atomic(): the raw connection is back in the pool, and
            # another thread may own it now (Django's own pool does the same).
            self.connection = None


class PooledCreationMixin:
    """Dispose pools where Django's test runner creates, clones and drops databases.

    Idle pooled connections make ``DROP DATABASE`` and
    ``CREATE DATABASE ... TEMPLATE`` fail on PostgreSQL, and keep deleted SQLite
    files open. Django's own hook, ``close_pool()``, is not enough: only its
    PostgreSQL backend calls it (from Django 5.1, not when creating), and it is
    per alias, while another alias may hold connections to the same test
    database (a replica with TEST["MIRROR"]). So every pool of that database goes.
    """

    connection: Any

    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> Any:
        registry.dispose(database=self._get_test_db_name())  # type: ignore[attr-defined]
        template = (self.connection.settings_dict.get("TEST") or {}).get("TEMPLATE")
        if template:
            # PostgreSQL's CREATE DATABASE ... TEMPLATE fails while the template
            # has sessions (the project's own database, used before the run).
            registry.dispose(database=template)
        return super()._create_test_db(verbosity, autoclobber, keepdb)  # type: ignore[misc]

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> Any:
        registry.dispose(database=self.connection.settings_dict["NAME"])
        return super()._clone_test_db(suffix, verbosity, keepdb)  # type: ignore[misc]

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> Any:
        registry.dispose(database=test_database_name)
        return super()._destroy_test_db(test_database_name, verbosity)  # type: ignore[misc]


def forget_inherited_connections() -> None:
    """In a forked child, drop this thread's inherited connections (see ``fork.py``)."""
    # Never import django.db here (see after_fork() in __init__.py): if it isn't
    # loaded, no wrapper can hold a connection.
    db = sys.modules.get("django.db")
    if db is None:
        return
    try:
        wrappers = db.connections.all(initialized_only=True)
    except Exception:  # settings not configured, or Django < 4.1
        return
    for wrapper in wrappers:
        if isinstance(wrapper, PooledDatabaseWrapperMixin):
            _forget_inherited(wrapper)


def _forget_inherited(wrapper: PooledDatabaseWrapperMixin) -> None:
    """Drop a wrapper's inherited connection without closing it (after fork)."""
    pool = wrapper._sapool_pool
    if wrapper._sapool_record is not None and pool is not None and pool.pid != os.getpid():
        registry.keep_inherited(wrapper._sapool_record, wrapper.connection)
        wrapper._sapool_record = wrapper._sapool_pool = None
        wrapper._sapool_iterator_cursors = None  # the parent's: never closed here
        wrapper.connection = None
        if not wrapper._sapool_inline_close:
            _forget_session_state(wrapper)


def _forget_session_state(wrapper: PooledDatabaseWrapperMixin) -> None:
    """Run a wrapped backend's own close() once its inherited connection is gone.

    It forgets what the backend keeps on the wrapper about its server
    session: django-tenants' search_path cache (TENANT_LIMIT_SET_CALLS)
    would otherwise skip the SET on the child's next session, which another
    tenant may have used. With no connection, Django's part of close() only
    drops the parent's on_commit callbacks.
    """
    try:
        wrapper.close()  # type: ignore[attr-defined]
    except Exception as exc:  # a fork hook must go on with the other wrappers
        registry.logger.warning(
            "django_sapool: after fork, %s.close() failed (%s: %s); state it keeps "
            "per connection may describe the parent's session",
            type(wrapper).__qualname__,
            type(exc).__name__,
            exc,
        )
