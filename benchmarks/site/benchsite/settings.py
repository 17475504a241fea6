"""Settings for the benchmark site, chosen by environment variables.

The harness (``benchmarks/harness.py``) starts gunicorn once per contender with:

``BENCH_CONTENDER``
    default | persistent | persistent+hc | django-pool | dbcp | pgbouncer | sapool |
    sapool-txn | pg-real-pool
``BENCH_VENDOR``
    postgresql | mysql
``BENCH_DB_NAME``, ``BENCH_DB_HOST``, ``BENCH_DB_PORT``, ``BENCH_DB_USER``
    where the bench database is (for ``pgbouncer``: PgBouncer's address)
``BENCH_DB_PASSWORD``
    optional; never logged
``BENCH_SSLMODE``
    optional libpq sslmode (``require`` for the TLS cells)
``BENCH_THREADS``
    threads per gunicorn worker (1 for sync workers): pools are sized for it
``BENCH_POOL_CAP``
    optional (the /io comparison): every pool holds at most this many connections
    per worker process, fewer than its threads

The point of this module is that nothing else differs between contenders: same
views, same middleware (none), same driver (psycopg 3 / mysqlclient), same gunicorn
settings; only ``DATABASES["default"]`` changes, as ``benchsite.contenders.database()``
builds it.
"""

from __future__ import annotations

import os

from benchsite.contenders import database


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"the benchmark site needs {name} in the environment")
    return value


SECRET_KEY = "benchmark-site-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchsite.urls"
INSTALLED_APPS = ["benchsite"]
MIDDLEWARE: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
WSGI_APPLICATION = "benchsite.wsgi.application"
DATABASES = {
    "default": database(
        _env("BENCH_CONTENDER", "sapool"),
        _env("BENCH_VENDOR", "postgresql"),
        name=_env("BENCH_DB_NAME"),
        host=_env("BENCH_DB_HOST", "127.0.0.1"),
        port=_env("BENCH_DB_PORT", ""),
        user=_env("BENCH_DB_USER", "postgres"),
        password=os.environ.get("BENCH_DB_PASSWORD", ""),
        sslmode=os.environ.get("BENCH_SSLMODE", ""),
        threads=int(_env("BENCH_THREADS", "1")),
        pool_cap=int(os.environ["BENCH_POOL_CAP"]) if os.environ.get("BENCH_POOL_CAP") else None,
    )
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
