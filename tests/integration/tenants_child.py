"""A django-tenants site on a pooled connection (``python -m tests.integration.tenants_child``).

Settings are per process, so each variant (driver, TENANT_LIMIT_SET_CALLS) gets
its own. The parent (test_tenants.py) passes a JSON config in
SAPOOL_TENANTS_CHILD::

    {"databases": {...}, "driver": "psycopg" | "psycopg2", "limit_set_calls": bool,
     "app_name": ..., "admin_conninfo": ..., "dbname": ...,
     "tenants": {"tenant_a": ["a-1", ...], ...}, "threads": 8, "requests": 1000,
     "job_cycles": 20, "scenario": "serve" | "fork"}

The child creates the public tables (tenants, domains), one schema per tenant
with a table of the same name (``tenants_app_item``) holding that tenant's
rows, then serves ``requests`` requests, interleaving the tenants, from
``threads`` threads through Django's WSGI handler with django-tenants'
TenantMainMiddleware (the tenant comes from the Host header, as in
production). Half the requests also return their connection to the pool in
the middle of the view (``connection.close()``) and query again: another
thread, of the other tenant, may have used that server session meanwhile.
Then ``job`` threads do what a Celery worker does: ``set_schema()`` once, then
``job_cycles`` units of work each ending in ``close_old_connections()``.

The "fork" scenario forks while a tenant's connection is checked out (see
``fork()``).

Facts (JSON on the last stdout line): what each request and job saw, the peak
of server sessions with our application_name (sampled by an unpooled
session), the backend pids, the ``SET search_path`` statements the server ran
(pg_stat_statements), and the pool's status.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

CONFIG = read_config("SAPOOL_TENANTS_CHILD")
use_driver(CONFIG.get("driver"))

from django.conf import settings  # noqa: E402

APP = "tests.integration.tenants_app"
setup_django(
    ROOT_URLCONF=__name__,
    # django-tenants' own installation: the tenant model's app is shared, the
    # items' app is per tenant (here one app is both), and its router.
    SHARED_APPS=["django_tenants", "django.contrib.contenttypes", APP],
    TENANT_APPS=[APP],
    INSTALLED_APPS=["django_tenants", "django.contrib.contenttypes", APP],
    TENANT_MODEL="tenants_app.Client",
    TENANT_DOMAIN_MODEL="tenants_app.Domain",
    DATABASE_ROUTERS=["django_tenants.routers.TenantSyncRouter"],
    MIDDLEWARE=["django_tenants.middleware.main.TenantMainMiddleware"],
    TENANT_LIMIT_SET_CALLS=CONFIG["limit_set_calls"],
    DATABASES=CONFIG["databases"],
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)

from django.db import close_old_connections, connection, connections  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

import django_sapool  # noqa: E402
from tests.integration.child_threads import Peak, SharedSession, run_threads  # noqa: E402
from tests.integration.tenants_app.models import Client, Domain, Item  # noqa: E402
from tests.wsgi_request import prepare, request  # noqa: E402

TENANTS: dict[str, list[str]] = CONFIG["tenants"]


def host(schema: str) -> str:
    return f"{schema.replace('_', '-')}.example"


def _scalar(sql: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def seen() -> dict[str, Any]:
    """What this connection shows now: the items' names, the schema, the server session."""
    return {
        "names": list(Item.objects.order_by("name").values_list("name", flat=True)),
        "schema": _scalar("SELECT current_schema()"),
        "pid": _scalar("SELECT pg_backend_pid()"),
    }


# -- the site ------------------------------------------------------------------


def view_items(request: HttpRequest) -> HttpResponse:
    first = seen()
    body: dict[str, Any] = {"tenant": request.tenant.schema_name, "first": first}  # type: ignore[attr-defined]
    if request.GET.get("close"):
        # Back to the pool mid-request (cheap with a pool, and documented as
        # such): the next query may get a server session another tenant used.
        connection.close()
        body["after_close"] = seen()
    return JsonResponse(body)


urlpatterns = [path("items", view_items)]
prepare()  # the handler, before threads serve (as a server does)

# -- setup ---------------------------------------------------------------------


def create_tenants() -> None:
    """Public tables, then per tenant: its schema, its items table and rows, its domain."""
    connection.set_schema_to_public()
    with connection.schema_editor() as editor:
        editor.create_model(Client)
        editor.create_model(Domain)
    for schema, names in TENANTS.items():
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{schema}"')
        connection.set_schema(schema)
        with connection.schema_editor() as editor:
            editor.create_model(Item)  # in the tenant's schema: first on its search_path
        Item.objects.bulk_create(Item(name=name) for name in names)
        connection.set_schema_to_public()
        tenant = Client.objects.create(schema_name=schema, name=schema)
        Domain.objects.create(domain=host(schema), tenant=tenant, is_primary=True)
    connection.close()


