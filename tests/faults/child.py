"""A Django process under load for the fault tests; run as ``python -m tests.faults.child``.

Django settings are per process, so the application runs here, in a child of the
test. The test drives it over stdin/stdout while it stops, restarts or kills the
server: one JSON command per line in, one ``SAPOOL-REPLY {json}`` line per
command out. Requests go through Django's real WSGIHandler, so request_started /
request_finished fire and connections go back to the pool exactly as under a
WSGI server; worker threads issue them in a loop (``start_load``/``stop_load``)
or in one synchronised burst (``burst``).

Every request is recorded as ``[thread, start, end, ok, session id, exception
classes, message, phase]``. Times are ``time.monotonic()``, which on Linux is
the same clock in every process, so the test compares them with the moments it
stopped and restarted the server. ``phase`` says where a write's error came
from: ``connect`` (checkout, BEGIN), ``insert``, or ``commit`` (atomic()'s exit,
i.e. the COMMIT itself: the outcome is in doubt).

Config (env SAPOOL_FAULT_CHILD): ``driver`` (psycopg, psycopg2, mysqlclient,
pymysql), ``databases`` (Django's DATABASES; a stock Django ENGINE for the
baselines) and ``gevent`` (true: ``gevent.monkey.patch_all()`` first, as
gunicorn's gevent worker does before it loads the app; with psycopg2, also
psycogreen's wait callback, as gevent projects on psycopg2 set it).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

CONFIG = read_config("SAPOOL_FAULT_CHILD")
if CONFIG.get("gevent"):
    from gevent import monkey

    monkey.patch_all()
use_driver(CONFIG.get("driver"))
if CONFIG.get("gevent") and CONFIG.get("driver") == "psycopg2":
    import psycopg2.extensions

    from tests.psycogreen import gevent_wait_callback

    psycopg2.extensions.set_wait_callback(gevent_wait_callback)

from django.core.signals import got_request_exception  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

setup_django(ROOT_URLCONF=__name__, DATABASES=CONFIG.get("databases", {}))

import django_sapool  # noqa: E402

# The pool's own warnings (discarded connections) go to stderr, i.e. the test's
# log file; Django's "Internal Server Error" tracebacks are recorded per request
# instead.
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(message)s")
logging.getLogger("django.request").disabled = True

# -- per-request context -------------------------------------------------------

_ctx = threading.local()


def _on_exception(sender: Any, request: Any = None, **kwargs: Any) -> None:
    # Sent by Django's handler inside its "except" block: the view's exception.
    _ctx.error = sys.exc_info()[1]


got_request_exception.connect(_on_exception)

# -- views ---------------------------------------------------------------------


def _session_sql() -> str:
    if connection.vendor == "postgresql":
        return "SELECT pg_backend_pid() FROM pg_sleep(%s)"
    return "SELECT CONNECTION_ID() FROM (SELECT SLEEP(%s)) AS s"


def view_query(request: HttpRequest) -> HttpResponse:
    """One statement that also reports the server session serving it (on ``?alias=``)."""
    with connections[request.GET.get("alias", "default")].cursor() as cursor:
        cursor.execute(_session_sql(), [float(request.GET.get("sleep", "0"))])
        return JsonResponse({"pid": cursor.fetchone()[0]})


def view_where(request: HttpRequest) -> HttpResponse:
    """Report which server (by its port) and session serve this request."""
    if connection.vendor == "postgresql":
        sql = "SELECT current_setting('port')::int, pg_backend_pid()"
    else:
        sql = "SELECT @@port, CONNECTION_ID()"
    with connection.cursor() as cursor:
        cursor.execute(sql)
        port, pid = cursor.fetchone()
    return JsonResponse({"port": port, "pid": pid})


def view_write(request: HttpRequest) -> HttpResponse:
    """INSERT one client-generated id in atomic(), noting the phase an error comes from."""
    _ctx.phase = "connect"  # atomic() checks out and opens the transaction
    with transaction.atomic():
        _ctx.phase = "insert"
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO fault_write (id, thread) VALUES (%s, %s)",
                [request.GET["id"], int(request.GET["thread"])],
            )
        _ctx.phase = "commit"  # leaving the block sends the COMMIT
    _ctx.phase = "done"
    return JsonResponse({"id": request.GET["id"]})


def view_read(request: HttpRequest) -> HttpResponse:
    """Read back one id (the calling thread's last acknowledged write)."""
    _ctx.phase = "read"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM fault_write WHERE id = %s", [request.GET["id"]])
        return JsonResponse({"found": cursor.fetchone()[0]})


#: Server-side cursors kept past their request, as a cache keeps a QuerySet.iterator().
_kept_cursors: list[Any] = []


def view_cursor_kept(request: HttpRequest) -> HttpResponse:
    """Read a little from a server-side cursor, keep it open, then sleep ``?sleep=``."""
    cursor = connection.chunked_cursor()  # what QuerySet.iterator() uses on PostgreSQL
    cursor.execute("SELECT g FROM generate_series(1, 100000) AS g")
    rows = cursor.fetchmany(100)
    _kept_cursors.append(cursor)
    time.sleep(float(request.GET.get("sleep", "0")))
    return JsonResponse({"rows": len(rows)})


urlpatterns = [
    path("q", view_query),
    path("cursor-kept", view_cursor_kept),
    path("where", view_where),
    path("write", view_write),
    path("read", view_read),
]

# -- plumbing ------------------------------------------------------------------

from tests.wsgi_request import prepare, request  # noqa: E402


def classes(exc: BaseException | None) -> list[str]:
    if exc is None:
        return []
    return [f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__][:4]


def one_request(thread: int, url: str) -> tuple[list[Any], Any]:
    """Serve one request and record it; return (record, JSON body or None)."""
    _ctx.error = None
    _ctx.phase = None
    start = time.monotonic()
    body = None
    try:
        code, body = request(url)
    except Exception as exc:  # the handler itself failed (not the view): record it too
        code, _ctx.error = 0, exc
    end = time.monotonic()
    error = _ctx.error
    ok = code == 200 and error is None
    pid = body.get("pid") if ok and body else None
    message = "" if error is None else f"{error}"[:600]
    if not ok and error is None:
        message = f"HTTP {code} without an exception"
    return [thread, start, end, ok, pid, classes(error), message, _ctx.phase], body


def pool_status() -> list[dict[str, Any]]:
    return [asdict(s) for s in django_sapool.pool_status()]


# -- load ----------------------------------------------------------------------


class QueryPlan:
    """Every thread: the one-statement request, ``think`` seconds apart."""

    def __init__(self, sleep: float = 0.0, think: float = 0.01) -> None:
        self.url = f"/q?sleep={sleep}"
        self.think = think
        self.records: list[list[Any]] = []

    def run(self, thread: int, stop: threading.Event) -> None:
        records = []
        while not stop.is_set():
            records.append(one_request(thread, self.url)[0])
            stop.wait(self.think)
        self.records.extend(records)  # list.extend is atomic

    def result(self) -> dict[str, Any]:
        return {"records": self.records}


class SoakPlan:
    """Mixed writes and reads with client-side accounting of every write.

    A write is ``acked`` when atomic() exited without error, ``failed`` when the
    error came before the COMMIT was sent, ``in_doubt`` when it came from the
    commit. A read asks for the thread's last acked id, which must be there.
    """

    def __init__(self, write_ratio: float = 0.5, think: float = 0.005, seed: int = 1) -> None:
        self.write_ratio = write_ratio
        self.think = think
        self.seed = seed
        self.lock = threading.Lock()
        self.acked: list[str] = []
        self.failed: list[str] = []
        self.in_doubt: list[str] = []
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.max_seconds = 0.0

    def run(self, thread: int, stop: threading.Event) -> None:
        rng = random.Random(self.seed * 1000 + thread)
        acked: list[str] = []
        failed: list[str] = []
        in_doubt: list[str] = []
        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        longest = 0.0
        seq = 0
        while not stop.is_set():
            if not acked or rng.random() < self.write_ratio:
                seq += 1
                write_id = f"{thread}-{seq}-{os.urandom(4).hex()}"
                record, _ = one_request(thread, f"/write?id={write_id}&thread={thread}")
                counts["writes"] += 1
                if record[3]:
                    acked.append(write_id)
                elif record[7] == "commit":
                    in_doubt.append(write_id)
                else:
                    failed.append(write_id)
            else:
                record, body = one_request(thread, f"/read?id={acked[-1]}")
                counts["reads"] += 1
                if record[3] and body["found"] != 1:
                    counts["stale_reads"] += 1
            longest = max(longest, record[2] - record[1])
            if not record[3]:
                counts["failed_requests"] += 1
                errors[f"{(record[5] or ['?'])[0]} [{record[7]}]"] += 1
            stop.wait(self.think)
        with self.lock:
            self.acked += acked
            self.failed += failed
            self.in_doubt += in_doubt
            self.counts.update(counts)
            self.errors.update(errors)
            self.max_seconds = max(self.max_seconds, longest)

    def result(self) -> dict[str, Any]:
        return {
            "acked": self.acked,
            "failed": self.failed,
            "in_doubt": self.in_doubt,
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "max_request_seconds": self.max_seconds,
        }


PLANS: dict[str, Callable[..., Any]] = {"query": QueryPlan, "soak": SoakPlan}


class Load:
    def __init__(self, threads: int, plan: Any) -> None:
        self.plan = plan
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=plan.run, args=(i, self.stop), name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self.threads:
            t.start()

    def finish(self, join_timeout: float) -> dict[str, Any]:
        self.stop.set()
        deadline = time.monotonic() + join_timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        return {"alive": alive, **self.plan.result()}


# -- commands --------------------------------------------------------------------

_load: Load | None = None


def cmd_setup() -> dict[str, Any]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS fault_write (id varchar(40) PRIMARY KEY, thread int)"
            )
        else:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS fault_write "
                "(id varchar(40) PRIMARY KEY, thread int) ENGINE=InnoDB"
            )
        driver = driver_name()
    connection.close()
    gevent = sys.modules.get("gevent.monkey")
    patched = gevent is not None and gevent.is_module_patched("threading")
    facts = {"vendor": connection.vendor, "driver": driver, "gevent": patched}
    if driver == "psycopg2":
        import psycopg2.extensions

        callback = psycopg2.extensions.get_wait_callback()
        facts["wait_callback"] = None if callback is None else type(callback).__name__
    return facts


