"""django-prometheus' DB backend on the pool (``python -m tests.integration.prometheus_child``).

The parent (test_prometheus_backend.py) passes a JSON config in
SAPOOL_PROMETHEUS_CHILD::

    {"databases": {...}, "driver": "psycopg" | "psycopg2" | "mysqlclient" | "pymysql",
     "vendor": "postgresql" | "mysql", "admin_conninfo": ..., "app_name": ...,
     "dbname": ..., "threads": 8, "requests": 25, "queries": 3, "errors": 10}

The child opens the pool's connections (two threads at once), then ``threads``
threads each serve ``requests`` requests of ``queries`` queries through
Django's WSGI handler (with django-prometheus' middleware), and ``errors``
requests whose query fails. Facts: django-prometheus' counters from
prometheus_client's default registry before, after the warm-up and at the
end; the backend pids the requests saw; the peak of our server sessions
(sampled by an unpooled session); the pool's status.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

CONFIG = read_config("SAPOOL_PROMETHEUS_CHILD")
use_driver(CONFIG.get("driver"))
setup_django(
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django_prometheus"],
    MIDDLEWARE=[
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ],
    DATABASES=CONFIG["databases"],
)

from django.db import DatabaseError, connection, connections  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

import django_sapool  # noqa: E402
from tests.integration.child_threads import Peak, SharedSession, run_threads  # noqa: E402
from tests.wsgi_request import prepare, request  # noqa: E402

PID_SQL = (
    "SELECT pg_backend_pid()" if CONFIG["vendor"] == "postgresql" else "SELECT CONNECTION_ID()"
)


def _scalar(sql: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def view_queries(request: HttpRequest) -> HttpResponse:
    pid = _scalar(PID_SQL)
    for _ in range(int(request.GET["n"]) - 1):
        _scalar("SELECT 1")
    return JsonResponse({"pid": pid})


def view_error(request: HttpRequest) -> HttpResponse:
    pid = _scalar(PID_SQL)
    try:
        _scalar("SELECT * FROM sapool_no_such_table")
    except DatabaseError as exc:
        return JsonResponse({"pid": pid, "error": type(exc).__name__})
    return JsonResponse({"pid": pid, "error": None})


urlpatterns = [path("queries", view_queries), path("error", view_error)]


def counters() -> dict[str, float]:
    """django-prometheus' database counters for our alias and vendor (0 when never set)."""
    labels = {"alias": "default", "vendor": connection.vendor}
    found = {
        name: REGISTRY.get_sample_value(name, labels) or 0.0
        for name in (
            "django_db_new_connections_total",
            "django_db_new_connection_errors_total",
            "django_db_execute_total",
            "django_db_query_duration_seconds_count",
        )
    }
    # Errors carry a third label, the exception's type: add them up.
    found["django_db_errors_total"] = sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "django_db_errors"
        for sample in family.samples
        if sample.name == "django_db_errors_total"
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )
    return found


class Observer(SharedSession):
    """An unpooled server session that counts ours."""

    def __init__(self) -> None:
        super().__init__(CONFIG["admin_conninfo"], mysql=CONFIG["vendor"] == "mysql")

    def sessions(self) -> int:
        if self.mysql:
            sql = "SELECT count(*) FROM information_schema.processlist WHERE db = %s"
            params = [CONFIG["dbname"]]
        else:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            params = [CONFIG["app_name"]]
        return int(self.scalar(sql, params))


def warm_up() -> None:
    """Open the pool's two connections: two threads hold one each at the same time."""
    both = threading.Barrier(2)

    def hold(_worker: int) -> None:
        connections["default"].ensure_connection()
        both.wait()
        connections["default"].close()

    run_threads(2, hold)


def main() -> None:
    prepare()
    start = counters()
    warm_up()
    warm = counters()
    observer = Observer()
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def work(_worker: int) -> None:
        for _ in range(CONFIG["requests"]):
            code, body = request(f"/queries?n={CONFIG['queries']}")
            with lock:
                results.append({"code": code, "body": body})
            time.sleep(0.0005)  # think time: sessions change threads (see tenants_child)

    with Peak(observer.sessions) as peak:
        run_threads(CONFIG["threads"], work)
        errors = [request("/error") for _ in range(CONFIG["errors"])]
    facts = {
        "driver": connection.Database.__name__,
        "wrapper": f"{type(connections['default']).__module__}."
        f"{type(connections['default']).__qualname__}",
        "start": start,
        "warm": warm,
        "end": counters(),
        "results": results,
        "errors": [{"code": code, "body": body} for code, body in errors],
        "peak_sessions": peak.value,
        "pools": [asdict(s) for s in django_sapool.pool_status()],
    }
    print("SAPOOL-RESULT " + json.dumps(facts, default=str))


if __name__ == "__main__":
    main()
