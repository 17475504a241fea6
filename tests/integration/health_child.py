"""django-health-check on the pool, in a Django process of its own.

Run as ``python -m tests.integration.health_child`` by test_health_check.py, with
a JSON config in SAPOOL_HEALTH_CHILD::

    {"driver": "psycopg" | "psycopg2" | "mysqlclient" | "pymysql",
     "vendor": "postgresql" | "mysql", "default": {settings of the real server},
     "closed_port": 12345, "admin": {...}, "sessions_key": app_name or dbname}

Aliases: ``default`` (the real server, POOL_SIZE 2 + MAX_OVERFLOW 1, TIMEOUT 5),
``down`` (the same settings on a closed local port), ``proxied`` (the real server
through a FaultProxy of tests/faults, PING_TIMEOUT 1, CONNECT_TIMEOUT 1, no
pre-ping for an hour: only the probe's own ping can find a black hole) and
``plain`` (Django's own SQLite backend, not pooled). The endpoints are mounted as
a project would: ``HealthCheckView.as_view(checks=pooled_checks())`` at
/health/, and one view per alias at /health/<alias>/; with django-health-check
3.x also ``include("health_check.urls")`` at /legacy/, which reads the plugin
registry our app filled. Each phase's requests go through Django's test Client
(JSON format); the facts (codes, bodies, seconds, pool status before and after,
server sessions) come back as JSON on the last line.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import asdict
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

CONFIG = read_config("SAPOOL_HEALTH_CHILD")
use_driver(CONFIG.get("driver"))

from tests.faults.proxy import FaultProxy  # noqa: E402

PROXY = FaultProxy(CONFIG["default"]["HOST"], int(CONFIG["default"]["PORT"])).start()
POOL = {"POOL_SIZE": 2, "MAX_OVERFLOW": 1, "TIMEOUT": 5}
DATABASES = {
    "default": {**CONFIG["default"], "POOL_OPTIONS": POOL},
    "down": {
        **CONFIG["default"],
        "PORT": CONFIG["closed_port"],
        "PASSWORD": CONFIG["down_password"],
        "POOL_OPTIONS": POOL,
    },
    "proxied": {
        **CONFIG["default"],
        "HOST": PROXY.host,
        "PORT": PROXY.port,
        "POOL_OPTIONS": {
            **POOL,
            "PING_TIMEOUT": 1,
            "CONNECT_TIMEOUT": 1,
            "PRE_PING_INTERVAL": 3600,
        },
    },
    "plain": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.mkdtemp(prefix="sapool-health-"), "plain.sqlite3"),
    },
}

setup_django(
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["health_check", "django_sapool.contrib.health_check"],
    DATABASES=DATABASES,
)

import health_check  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import include, path  # noqa: E402
from health_check.views import HealthCheckView  # noqa: E402

import django_sapool  # noqa: E402
from django_sapool.contrib.health_check import PooledDatabase, pooled_checks  # noqa: E402

try:
    from health_check.plugins import plugin_dir  # noqa: F401  # 3.x: the registry
except ImportError:
    LEGACY = False
else:
    LEGACY = True

urlpatterns = [
    path("health/", HealthCheckView.as_view(checks=pooled_checks())),
    *(
        path(
            f"health/{alias}/", HealthCheckView.as_view(checks=[(PooledDatabase, {"alias": alias})])
        )
        for alias in ("default", "down", "proxied")
    ),
]
if LEGACY:
    urlpatterns.append(path("legacy/", include("health_check.urls")))

CLIENT = Client()


def get(url: str) -> dict[str, Any]:
    """One health request (JSON): its status code, body and seconds."""
    started = time.monotonic()
    response = CLIENT.get(url, {"format": "json"})
    seconds = time.monotonic() - started
    return {"code": response.status_code, "body": response.json(), "seconds": seconds}


def status(alias: str) -> dict[str, Any]:
    (pool,) = django_sapool.pool_status(alias)
    return asdict(pool)


def admin_connection() -> Any:
    if CONFIG["vendor"] == "postgresql":
        if CONFIG["driver"] == "psycopg2":  # psycopg itself is hidden in this process
            import psycopg2

            conn = psycopg2.connect(CONFIG["admin"])
            conn.autocommit = True
            return conn
        import psycopg

        return psycopg.connect(CONFIG["admin"], autocommit=True)
    import MySQLdb

    conn = MySQLdb.connect(**CONFIG["admin"])
    conn.autocommit(True)
    return conn


ADMIN = admin_connection()


def sessions() -> int:
    """The real server's sessions of ``default`` and ``proxied`` (pg_stat_activity, processlist)."""
    if CONFIG["vendor"] == "postgresql":
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    else:
        sql = "SELECT count(*) FROM information_schema.processlist WHERE db = %s"
    cursor = ADMIN.cursor()
    cursor.execute(sql, [CONFIG["sessions_key"]])
    count: int = cursor.fetchone()[0]
    cursor.close()
    return count


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


