"""Settings of the multi-vendor example: three aliases, three vendors, three pools.

- ``default``: PostgreSQL (psycopg 3 or psycopg2), the shop's orders.
- ``legacy``: MySQL/MariaDB (mysqlclient), an older customer database.
- ``local``: a SQLite file next to the process, counters.

Each alias uses a django_sapool ENGINE and sizes its own pool: a pool belongs to
one alias in one process, so the busy main database can keep more connections
than the legacy server (which may have a low ``max_connections``) or SQLite
(one writer at a time: more connections would only wait for its lock).

Servers come from URLs, databases from names, all in the environment, so that
the integration test can point the project at fresh databases:

==========================  ===================================================
``SAPOOL_PG_URL``           ``postgresql://postgres@127.0.0.1:5432/postgres``
                            (host, port, user and password; the path is the
                            admin database and is not used here)
``SAPOOL_MYSQL_URL``        ``mysql://root@127.0.0.1:3306/``
``MULTIVENDOR_PG_NAME``     PostgreSQL database (``multivendor``)
``MULTIVENDOR_MYSQL_NAME``  MySQL/MariaDB database (``multivendor_legacy``)
``MULTIVENDOR_SQLITE_PATH`` SQLite file (``local.sqlite3`` next to manage.py)
==========================  ===================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import django

BASE_DIR = Path(__file__).resolve().parent.parent

PG_URL = os.environ.get("SAPOOL_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_URL = os.environ.get("SAPOOL_MYSQL_URL", "mysql://root@127.0.0.1:3306/")


def _server(url: SplitResult, default_port: int, default_user: str) -> dict[str, Any]:
    """HOST/PORT/USER/PASSWORD from a URL; percent-escapes in user and password decoded."""
    return {
        "HOST": url.hostname or "127.0.0.1",
        "PORT": url.port or default_port,
        "USER": unquote(url.username or default_user),
        "PASSWORD": unquote(url.password or ""),
    }


_sqlite_options: dict[str, Any] = {
    # Wait up to 20 s for SQLite's write lock instead of failing with
    # "database is locked" when two pooled connections write at once.
    "timeout": 20,
}
if django.VERSION >= (5, 1):
    # Take the write lock at BEGIN: a deferred transaction that reads and then
    # writes can fail to upgrade its lock under concurrency (SQLITE_BUSY
    # without waiting); an immediate one just waits its turn.
    _sqlite_options["transaction_mode"] = "IMMEDIATE"

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django_sapool.backends.postgresql",
        "NAME": os.environ.get("MULTIVENDOR_PG_NAME", "multivendor"),
        **_server(urlsplit(PG_URL), 5432, "postgres"),
        "OPTIONS": {"application_name": "multivendor"},
        # CONN_MAX_AGE stays 0 (the default): the pool owns connection lifetime.
        "POOL_OPTIONS": {
            "POOL_SIZE": 6,
            "MAX_OVERFLOW": 2,
            "TIMEOUT": 10,
        },
    },
    "legacy": {
        "ENGINE": "django_sapool.backends.mysql",
        "NAME": os.environ.get("MULTIVENDOR_MYSQL_NAME", "multivendor_legacy"),
        **_server(urlsplit(MYSQL_URL), 3306, "root"),
        "OPTIONS": {"charset": "utf8mb4"},
        "POOL_OPTIONS": {
            # A legacy server with few connections to spare: a small pool,
            # recycled before the server's wait_timeout would drop it.
            "POOL_SIZE": 3,
            "MAX_OVERFLOW": 1,
            "TIMEOUT": 10,
            "RECYCLE": 600,
        },
    },
    "local": {
        "ENGINE": "django_sapool.backends.sqlite3",
        # A file: in-memory SQLite databases are deliberately not pooled.
        "NAME": os.environ.get("MULTIVENDOR_SQLITE_PATH", str(BASE_DIR / "local.sqlite3")),
        "OPTIONS": _sqlite_options,
        "POOL_OPTIONS": {
            # SQLite has one writer at a time: two connections are plenty.
            "POOL_SIZE": 2,
            "MAX_OVERFLOW": 0,
            "TIMEOUT": 20,
        },
    },
}

DATABASE_ROUTERS = ["multivendor.routers.MultiVendorRouter"]

INSTALLED_APPS = [
    "shop.apps.ShopConfig",
    "legacy_app.apps.LegacyAppConfig",
    "cache_app.apps.CacheAppConfig",
]

SECRET_KEY = "django-sapool-multivendor-example-only-not-a-secret"
DEBUG = os.environ.get("MULTIVENDOR_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# No sessions, auth or CSRF: the example is about databases, and its POST view
# is called by scripts.
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "multivendor.urls"
WSGI_APPLICATION = "multivendor.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
