"""SQLite: file databases are pooled; in-memory databases are not.

An in-memory database lives and dies with its one connection, so pooling would
change what the application sees. For those, this backend behaves exactly like
Django's (one connection per thread, never closed), and says so in the docs.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base, creation

from django_sapool.backends import ServerFacts
from django_sapool.drivers import Sqlite3Ops
from django_sapool.wrapper import PooledCreationMixin, PooledDatabaseWrapperMixin


class DatabaseCreation(PooledCreationMixin, creation.DatabaseCreation):
    pass


class SQLitePoolMixin(PooledDatabaseWrapperMixin):
    """What pooling needs to know about Django's SQLite wrappers (+ SpatiaLite)."""

    sapool_driver = Sqlite3Ops()
    sapool_password_key = None  # a file: PASSWORD_PROVIDER is refused

    def sapool_enabled(self) -> bool:
        return super().sapool_enabled() and not self.is_in_memory_db()  # type: ignore[attr-defined]

    def sapool_fingerprint_extra(self) -> tuple[object, ...]:
        from django.conf import settings

        return (settings.USE_TZ,)

    def sapool_server_facts(self, cursor: Any) -> ServerFacts:
        """Return the library's version: SQLite has no server, hence no limits."""
        cursor.execute("SELECT sqlite_version()")
        return ServerFacts(f"SQLite {cursor.fetchone()[0]}")


class DatabaseWrapper(SQLitePoolMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation
