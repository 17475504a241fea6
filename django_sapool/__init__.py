"""Django database backends on SQLAlchemy's connection pool.

Switch ``ENGINE`` to ``django_sapool.backends.<vendor>``; tune with
``DATABASES[alias]["POOL_OPTIONS"]``. The small public API is here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import PoolExhausted, ServerSilent
    from .stats import PoolStatus
    from .wrapping import pooled_wrapper

from . import fork as _fork

__version__ = "0.1.0"

# The one fork hook (fork.py says what a child forgets, and in which order).
_fork.register()

__all__ = [
    "PoolExhausted",
    "PoolStatus",
    "ServerSilent",
    "__version__",
    "after_fork",
    "dispose",
    "evict",
    "pool_status",
    "pooled_wrapper",
    "settings_from_url",
]


def dispose(alias: str | None = None) -> int:
    """Close the idle connections of this process's pools (of one alias); return the count.

    Connections checked out at that moment are closed when they are returned. The
    next checkout builds a fresh pool.
    """
    from . import registry

    return registry.dispose(_alias(alias, "dispose"))


def evict(alias: str | None = None) -> int:
    """Retire every connection of this process's pools (of one alias); return the pool count.

    Idle connections are closed now, checked-out ones when they are returned, so the
    next requests open new connections: call it from an ops signal after a failover
    or a DNS switch (HikariCP's ``softEvictConnections``). A write that fails because
    the server is read-only does the same by itself.
    """
    from . import registry

    return registry.evict(_alias(alias, "evict"))


def pool_status(alias: str | None = None) -> list[PoolStatus]:
    """Return a snapshot of this process's pools (of one alias): one per alias in use.

    A pool disposed of (``dispose()``, a settings change at run time, a test
    database dropped) is listed after them, with ``disposed`` True, while
    connections it lent before are still out: they stay open until returned.
    """
    from . import registry

    return registry.status(_alias(alias, "pool_status"))


def _alias(alias: object, call: str) -> str | None:
    """Return ``alias`` if it names an alias (or is None); raise a clear error if not.

    A typo must not pass for "nothing to do": ``evict("primary ")`` after a
    failover would close nothing and return 0. An alias is known when Django's
    connection handler has it (settings.DATABASES, or added at run time) or
    this process has a pool for it; before Django is configured any str goes.
    """
    if alias is None:
        return None
    if not isinstance(alias, str):
        raise TypeError(
            f"django_sapool.{call}() takes an alias name (a str) or None, got "
            f"{type(alias).__name__} {alias!r}"
        )
    from django.conf import settings

    if not settings.configured:
        return alias
    from django.db import connections

    from . import registry

    known = list(connections.settings)
    if alias not in known and not registry.has_pools(alias):
        raise ValueError(
            f"django_sapool.{call}({alias!r}): there is no such alias; the aliases are "
            f"{', '.join(map(repr, known))}."
        )
    return alias


def after_fork() -> None:
    """Forget pools and connections inherited from a parent process.

    Runs automatically after ``os.fork()``. Call it from gunicorn's ``post_fork``,
    Celery's ``worker_process_init`` or a ``multiprocessing`` initializer as well;
    it is idempotent.
    """
    # fork.py touches only the modules already loaded: if no backend of ours was
    # loaded in this process or its parent, nothing can have been inherited.
    # Importing one here would import django.db, and gunicorn runs post_fork
    # before its gevent/eventlet worker monkey-patches: Django's per-thread
    # connections would then be one connection shared by every greenlet.
    _fork.after_fork_in_child()


def settings_from_url(url: str, *, alias: str = "default", **overrides: Any) -> dict[str, Any]:
    """Return ``DATABASES[alias]`` for a database URL, pool options in its query string.

    ``settings_from_url("postgres://app@db/app?pool_size=10&max_overflow=0")``:
    ENGINE is ours for the scheme, POOL_OPTIONS keys (lower case) are validated as
    settings are, other parameters go to OPTIONS. Keywords are settings of the
    alias (``ENGINE=``, ``TEST=``...). Needs dj-database-url (the ``url`` extra).
    """
    from . import dburl

    return dburl.settings_from_url(url, alias=alias, **overrides)


def __getattr__(name: str) -> Any:
    # PoolExhausted and PoolStatus are loaded on first use: both import django.db,
    # and "import django_sapool" must stay free of that. gunicorn runs post_fork
    # (where after_fork() is called) before a gevent worker monkey-patches; a
    # django.db imported then keeps real thread-locals, and every greenlet would
    # share one connection.
    if name in ("PoolExhausted", "ServerSilent"):
        from . import errors

        return getattr(errors, name)
    if name == "PoolStatus":
        from .stats import PoolStatus

        return PoolStatus
    if name == "pooled_wrapper":  # imports django.db too (a backend's base module)
        from .wrapping import pooled_wrapper

        return pooled_wrapper
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
