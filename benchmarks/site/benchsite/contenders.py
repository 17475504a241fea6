"""What differs between contenders: ``DATABASES["default"]``, built by :func:`database`.

Imported by the site's settings and by the harness (for the report), so it reads no
environment itself.
"""

from __future__ import annotations

from typing import Any

#: The contenders of the /one, /ten and /write runs.
BASE_CONTENDERS = (
    "default",
    "persistent",
    "persistent+hc",
    "django-pool",
    "dbcp",
    "pgbouncer",
    "sapool",
)
#: The contenders of the /io comparison (issue 15): the above, django_sapool lending
#: per transaction, and django-pg-real-pool, the one peer that returns its connection
#: to the pool between queries.
IO_CONTENDERS = (*BASE_CONTENDERS, "sapool-txn", "pg-real-pool")
CONTENDERS = IO_CONTENDERS
#: Contenders that exist for PostgreSQL only.
POSTGRESQL_ONLY = ("django-pool", "pgbouncer", "pg-real-pool")
#: The pools' capacity, as django_sapool's defaults (POOL_SIZE=10, MAX_OVERFLOW=10):
#: more than a gunicorn worker's threads, so no request ever waits for a connection.
POOL_SIZE = 10
MAX_OVERFLOW = 10
#: Contenders whose server connections ``pool_cap`` limits (per worker process; for
#: ``pgbouncer`` the harness sets PgBouncer's ``default_pool_size`` to the cap times
#: the workers instead, as one PgBouncer serves both). ``default`` and the
#: ``persistent`` ones have no pool: one server session per busy thread.
CAPPED = ("django-pool", "dbcp", "pgbouncer", "sapool", "sapool-txn", "pg-real-pool")


def server_cap(contender: str, pool_cap: int | None, workers: int) -> int | None:
    """The most server sessions a capped contender may open (all workers), else None."""
    if pool_cap is None or contender not in CAPPED:
        return None
    return pool_cap * workers


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
    pool_cap: int | None = None,
) -> dict[str, Any]:
    """Return ``DATABASES["default"]`` for one contender (the whole difference between them).

    ``pool_cap`` (the /io comparison): every pool holds at most that many connections
    per worker process (its size, no overflow; fewer than the worker's threads), the
    same for all pooled contenders. None: the sizes of the /one, /ten, /write runs.
    """
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
        options["pool"] = _psycopg_pool(threads, pool_cap)
    elif contender == "pg-real-pool":
        # django-pg-real-pool: Django's pool (psycopg_pool, OPTIONS["pool"] passed
        # through), the connection returned to it after each statement outside atomic().
        db["ENGINE"] = "django_pg_real_pool"
        options["pool"] = _psycopg_pool(threads, pool_cap)
    elif contender == "dbcp":
        db["ENGINE"] = f"dj_db_conn_pool.backends.{vendor}"
        db["POOL_OPTIONS"] = _sqlalchemy_pool(pool_cap)
    elif contender == "pgbouncer":
        # Django's stock backend, connecting to PgBouncer (transaction pooling) for
        # each request; server-side cursors do not survive transaction pooling.
        db["DISABLE_SERVER_SIDE_CURSORS"] = True
    elif contender == "sapool":
        db["ENGINE"] = f"django_sapool.backends.{vendor}"
        # Uncapped: the defaults (POOL_SIZE=10, MAX_OVERFLOW=10, PRE_PING on, LEND "request").
        db["POOL_OPTIONS"] = {} if pool_cap is None else _sqlalchemy_pool(pool_cap)
    elif contender == "sapool-txn":
        db["ENGINE"] = f"django_sapool.backends.{vendor}"
        db["POOL_OPTIONS"] = {
            **({} if pool_cap is None else _sqlalchemy_pool(pool_cap)),
            "LEND": "transaction",
        }
    return db


def _psycopg_pool(threads: int, pool_cap: int | None) -> dict[str, Any]:
    # min_size connections are opened when the pool starts, up to max_size on demand.
    if pool_cap is None:
        return {"min_size": threads, "max_size": POOL_SIZE + MAX_OVERFLOW, "timeout": 30}
    return {"min_size": pool_cap, "max_size": pool_cap, "timeout": 30}


def _sqlalchemy_pool(pool_cap: int | None) -> dict[str, Any]:
    # dbcp's and django_sapool's POOL_OPTIONS (both SQLAlchemy QueuePool sizes).
    if pool_cap is None:
        return {"POOL_SIZE": POOL_SIZE, "MAX_OVERFLOW": MAX_OVERFLOW}
    return {"POOL_SIZE": pool_cap, "MAX_OVERFLOW": 0}
