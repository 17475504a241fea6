"""The six backends, described once, and what each one asks its server.

``BACKENDS`` is the one table of them: the system checks, ``manage.py sapool``
and the tests read it instead of keeping lists of their own. Importing this
package imports no backend (our PostgreSQL backend needs its driver).

``backend_for()`` also knows the ENGINEs that pool another backend: the
generic one (``GENERIC``, which reads ``POOL_OPTIONS["BACKEND"]``) and a
project's own module built with ``django_sapool.pooled_wrapper()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import import_module
from typing import Any

#: Every django_sapool ENGINE starts with this.
PREFIX = "django_sapool.backends."
#: The ENGINE that pools the backend named in POOL_OPTIONS["BACKEND"] (not a vendor).
GENERIC = PREFIX + "pooled"
#: Django's own backends (and GIS's): never ours, never pooled.
DJANGO_PREFIXES = ("django.db.backends.", "django.contrib.gis.db.backends.")


@dataclass(frozen=True)
class Backend:
    """One of django_sapool's backends: what it pools, and with which drivers."""

    engine: str  # the ENGINE setting that selects it
    vendor: str  # Django's DatabaseWrapper.vendor
    extends: str  # the ENGINE of the Django backend it subclasses
    drivers: tuple[str, ...]  # the DBAPI modules it runs on
    default_port: int | None  # None: no server (SQLite)

    @property
    def is_sqlite(self) -> bool:
        """Return whether its databases are files (or memory), not a server."""
        return self.vendor == "sqlite"


_PG, _MY, _LITE = ("psycopg", "psycopg2"), ("mysqlclient", "pymysql"), ("sqlite3",)
_GIS = "django.contrib.gis.db.backends."
BACKENDS: tuple[Backend, ...] = (
    Backend(PREFIX + "postgresql", "postgresql", "django.db.backends.postgresql", _PG, 5432),
    Backend(PREFIX + "mysql", "mysql", "django.db.backends.mysql", _MY, 3306),
    Backend(PREFIX + "sqlite3", "sqlite", "django.db.backends.sqlite3", _LITE, None),
    Backend(PREFIX + "postgis", "postgresql", _GIS + "postgis", _PG, 5432),
    Backend(PREFIX + "mysql_gis", "mysql", _GIS + "mysql", _MY, 3306),
    Backend(PREFIX + "spatialite", "sqlite", _GIS + "spatialite", _LITE, None),
)
_BY_ENGINE = {backend.engine: backend for backend in BACKENDS}
_BY_MODULE = {f"{backend.engine}.base": backend for backend in BACKENDS}
_BY_DJANGO_ENGINE = {backend.extends: backend for backend in BACKENDS}


@dataclass(frozen=True)
class ServerFacts:
    """What a backend's ``sapool_server_facts(cursor)`` learns from its server."""

    version: str  # as people name it: "PostgreSQL 17.2", "10.11.6-MariaDB", "SQLite 3.45.1"
    max_connections: int | None = None  # None: no server limit (SQLite)
    connections_in_use: int | None = None  # client sessions open now, ours included


def ours_for(django_engine: object) -> Backend | None:
    """Return our backend for one of Django's ENGINEs (the hint of sapool.W003)."""
    return _BY_DJANGO_ENGINE.get(django_engine) if isinstance(django_engine, str) else None


def wrapper_class(engine: str) -> type | None:
    """Import an ENGINE's DatabaseWrapper (a project's may subclass ours)."""
    try:
        module = import_module(f"{engine}.base")
    except Exception:  # a missing driver or a typo: Django reports those itself
        return None
    wrapper = getattr(module, "DatabaseWrapper", None)
    return wrapper if isinstance(wrapper, type) else None


def backend_for(engine: object, settings_dict: Mapping[str, Any] | None = None) -> Backend | None:
    """Return the backend an ENGINE pools with; None when it is not one of ours.

    Ours are known by name, without importing them. Another ENGINE is imported:
    a project's DatabaseWrapper that subclasses one of ours gets that one's
    entry; one made by ``pooled_wrapper()`` gets its vendor's entry, with its
    own ENGINE and the one it wraps; one built on the mixin alone gets an entry
    of its own. The generic ENGINE needs the alias's settings (its
    POOL_OPTIONS["BACKEND"]); when that cannot be pooled its entry has the
    wrapped backend's vendor, or "unknown", and the alias's checks say why.
    """
    if not isinstance(engine, str) or not engine or engine.startswith(DJANGO_PREFIXES):
        return None
    if engine == GENERIC:
        return _generic(settings_dict or {})
    if engine in _BY_ENGINE:
        return _BY_ENGINE[engine]
    found = _found.get(engine)
    if found is None:
        wrapper = wrapper_class(engine)
        if wrapper is None:
            return None  # not cached: the import may work later (a driver installed)
        found = _found[engine] = (_backend_of(engine, wrapper),)
    return found[0]


# backend_for() of an ENGINE that had to be imported (check_all_aliases() asks
# at every wrapper creation): a module imported once says the same ever after.
_found: dict[str, tuple[Backend | None]] = {}


def _backend_of(engine: str, wrapper: type) -> Backend | None:
    from django_sapool.wrapper import PooledDatabaseWrapperMixin

    if not issubclass(wrapper, PooledDatabaseWrapperMixin):
        return None
    wraps = getattr(wrapper, "sapool_wraps", None)
    for cls in wrapper.__mro__:
        if cls.__module__ in _BY_MODULE:
            backend = _BY_MODULE[cls.__module__]
            # pooled_wrapper()'s classes: the vendor's mixin is in our module.
            return replace(backend, engine=engine, extends=wraps) if wraps else backend
    vendor = str(getattr(wrapper, "vendor", engine))
    port = next((b.default_port for b in BACKENDS if b.vendor == vendor), None)
    return Backend(engine, vendor, "", (), port)


def _generic(settings_dict: Mapping[str, Any]) -> Backend:
    """The generic ENGINE's entry for one alias: its vendor's, extending BACKEND."""
    from django.core.exceptions import ImproperlyConfigured

    from django_sapool.wrapping import wrap

    raw = settings_dict.get("POOL_OPTIONS")
    wrapped = raw.get("BACKEND") if isinstance(raw, Mapping) else None
    if not isinstance(wrapped, str) or not wrapped:
        return Backend(GENERIC, "unknown", "", (), None)
    try:
        wrapper = wrap(wrapped, "")
    except ImproperlyConfigured:
        vendor = getattr(wrapper_class(wrapped), "vendor", None)
        return Backend(GENERIC, str(vendor or "unknown"), wrapped, (), None)
    backend = _backend_of(GENERIC, wrapper)
    assert backend is not None  # wrap() made it of our mixin
    return backend