class Observer(SharedSession):
    """An unpooled server session that counts ours (by application_name)."""

    def __init__(self) -> None:
        super().__init__(CONFIG["admin_conninfo"], mysql=False)

    def sessions(self) -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        return int(self.scalar(sql, [CONFIG["app_name"]]))

    def search_path_sets(self) -> int:
        """SET search_path statements the server ran in our database (pg_stat_statements)."""
        return int(
            self.scalar(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = %s AND s.query ILIKE 'SET search_path%%'",
                [CONFIG["dbname"]],
            )
        )


# -- the run -------------------------------------------------------------------


def pause() -> None:
    """A client's think time between requests (a server waits on its socket there).

    Without it the thread that just returned a connection takes it straight
    back (the GIL does not switch at a lock release), so each thread would keep
    one server session for all its requests and sessions would rarely change
    hands, which is the very case under test.
    """
    time.sleep(0.0005)


def serve(n_threads: int, n_requests: int) -> list[dict[str, Any]]:
    """``n_requests`` requests from ``n_threads`` threads, tenants interleaved."""
    schemas = sorted(TENANTS)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def work(worker: int) -> None:
        start.wait()
        # Each thread alternates tenants (A, B, A, B...), half of them closing
        # mid-view (every other pair); neighbouring threads start on different ones.
        for j in range(len(range(worker, n_requests, n_threads))):
            schema = schemas[(worker + j) % len(schemas)]
            url = "/items?close=1" if (j // 2) % 2 else "/items"
            code, body = request(url, host=host(schema))
            with lock:
                results.append({"want": schema, "code": code, "body": body, "thread": worker})
            pause()

    run_threads(n_threads, work)
    return results


def jobs(n_threads: int, cycles: int) -> list[dict[str, Any]]:
    """Celery-style workers: set_schema() once, then units of work that return the connection."""
    schemas = sorted(TENANTS)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def work(worker: int) -> None:
        schema = schemas[worker % len(schemas)]
        connection.set_schema(schema)
        start.wait()
        for _ in range(cycles):
            try:
                got: dict[str, Any] = seen()
            except Exception as exc:  # a wrong search_path: the table is not found
                got = {"error": f"{type(exc).__name__}: {exc}"}
            with lock:
                results.append({"want": schema, **got})
            close_old_connections()  # task_postrun's advice: back to the pool
            pause()

    run_threads(n_threads, work)
    return results


def fork() -> dict[str, Any]:
    """A worker forked while its main thread holds tenant A's connection (gunicorn --preload).

    In the child, another thread serves tenant B first and returns its server
    session; the main thread's next query (tenant A still selected) gets that
    session, whose search_path is B's: the inherited wrapper must not trust
    what it remembers about the parent's session.
    """
    first, second = sorted(TENANTS)
    connection.set_schema(first)
    parent_before = seen()  # checked out and kept across the fork
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: django_sapool's fork hook has run
        out: dict[str, Any] = {}
        try:

            def other_tenant() -> None:
                connection.set_schema(second)
                out["thread"] = seen()
                connection.close()  # back to the child's pool, search_path = B's

            worker = threading.Thread(target=other_tenant)
            worker.start()
            worker.join()
            try:
                out["main"] = seen()
            except Exception as exc:  # a wrong search_path: no such table
                out["main"] = {"error": f"{type(exc).__name__}: {exc}"}
            connection.close()
        finally:
            os.write(write_fd, json.dumps(out).encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    parent_after = seen()
    connection.close()
    return {"want": first, "parent_before": parent_before, "parent_after": parent_after, **child}


def main() -> None:
    create_tenants()
    if CONFIG.get("scenario") == "fork":
        facts = fork()
        facts["limit_set_calls"] = settings.TENANT_LIMIT_SET_CALLS
        print("SAPOOL-RESULT " + json.dumps(facts, default=str))
        return
    observer = Observer()
    sets_before = observer.search_path_sets()
    with Peak(observer.sessions) as peak:
        started = time.monotonic()
        served = serve(CONFIG["threads"], CONFIG["requests"])
        sets_served = observer.search_path_sets()
        worked = jobs(CONFIG["threads"], CONFIG["job_cycles"])
    wrapper = connections["default"]
    facts = {
        "driver": connection.Database.__name__,
        "limit_set_calls": settings.TENANT_LIMIT_SET_CALLS,
        "wrapper": f"{type(wrapper).__module__}.{type(wrapper).__qualname__}",
        "served": served,
        "jobs": worked,
        "seconds": time.monotonic() - started,
        "peak_sessions": peak.value,
        "sessions_after": observer.sessions(),
        "search_path_sets_requests": sets_served - sets_before,
        "pools": [asdict(s) for s in django_sapool.pool_status()],
    }
    print("SAPOOL-RESULT " + json.dumps(facts, default=str))


if __name__ == "__main__":
    main()