def cmd_start_load(threads: int, plan: str, **params: Any) -> dict[str, Any]:
    global _load
    assert _load is None, "a load is already running"
    _load = Load(threads, PLANS[plan](**params))
    return {"started": time.monotonic()}


def cmd_stop_load(join_timeout: float = 30.0) -> dict[str, Any]:
    global _load
    assert _load is not None, "no load is running"
    load, _load = _load, None
    result = load.finish(join_timeout)
    result["pools"] = pool_status()
    return result


def cmd_burst(threads: int, url: str, requests: int = 1) -> dict[str, Any]:
    """Start ``threads`` threads at once (a barrier), each serving ``requests`` requests."""
    barrier = threading.Barrier(threads)
    records: list[list[Any]] = []

    def work(i: int) -> None:
        barrier.wait()
        mine = [one_request(i, url)[0] for _ in range(requests)]
        records.extend(mine)

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    alive = sum(t.is_alive() for t in workers)
    return {"records": records, "alive": alive, "pools": pool_status()}


def cmd_status() -> dict[str, Any]:
    return {"pools": pool_status()}


_spawned: list[threading.Thread] = []
_spawned_records: list[list[Any]] = []
_spawned_bodies: list[Any] = []


def cmd_spawn(url: str, threads: int = 1) -> dict[str, Any]:
    """Start ``threads`` requests in the background now; :func:`cmd_collect` gathers them."""

    def work(i: int) -> None:
        record, body = one_request(i, url)
        _spawned_records.append(record)
        _spawned_bodies.append(body)

    started = time.monotonic()
    for i in range(threads):
        t = threading.Thread(target=work, args=(len(_spawned) + i,), daemon=True)
        _spawned.append(t)
        t.start()
    return {"started": started}


