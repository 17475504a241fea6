"""What differs between contenders: ``DATABASES["default"]``, built by :func:`database`.

Imported by the site's settings and by the harness (for the report), so it reads no
environment itself.
"""

from __future__ import annotations

from typing import Any

CONTENDERS = (
    "default",
    "persistent",
    "persistent+hc",
    "django-pool",
    "dbcp",
    "pgbouncer",
    "sapool",
)
#: Contenders that exist for PostgreSQL only.
POSTGRESQL_ONLY = ("django-pool", "pgbouncer")
#: The pools' capacity, as django_sapool's defaults (POOL_SIZE=10, MAX_OVERFLOW=10):
#: more than a gunicorn worker's threads, so no request ever waits for a connection.
POOL_SIZE = 10
MAX_OVERFLOW = 10


def database(
    contender: str,
    vendor: str,
    *,
    name: str,
    host: str,
    port: str,
    user: str,
    password: str = "",
    sslmode: str = "",
    threads: int = 1,
) -> dict[str, Any]:
    """Return ``DATABASES["default"]`` for one contender (the whole difference between them)."""
    if contender not in CONTENDERS:
        raise ValueError(f"unknown contender {contender!r}; one of {', '.join(CONTENDERS)}")
    if vendor not in ("postgresql", "mysql"):
        raise ValueError(f"unknown vendor {vendor!r}; postgresql or mysql")
    if vendor != "postgresql" and contender in POSTGRESQL_ONLY:
        raise ValueError(f"contender {contender!r} is PostgreSQL-only")
    options: dict[str, Any] = {}
    if sslmode:
        options["sslmode"] = sslmode
    db: dict[str, Any] = {
        "ENGINE": f"django.db.backends.{vendor}",
        "NAME": name,
        "HOST": host,
        "PORT": port,
        "USER": user,
        "PASSWORD": password,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": options,
    }
    if contender == "persistent":
        db["CONN_MAX_AGE"] = None
    elif contender == "persistent+hc":
        db["CONN_MAX_AGE"] = None
        db["CONN_HEALTH_CHECKS"] = True
    elif contender == "django-pool":
        # Django's own pool (psycopg_pool): min_size connections are opened when the
        # pool starts, up to max_size on demand; CONN_MAX_AGE must stay 0.
        options["pool"] = {
            "min_size": threads,
            "max_size": POOL_SIZE + MAX_OVERFLOW,
            "timeout": 30,
        }
    elif contender == "dbcp":
        db["ENGINE"] = f"dj_db_conn_pool.backends.{vendor}"
        db["POOL_OPTIONS"] = {"POOL_SIZE": POOL_SIZE, "MAX_OVERFLOW": MAX_OVERFLOW}
    elif contender == "pgbouncer":
        # Django's stock backend, connecting to PgBouncer (transaction pooling) for
        # each request; server-side cursors do not survive transaction pooling.
        db["DISABLE_SERVER_SIDE_CURSORS"] = True
    elif contender == "sapool":
        db["ENGINE"] = f"django_sapool.backends.{vendor}"
        db["POOL_OPTIONS"] = {}  # the defaults: POOL_SIZE=10, MAX_OVERFLOW=10, PRE_PING on
    return db
