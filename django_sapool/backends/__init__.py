"""The six backends, described once, and what each one asks its server.

``BACKENDS`` is the one table of them: the system checks, ``manage.py sapool``
and the tests read it instead of keeping lists of their own. Importing this
package imports no backend (our PostgreSQL backend needs its driver).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

#: Every django_sapool ENGINE starts with this.
PREFIX = "django_sapool.backends."
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


def backend_for(engine: object) -> Backend | None:
    """Return the backend an ENGINE pools with; None when it is not one of ours.

    Ours are known by name, without importing them. Another ENGINE is imported:
    a project's DatabaseWrapper that subclasses one of ours gets that one's
    entry; one built on the mixin alone gets an entry of its own.
    """
    if not isinstance(engine, str) or not engine or engine.startswith(DJANGO_PREFIXES):
        return None
    if engine in _BY_ENGINE:
        return _BY_ENGINE[engine]
    wrapper = wrapper_class(engine)
    from django_sapool.wrapper import PooledDatabaseWrapperMixin

    if wrapper is None or not issubclass(wrapper, PooledDatabaseWrapperMixin):
        return None
    for cls in wrapper.__mro__:
        if cls.__module__ in _BY_MODULE:
            return _BY_MODULE[cls.__module__]
    vendor = str(getattr(wrapper, "vendor", engine))
    port = next((b.default_port for b in BACKENDS if b.vendor == vendor), None)
    return Backend(engine, vendor, "", (), port)
