"""Pool another Django backend: django-tenants', django-prometheus', GIS, a project's own.

``pooled_wrapper(engine)`` returns a DatabaseWrapper class made of our vendor
mixin (``PostgresPoolMixin``, ``MySQLPoolMixin`` or ``SQLitePoolMixin``) and
that backend's own DatabaseWrapper, with a creation class made of
``PooledCreationMixin`` and the backend's own. Everything vendor-specific
(driver operations, GIS, test databases) comes from the Django backend the
wrapped one is built on, found in its class hierarchy; the wrapped backend keeps
doing all it did, as Django's own does under our six backends.

Two ways to use it (README, "Pooling another backend"):

- a module of the project's own, ``myproject/db/base.py``::

      DatabaseWrapper = django_sapool.pooled_wrapper("django_prometheus.db.backends.postgresql")

  with ``ENGINE = "myproject.db"``;
- no code: ``ENGINE = "django_sapool.backends.pooled"`` with
  ``POOL_OPTIONS["BACKEND"] = "django_tenants.postgresql_backend"``
  (``backends/pooled/base.py``, which calls :func:`wrapper_for`).

The same engine always gives the same class: pools, ``isinstance`` checks and
Django's ``connection_created`` senders see one class per wrapped backend.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from importlib import import_module
from typing import Any

from django.core.exceptions import ImproperlyConfigured

#: The Django backends we know how to pool, by the module of their
#: DatabaseWrapper: the module and name of our mixin for them. A backend built
#: on one of them (a subclass of its DatabaseWrapper) is pooled with that mixin.
FAMILIES: dict[str, tuple[str, str]] = {
    "django.db.backends.postgresql.base": (
        "django_sapool.backends.postgresql.base",
        "PostgresPoolMixin",
    ),
    "django.db.backends.mysql.base": ("django_sapool.backends.mysql.base", "MySQLPoolMixin"),
    "django.db.backends.sqlite3.base": ("django_sapool.backends.sqlite3.base", "SQLitePoolMixin"),
}
#: What the refusal of another vendor names.
SUPPORTED = "postgresql, mysql and sqlite"
#: Modules of backends that pool by themselves, reading POOL_OPTIONS too
#: (django-db-connection-pool): POOL_OPTIONS on them is not a mistake.
SELF_POOLING = ("dj_db_conn_pool.",)

_lock = threading.Lock()
_classes: dict[str, type] = {}


def pooled_wrapper(engine: str) -> type:
    """Return the pooled DatabaseWrapper class of a Django backend (an ENGINE string).

    Raise ImproperlyConfigured when ``engine`` is no Django backend, is already
    pooled, or is built on a backend we cannot pool.
    """
    return wrap(engine, "")


def wrapper_for(alias: str, settings_dict: Mapping[str, Any]) -> type:
    """Return the pooled class of the backend the generic ENGINE's alias names."""
    from .conf import backend_error, read_pool_options

    backend = read_pool_options(alias, settings_dict).backend
    if backend is None:
        raise ImproperlyConfigured(backend_error(alias, settings_dict))
    return wrap(backend, f"settings.DATABASES[{alias!r}]['POOL_OPTIONS']['BACKEND']")


def is_poolable(engine: str) -> bool:
    """Return whether ``pooled_wrapper(engine)`` pools a backend that does not pool itself."""
    try:
        wrapped = wrap(engine, "")
    except Exception:  # not a backend, none we pool, or it fails to import
        return False
    return not any(c.__module__.startswith(SELF_POOLING) for c in wrapped.__mro__)


def wrap(engine: str, setting: str) -> type:
    """Return (and cache) the pooled class of ``engine``; ``setting`` names where it was set.

    ``setting`` is the setting path for the generic ENGINE; "" for a
    ``pooled_wrapper()`` call, whose error messages then name the call.
    """
    cls = _classes.get(engine) if isinstance(engine, str) else None
    if cls is not None:
        return cls
    where = setting or f"django_sapool.pooled_wrapper({engine!r})"
    with _lock:  # two threads building their first wrapper must get one class
        cls = _classes.get(engine)
        if cls is None:
            cls = _classes[engine] = _compose(engine, where)
    return cls