def cmd_collect(join_timeout: float = 60.0) -> dict[str, Any]:
    """Wait (bounded) for every spawned request; return their records and bodies."""
    deadline = time.monotonic() + join_timeout
    for t in _spawned:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in _spawned)
    result = {
        "records": list(_spawned_records),
        "bodies": list(_spawned_bodies),
        "alive": alive,
        "pools": pool_status(),
    }
    if not alive:
        _spawned.clear()
        _spawned_records.clear()
        _spawned_bodies.clear()
    return result


def cmd_request(url: str) -> dict[str, Any]:
    """Serve one request now, in this thread; return its record and body."""
    record, body = one_request(0, url)
    return {"record": record, "body": body, "pools": pool_status()}


def cmd_set_setting(key: str, value: Any, alias: str = "default") -> dict[str, Any]:
    """Change one setting of an alias in place, as a credential rotation does."""
    connections.settings[alias][key] = value
    return {}


def cmd_evict() -> dict[str, Any]:
    return {"pools": django_sapool.evict()}


def driver_name() -> str:
    """The driver module really in use (a connection is open)."""
    return type(connection.connection).__module__.split(".")[0]


COMMANDS: dict[str, Callable[..., dict[str, Any]]] = {
    "setup": cmd_setup,
    "start_load": cmd_start_load,
    "stop_load": cmd_stop_load,
    "burst": cmd_burst,
    "status": cmd_status,
    "spawn": cmd_spawn,
    "collect": cmd_collect,
    "request": cmd_request,
    "set_setting": cmd_set_setting,
    "evict": cmd_evict,
}


def reply(payload: dict[str, Any]) -> None:
    sys.stdout.write("SAPOOL-REPLY " + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def main() -> None:
    prepare()
    reply({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "exit":
            break
        try:
            reply({"ok": COMMANDS[op](**command)})
        except Exception:
            reply({"error": traceback.format_exc()})
    if _load is not None:
        _load.finish(10.0)
    reply({"bye": True, "pools": pool_status()})


if __name__ == "__main__":
    main()