class Holder(threading.Thread):
    """A request thread that checks a connection of ``default`` out and keeps it."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__(daemon=True)
        self.release = release
        self.ready = threading.Event()  # set once the checkout is complete
        self.error: str | None = None

    def run(self) -> None:
        try:
            connections["default"].ensure_connection()
            self.ready.set()
            self.release.wait(30)
        except Exception as exc:
            self.error = repr(exc)
        finally:
            connections["default"].close()


def main() -> dict[str, Any]:
    facts: dict[str, Any] = {"driver": CONFIG["driver"], "legacy": LEGACY}
    facts["version"] = health_check.__version__

    # Healthy: five probes, one server session, nothing left checked out.
    facts["healthy"] = [get("/health/default/") for _ in range(5)]
    facts["healthy_status"] = status("default")
    facts["healthy_sessions"] = sessions()
    facts["all"] = get("/health/")
    # That probe opened a session of "proxied" too: close it, so that the
    # sessions counted below are default's (and "proxied" starts afresh).
    django_sapool.dispose("proxied")

    # Exhausted: POOL_SIZE + MAX_OVERFLOW connections held by three threads.
    release = threading.Event()
    holders = [Holder(release) for _ in range(3)]
    for holder in holders:
        holder.start()
    # The pool counts a checkout when it hands the connection out, after
    # SQLAlchemy counts it as checked out: wait for the threads themselves.
    wait_until(lambda: all(holder.ready.is_set() for holder in holders))
    facts["held_before"] = status("default")
    facts["held_sessions_before"] = sessions()
    facts["held"] = get("/health/default/")
    facts["held_after"] = status("default")
    facts["held_sessions_after"] = sessions()

    # ... and a fourth thread waiting in the queue.
    waiter = Holder(release)
    waiter.start()
    wait_until(lambda: status("default")["waiting"] == 1)
    facts["waiting_before"] = status("default")
    facts["waiting"] = get("/health/default/")
    facts["waiting_after"] = status("default")
    if LEGACY:
        facts["legacy_exhausted"] = get("/legacy/")

    # Returned: healthy again.
    release.set()
    for thread in [*holders, waiter]:
        thread.join(10)
    facts["holder_errors"] = [t.error for t in [*holders, waiter] if t.error]
    wait_until(lambda: status("default")["checked_out"] == 0)
    facts["released_before"] = status("default")
    facts["released"] = get("/health/default/")
    facts["released_after"] = status("default")
    facts["released_sessions"] = sessions()
    if LEGACY:
        facts["legacy_released"] = get("/legacy/")

    # Unreachable: a closed port.
    facts["down"] = get("/health/down/")
    facts["down_status"] = status("down")

    # Silent: the proxied alias's idle connection black-holed, then no connection
    # at all (the connect through the black hole), then the network healed.
    facts["proxied_ok"] = get("/health/proxied/")
    PROXY.blackhole()
    facts["proxied_idle_blackholed"] = get("/health/proxied/")
    facts["proxied_after_blackhole"] = status("proxied")
    facts["proxied_connect_blackholed"] = get("/health/proxied/")
    PROXY.forward()
    facts["proxied_healed"] = get("/health/proxied/")
    facts["proxied_healed_status"] = status("proxied")
    return facts


if __name__ == "__main__":
    try:
        result = main()
    finally:
        connections.close_all()
        PROXY.close()
    print("SAPOOL-RESULT " + json.dumps(result, default=str))