def _compose(engine: object, where: str) -> type:
    from .backends import GENERIC, PREFIX
    from .wrapper import PooledCreationMixin, PooledDatabaseWrapperMixin

    if not isinstance(engine, str) or not engine:
        raise ImproperlyConfigured(
            f"{where}: the backend to pool must be an ENGINE string such as "
            f"'django_tenants.postgresql_backend', got {engine!r} ({type(engine).__name__})."
        )
    if engine == GENERIC:
        raise ImproperlyConfigured(
            f"{where}: {GENERIC!r} is django_sapool's generic ENGINE, already pooled: "
            f"name the backend it should pool (what ENGINE would be without django_sapool)."
        )
    module_name = f"{engine}.base"
    try:
        module = import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) == module_name:  # the package is there, not base.py
            raise ImproperlyConfigured(
                f"{where}: {engine!r} is not a Django database backend: it has no module "
                f"{module_name} (defining DatabaseWrapper). Name the package that ENGINE "
                f"would name without django_sapool."
            ) from exc
        raise ImproperlyConfigured(
            f"{where}: the backend {engine!r} cannot be imported ({module_name}): "
            f"{type(exc).__name__}: {exc}. Name an installed Django database backend "
            f"(what ENGINE would be without django_sapool), with its driver installed."
        ) from exc
    from django.db.backends.base.base import BaseDatabaseWrapper

    wrapped = getattr(module, "DatabaseWrapper", None)
    if not (isinstance(wrapped, type) and issubclass(wrapped, BaseDatabaseWrapper)):
        found = "none" if wrapped is None else f"{wrapped!r}"
        raise ImproperlyConfigured(
            f"{where}: {engine!r} is not a Django database backend: {module_name} must "
            f"define DatabaseWrapper, a subclass of Django's BaseDatabaseWrapper (found "
            f"{found}). Name the package whose base.py defines it, as ENGINE would."
        )
    if issubclass(wrapped, PooledDatabaseWrapperMixin):
        what = "one of django_sapool's backends" if engine.startswith(PREFIX) else "pooled"
        raise ImproperlyConfigured(
            f"{where}: {engine!r} is already {what} ({wrapped.__module__}."
            f"{wrapped.__qualname__} has django_sapool's pool): use it directly, "
            f"ENGINE = {engine!r}, instead of wrapping it again."
        )
    mixin = _family_mixin(wrapped)
    if mixin is None:
        vendor = getattr(wrapped, "vendor", "unknown")
        raise ImproperlyConfigured(
            f"{where}: {engine!r} is a {vendor!r} backend, which django_sapool cannot "
            f"pool: it pools {SUPPORTED} backends (built on Django's postgresql, mysql "
            f"or sqlite3 backend, whose drivers it knows). Leave this alias unpooled: "
            f"ENGINE = {engine!r} without django_sapool (its own or its driver's "
            f"pooling, if it has one)."
        )
    label = f"pooled_wrapper({engine!r})"
    creation = type(
        "DatabaseCreation",
        (PooledCreationMixin, wrapped.creation_class),
        {"__module__": __name__, "__qualname__": f"{label}.DatabaseCreation"},
    )
    return type(
        "DatabaseWrapper",
        (mixin, wrapped),
        {
            "__module__": __name__,
            "__qualname__": f"{label}.DatabaseWrapper",
            "__doc__": f"{engine}'s DatabaseWrapper on django_sapool's pool.",
            "creation_class": creation,
            "sapool_wraps": engine,
        },
    )


def _family_mixin(wrapped: type) -> type | None:
    """Return our mixin for the Django backend ``wrapped`` is built on, or None."""
    for cls in wrapped.__mro__:
        found = FAMILIES.get(cls.__module__)
        if found is not None and cls.__name__ == "DatabaseWrapper":
            module_name, mixin_name = found
            mixin: type = getattr(import_module(module_name), mixin_name)
            return mixin
    return None
