"""A Django process for one integration scenario; run as ``python -m tests.integration.child``.

Each scenario runs in its own process because Django settings are global and
Django picks psycopg 3 or psycopg2 once per process. The parent passes a JSON
config in SAPOOL_CHILD; the scenario's facts come back as JSON on the last line
of stdout. Requests go through Django's real WSGI handler, so request_started /
request_finished fire and close_old_connections() returns connections exactly
as under a WSGI server.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

CONFIG = read_config("SAPOOL_CHILD")
use_driver(CONFIG.get("driver"))

from django.db import DatabaseError, connection, connections, transaction  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

setup_django(
    ROOT_URLCONF=__name__,
    TIME_ZONE=CONFIG.get("time_zone", "UTC"),
    DATABASES=CONFIG.get("databases", {}),
)

import django_sapool  # noqa: E402
from tests.integration.child_threads import Peak, SharedSession, connect, run_threads  # noqa: E402

# -- views ---------------------------------------------------------------------


def _scalar(sql: str, params: Any = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def sleep_on_server(seconds: float) -> None:
    """Run one statement that lasts ``seconds`` on the server (PostgreSQL, MySQL)."""
    if connection.vendor == "postgresql":
        _scalar("SELECT pg_sleep(%s)", [seconds])
    else:
        _scalar("SELECT SLEEP(%s)", [seconds])


def backend_id() -> Any:
    """Identify the server session (PostgreSQL, MySQL) or raw connection (SQLite)."""
    if connection.vendor == "postgresql":
        return _scalar("SELECT pg_backend_pid()")
    if connection.vendor == "mysql":
        return _scalar("SELECT CONNECTION_ID()")
    connection.ensure_connection()
    return id(connection.connection)


def view_pid(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"pid": backend_id()})


def view_one(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"n": _scalar("SELECT count(*) FROM item")})


def view_hold(request: HttpRequest) -> HttpResponse:
    pid = backend_id()
    time.sleep(float(request.GET.get("seconds", "1")))
    return JsonResponse({"pid": pid})


def view_age(request: HttpRequest) -> HttpResponse:
    """The server session serving this request: pid, start (epoch s) and age (s)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, extract(epoch FROM backend_start), "
            "extract(epoch FROM clock_timestamp() - backend_start) "
            "FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        pid, start, age = cursor.fetchone()
    return JsonResponse({"pid": pid, "start": float(start), "age": float(age)})


def view_fail_atomic(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO item (name) VALUES ('from-failed-atomic')")
        raise RuntimeError("boom inside atomic()")


def view_close_in_atomic(request: HttpRequest) -> HttpResponse:
    # Closed midway through atomic() (Django's test_atomic_prevents_queries_in_
    # broken_transaction_after_client_close): the block's next statement must
    # fail, not run in autocommit on another connection.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO item (name) VALUES ('from-closed-atomic')")
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO item (name) VALUES ('from-closed-atomic')")
    return JsonResponse({"pid": backend_id()})


def view_leave_open(request: HttpRequest) -> HttpResponse:
    # Forgets to restore autocommit: Django closes such a connection at request end.
    connection.set_autocommit(False)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO item (name) VALUES ('from-left-open')")
    return JsonResponse({"pid": backend_id()})


def view_raw_begin(request: HttpRequest) -> HttpResponse:
    # Opens a transaction behind Django's back; Django thinks it is in autocommit.
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("INSERT INTO item (name) VALUES ('from-raw-begin')")
    return JsonResponse({"pid": backend_id()})


def view_close_raw(request: HttpRequest) -> HttpResponse:
    # Closes the driver's connection itself, as code that forces a reconnect does.
    pid = backend_id()
    connection.connection.close()
    return JsonResponse({"pid": pid})


def view_dirty_session(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET search_path TO dirty, public")
            cursor.execute("CREATE TEMP TABLE leftover (x int)")
            cursor.execute("SET TIME ZONE 'America/Chicago'")
        else:
            cursor.execute("SET @leftover = 42")
            cursor.execute("CREATE TEMPORARY TABLE leftover (x int)")
            cursor.execute("SET SESSION sql_auto_is_null = 1")
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    return JsonResponse({"pid": backend_id()})


def _mysql_temp_table_exists() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM leftover")
        return True
    except Exception:
        return False


def view_session_state(request: HttpRequest) -> HttpResponse:
    if connection.vendor == "mysql":
        return JsonResponse(
            {
                "pid": backend_id(),
                "user_variable": _scalar("SELECT @leftover"),
                "sql_auto_is_null": _scalar("SELECT @@session.sql_auto_is_null"),
                "isolation": _scalar("SELECT @@session.tx_isolation"),
                "temp_table": _mysql_temp_table_exists(),
            }
        )
    return JsonResponse(
        {
            "pid": backend_id(),
            "search_path": _scalar("SELECT current_setting('search_path')"),
            "time_zone": _scalar("SELECT current_setting('TimeZone')"),
            "temp_table": _scalar("SELECT to_regclass('pg_temp.leftover') IS NOT NULL"),
        }
    )


urlpatterns = [
    path("pid", view_pid),
    path("one", view_one),
    path("hold", view_hold),
    path("age", view_age),
    path("fail-atomic", view_fail_atomic),
    path("close-in-atomic", view_close_in_atomic),
    path("leave-open", view_leave_open),
    path("raw-begin", view_raw_begin),
    path("close-raw", view_close_raw),
    path("dirty-session", view_dirty_session),
    path("session-state", view_session_state),
]

# -- plumbing ------------------------------------------------------------------

from tests.wsgi_request import request  # noqa: E402


def pool_status() -> list[dict[str, Any]]:
    return [asdict(s) for s in django_sapool.pool_status()]


class Observer(SharedSession):
    """A separate, unpooled server session that watches ours (PostgreSQL, MySQL)."""

    def __init__(self) -> None:
        super().__init__(CONFIG["admin_conninfo"], mysql=connection.vendor == "mysql")

    def our_sessions(self, state: str | None = None) -> int:
        if self.mysql:
            # Our sessions are the ones using the test's own database;
            # "idle in transaction" is a session with an open InnoDB transaction.
            if state is None:
                sql = "SELECT count(*) FROM information_schema.processlist WHERE db = %s"
            else:
                sql = (
                    "SELECT count(*) FROM information_schema.innodb_trx t JOIN "
                    "information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                    "WHERE p.db = %s"
                )
            return int(self.scalar(sql, [CONFIG["dbname"]]))
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        params: list[Any] = [CONFIG["app_name"]]
        if state is not None:
            sql += " AND state = %s"
            params.append(state)
        return int(self.scalar(sql, params))

    def session_alive(self, pid: int) -> bool:
        if self.mysql:
            sql = "SELECT count(*) FROM information_schema.processlist WHERE id = %s"
        else:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        return bool(self.scalar(sql, [pid]))

    def kill(self, pid: int) -> None:
        if self.mysql:
            self.row(f"KILL {int(pid)}")
        else:
            self.scalar("SELECT pg_terminate_backend(%s)", [pid])

    def _mysql_status(self, name: str) -> int:
        return int(self.row("SHOW GLOBAL STATUS LIKE %s", [name])[1])

    def statements(self) -> int:
        if self.mysql:
            # Statements (and COM_PINGs, counted apart) from every client; the
            # caller subtracts the observer's own SHOW statements.
            return self._mysql_status("Questions")
        return int(
            self.scalar(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
                [CONFIG["dbname"]],
            )
        )

    def pings(self) -> int:
        return self._mysql_status("Com_admin_commands") if self.mysql else 0

    def item_count(self, name: str) -> int:
        # Committed rows only: asked from a fresh session of our own, outside the pool.
        conn = connect(CONFIG["test_conninfo"], mysql=self.mysql)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT count(*) FROM item WHERE name = %s", [name])
            return int(cursor.fetchone()[0])
        finally:
            conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def setup_table() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("CREATE TABLE IF NOT EXISTS item (id serial PRIMARY KEY, name text)")
        elif connection.vendor == "mysql":
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS item "
                "(id int AUTO_INCREMENT PRIMARY KEY, name varchar(100)) ENGINE=InnoDB"
            )
        else:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS item (id integer PRIMARY KEY AUTOINCREMENT, name text)"
            )
    connection.close()


# -- scenarios -----------------------------------------------------------------


def sequential(n: int) -> dict[str, Any]:
    ids, failures = set(), 0
    for _ in range(n):
        code, body = request("/pid")
        if code == 200:
            ids.add(body["pid"])
        else:
            failures += 1
    facts: dict[str, Any] = {"distinct": len(ids), "failures": failures, "pools": pool_status()}
    if connection.vendor != "sqlite":
        observer = Observer()
        facts["server_sessions"] = observer.our_sessions()
        facts["server_pids"] = sorted(ids)
    return facts


def threads(n_threads: int, cycles: int) -> dict[str, Any]:
    observer = Observer() if connection.vendor != "sqlite" else None
    ids: set[Any] = set()
    codes: list[int] = []
    lock = threading.Lock()

    def work(_worker: int) -> None:
        for _ in range(cycles):
            code, body = request("/pid")
            with lock:
                codes.append(code)
                if code == 200:
                    ids.add(body["pid"])

    with Peak(observer.our_sessions if observer else None) as peak:
        run_threads(n_threads, work)
    return {
        "ok": codes.count(200),
        "failed": len(codes) - codes.count(200),
        "distinct": len(ids),
        "peak_server_sessions": peak.value,
        "pools": pool_status(),
    }


def exhaustion(hold_seconds: float) -> dict[str, Any]:
    holder = threading.Thread(target=request, args=(f"/hold?seconds={hold_seconds}",))
    holder.start()
    wait_until(lambda: any(p["checked_out"] for p in pool_status()))
    started = time.monotonic()
    error: dict[str, Any] = {}
    try:
        connections["default"].ensure_connection()
    except Exception as exc:  # the point: which exception, how fast
        error = {
            "mro": [f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__],
            "message": str(exc),
        }
    elapsed = time.monotonic() - started
    holder.join()
    code, _ = request("/pid")
    return {"error": error, "elapsed": elapsed, "after_code": code, "pools": pool_status()}


def transactions() -> dict[str, Any]:
    observer = Observer()
    results: dict[str, Any] = {}
    _, first = request("/pid")
    for route, name in [
        ("/fail-atomic", "from-failed-atomic"),
        ("/close-in-atomic", "from-closed-atomic"),
        ("/leave-open", "from-left-open"),
        ("/raw-begin", "from-raw-begin"),
    ]:
        code, _ = request(route)
        results[route] = {
            "code": code,
            "idle_in_transaction": observer.our_sessions("idle in transaction"),
            "rows": observer.item_count(name),
        }
    _, last = request("/pid")
    results["same_backend"] = first["pid"] == last["pid"]
    results["pools"] = pool_status()
    return results


def _own_session_counts() -> tuple[int, int]:
    """Questions and COM_PINGs of the pooled (or persistent) session itself (MySQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SHOW SESSION STATUS WHERE Variable_name IN ('Questions', 'Com_admin_commands')"
        )
        counts = {name.lower(): int(value) for name, value in cursor.fetchall()}
    connection.close_if_unusable_or_obsolete()  # back to the pool; a persistent one stays
    return counts["questions"], counts["com_admin_commands"]


def statements(n: int, scope: str = "server") -> dict[str, Any]:
    """Server statements per one-query request.

    scope="server" counts everything the server ran (PostgreSQL: for the test
    database; MySQL: globally, so other clients would add noise). scope="session"
    (MySQL, one reused session) reads the session's own counters through the same
    connection, which no other client can disturb.
    """
    observer = Observer()
    for _ in range(3):  # warm up: the first connection's setup is not per request
        request("/one")
    if scope == "session":
        first, _ = _own_session_counts()
        second, _ = _own_session_counts()
        own = second - first  # what one counter read adds
        before, pings_before = _own_session_counts()
        codes = [request("/one")[0] for _ in range(n)]
        after, pings_after = _own_session_counts()
    else:
        # The observer's own status queries count on MySQL: measure them idle.
        idle = observer.statements()
        idle = observer.statements() - idle
        own = 2 * idle if observer.mysql else 0  # the statements() and pings() calls
        before, pings_before = observer.statements(), observer.pings()
        codes = [request("/one")[0] for _ in range(n)]
        after, pings_after = observer.statements(), observer.pings()
    return {
        "per_request": (after - before - own) / n,
        "pings_per_request": (pings_after - pings_before) / n,
        "ok": codes.count(200),
        "pools": pool_status(),
    }


def dead_connection(wait: float) -> dict[str, Any]:
    observer = Observer()
    _, first = request("/pid")
    observer.kill(first["pid"])
    gone = wait_until(lambda: not observer.session_alive(first["pid"]))
    time.sleep(wait)
    code, second = request("/pid")
    return {
        "gone": gone,
        "code": code,
        "first": first["pid"],
        "second": second and second["pid"],
        "pools": pool_status(),
    }


def closed_raw() -> dict[str, Any]:
    _, first = request("/close-raw")
    code, second = request("/pid")
    return {
        "first": first["pid"],
        "code": code,
        "second": second and second["pid"],
        "pools": pool_status(),
    }


def idle_ping(idle: float) -> dict[str, Any]:
    pids = [request("/pid")[1]["pid"], request("/pid")[1]["pid"]]
    busy_pings = pool_status()[0]["pings"]
    time.sleep(idle)
    pids.append(request("/pid")[1]["pid"])
    return {"pids": pids, "busy_pings": busy_pings, "pools": pool_status()}


def recycle(wait: float) -> dict[str, Any]:
    observer = Observer()
    _, first = request("/pid")
    time.sleep(wait)
    _, second = request("/pid")
    first_alive = observer.session_alive(first["pid"])
    return {"first": first["pid"], "second": second["pid"], "first_alive": first_alive}


def session_state() -> dict[str, Any]:
    _, dirty = request("/dirty-session")
    _, state = request("/session-state")
    return {"dirty_pid": dirty["pid"], **state}


def fork(children: int) -> dict[str, Any]:
    """Fork while holding a connection inside atomic() and an idle pooled one.

    Children serve a request and close all their connections (the usual advice
    after fork), then exit in different ways. If a child touched an inherited
    connection, the parent's open transaction would be rolled back under it.
    """
    _, idle = request("/pid")  # now idle in the pool
    token = os.urandom(6).hex()  # the table is shared by the session's scenarios
    exits = ["return", "sys.exit", "os._exit"]
    child_pids: list[int] = []
    with transaction.atomic():
        parent_pid = backend_id()
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO item (name) VALUES (%s)", [f"before-{token}"])
        for i in range(children):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child
                os.close(read_fd)
                code, body = request("/pid")
                connections.close_all()
                os.write(write_fd, json.dumps(body["pid"] if code == 200 else None).encode())
                os.close(write_fd)
                how = exits[i % len(exits)]
                if how == "os._exit":
                    os._exit(0)
                if how == "sys.exit":
                    sys.exit(0)
                import gc

                gc.collect()  # let every destructor run, then exit normally
                raise SystemExit(0)
            os.close(write_fd)
            with os.fdopen(read_fd) as pipe:
                child_pids.append(json.loads(pipe.read() or "null"))
            os.waitpid(pid, 0)
        still = backend_id()
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO item (name) VALUES (%s)", [f"after-{token}"])
    observer = Observer()
    committed = observer.item_count(f"before-{token}") + observer.item_count(f"after-{token}")
    connection.close()
    _, after = request("/pid")
    return {
        "parent_pid": parent_pid,
        "parent_pid_after": still,
        "committed": committed,
        "idle_pid": idle["pid"],
        "idle_pid_after": after["pid"],
        "child_pids": child_pids,
        "pools": pool_status(),
    }


def idle_shrink(
    burst: int, hold: float, wait: float, trickle: float = 0.0, after_fork: bool = False
) -> dict[str, Any]:
    """A burst opens `burst` server sessions; then the app goes quiet for `wait` s.

    Reports the server's own count of our sessions at the burst's peak, right
    after it, and over the quiet period (when it reached its floor), and
    whether a request still works afterwards. ``trickle`` > 0: one thread keeps
    making a request every ``trickle`` s meanwhile (the pool stays in use).
    ``after_fork``: ``django_sapool.after_fork()`` is called after the burst,
    in this same process (a worker hook that runs after the app queried).
    """
    observer = Observer()
    workers = [
        threading.Thread(target=request, args=(f"/hold?seconds={hold}",)) for _ in range(burst)
    ]
    for w in workers:
        w.start()
    wait_until(lambda: observer.our_sessions() >= burst, timeout=hold * 5 + 10)
    peak = observer.our_sessions()
    for w in workers:
        w.join()
    if after_fork:
        import django_sapool

        django_sapool.after_fork()
    quiet_from = time.monotonic()
    after_burst = observer.our_sessions()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def trickling() -> None:
        while not stop.wait(trickle):
            request("/pid")

    trickler = threading.Thread(target=trickling, daemon=True)
    if trickle > 0:
        trickler.start()
    while time.monotonic() - quiet_from < wait:  # no requests at all unless trickling
        samples.append((round(time.monotonic() - quiet_from, 2), observer.our_sessions()))
        time.sleep(0.1)
    stop.set()
    if trickle > 0:
        trickler.join(10)
    after_quiet = observer.our_sessions()
    code, body = request("/pid")
    return {
        "peak": peak,
        "after_burst": after_burst,
        "after_quiet": after_quiet,
        "samples": samples,
        "request_after": code,
        "sessions_after_request": observer.our_sessions(),
        "pools": pool_status(),
    }


def leak(hold: float, short: float) -> dict[str, Any]:
    """One thread keeps a connection `hold` s, another only `short` s; capture the warnings."""
    import logging

    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record.getMessage())

    log = logging.getLogger("django_sapool")
    log.addHandler(Capture())
    log.setLevel(logging.INFO)

    def leaky_worker() -> None:  # checks a connection out and sits on it
        conn = connections["default"]
        conn.ensure_connection()
        time.sleep(hold)
        conn.close()

    def quick_worker() -> None:
        conn = connections["default"]
        conn.ensure_connection()
        time.sleep(short)
        conn.close()

    for target, name in ((quick_worker, "quick-thread"), (leaky_worker, "leaky-thread")):
        worker = threading.Thread(target=target, name=name)
        worker.start()
        worker.join()
    return {"messages": captured, "pools": pool_status()}


def recycle_spread(n: int, duration: float) -> dict[str, Any]:
    """`n` threads serve requests for `duration` s; every request reports its session's age."""
    seen: list[dict[str, Any]] = []
    failures: list[int] = []
    started = time.time()

    def work(_worker: int) -> None:
        while time.time() - started < duration:
            code, body = request("/age")
            if code != 200:
                failures.append(code)
            else:
                seen.append({**body, "at": time.time()})
            time.sleep(0.01)

    run_threads(n, work)
    return {"started": started, "seen": seen, "failures": failures, "pools": pool_status()}


def failed_first_statement() -> dict[str, Any]:
    """Autocommit off; the transaction's first statement fails; back to the pool, no rollback.

    MySQL opens the transaction, with the row lock of the failed UPDATE, but
    no OK packet comes to set the status flags' "in transaction", which the
    pool reads. Reports the InnoDB transactions of our sessions once the
    connection is back, and how another client's UPDATE of the row fares.
    """
    observer = Observer()
    other = connect(CONFIG["test_conninfo"], mysql=True)
    cursor = other.cursor()
    cursor.execute("CREATE TABLE failed_first (id int PRIMARY KEY, name varchar(5)) ENGINE=InnoDB")
    cursor.execute("INSERT INTO failed_first VALUES (1, 'a')")
    other.commit()
    connection.ensure_connection()
    connection.set_autocommit(False)
    try:
        with connection.cursor() as ours:
            ours.execute("UPDATE failed_first SET name = %s WHERE id = 1", ["x" * 50])
        error = ""
    except DatabaseError as exc:
        error = type(exc).__name__
    connection.close()  # an error path: nobody rolled back
    open_transactions = observer.our_sessions("idle in transaction")
    cursor.execute("SET SESSION innodb_lock_wait_timeout = 2")
    started = time.monotonic()
    try:
        cursor.execute("UPDATE failed_first SET name = 'b' WHERE id = 1")
        other.commit()
        other_update = "ok"
    except Exception as exc:  # the driver's own: 1205, lock wait timeout exceeded
        other_update = f"{type(exc).__name__}: {exc}"
    other_seconds = time.monotonic() - started
    other.close()
    return {
        "error": error,
        "open_transactions": open_transactions,
        "other_update": other_update,
        "other_seconds": other_seconds,
        "pools": pool_status(),
    }


def reset_rounds(rounds: int = 3, text: str = "", set_names: str = "") -> dict[str, Any]:
    """Requests on one pooled MySQL session that RESET_ON_RETURN resets at each return.

    Each request reports what its session says (connection id, autocommit,
    collation, isolation level, client character set, sql_mode), inserts a
    row and rolls back, and inserts ``text`` (committed in autocommit mode);
    after each return, the InnoDB transactions our sessions hold. The first
    request's session is new: what a fresh connection says. ``text_rows``:
    the rows whose name reads ``text`` from a session of our own (a text
    written in another character set than the session's does not).
    ``set_names``: each request ends with ``SET NAMES`` to it, as a view may.
    """
    observer = Observer()
    seen, open_after = [], []
    for _ in range(rounds):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT CONNECTION_ID(), @@autocommit, @@collation_connection, @@tx_isolation, "
                "@@character_set_client, @@session.sql_mode"
            )
            seen.append(list(cursor.fetchone()))
            cursor.execute("INSERT INTO item (name) VALUES ('reset-rolled-back')")
            if text:
                cursor.execute("INSERT INTO item (name) VALUES (%s)", [text])
            if set_names:
                cursor.execute(f"SET NAMES {set_names}")
        connection.rollback()
        connection.close()
        open_after.append(observer.our_sessions("idle in transaction"))
    return {
        "seen": seen,
        "open_after": open_after,
        "rows": observer.item_count("reset-rolled-back"),
        "text_rows": observer.item_count(text) if text else 0,
        "pools": pool_status(),
    }


def read_only_alias_write(attempts: int) -> dict[str, Any]:
    """Writes on an alias that is read-only by its own settings; reads in between.

    Two server sessions are opened first (two threads at once); then, in turn,
    a write that fails and a read. Reports the write errors' SQLSTATE, the
    server sessions seen before and after, and the pool's counters.
    """
    barrier = threading.Barrier(2)

    def warm() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            barrier.wait(10)
            (pid,) = cursor.fetchone()
        connection.close()
        return int(pid)

    before: list[int] = []
    run_threads(2, lambda _: before.append(warm()))
    errors, after = [], set()
    for _ in range(attempts):
        try:
            with connection.cursor() as cursor:
                cursor.execute("CREATE TABLE read_only_probe (id int)")
            errors.append("none")
        except DatabaseError as exc:
            errors.append(
                getattr(exc.__cause__, "sqlstate", None) or getattr(exc.__cause__, "pgcode", None)
            )
        connection.close()
        after.add(backend_id())
        connection.close()
    return {
        "before": sorted(before),
        "after": sorted(after),
        "errors": errors,
        "server_sessions": Observer().our_sessions(),
        "pools": pool_status(),
    }


def threads_that_never_close(n: int) -> dict[str, Any]:
    """``n`` threads, one after another, each runs a query and ends without closing.

    The cycle collector is off, as when a waiting process allocates too
    little to trigger it: only the pool can get those connections back.
    Reports each thread's outcome and seconds, and the sessions on the server.
    """
    outcomes: list[tuple[str, float]] = []

    def work(_: int) -> None:
        started = time.monotonic()
        try:
            backend_id()
            outcomes.append(("ok", time.monotonic() - started))
        except Exception as exc:
            outcomes.append((type(exc).__name__, time.monotonic() - started))

    gc.disable()
    try:
        for _ in range(n):
            run_threads(1, work)
    finally:
        gc.enable()
    return {
        "outcomes": outcomes,
        "server_sessions": Observer().our_sessions(),
        "pools": pool_status(),
    }


def threads_end_while_others_wait(holders: int, waiters: int, hold: float) -> dict[str, Any]:
    """``holders`` threads query, hold ``hold`` s and end without closing; ``waiters`` wait.

    The waiters start once every holder has its connection, so they wait in
    the pool when the holders end; the cycle collector is off, as in
    threads_that_never_close. Reports each waiter's outcome and seconds.
    """
    outcomes: list[tuple[str, float]] = []
    held = threading.Barrier(holders + 1)

    def hold_and_end() -> None:
        backend_id()
        held.wait()
        time.sleep(hold)

    def wait(_: int) -> None:
        started = time.monotonic()
        try:
            backend_id()
            connection.close()
            outcomes.append(("ok", time.monotonic() - started))
        except Exception as exc:
            outcomes.append((type(exc).__name__, time.monotonic() - started))

    gc.disable()
    try:
        ended = [threading.Thread(target=hold_and_end) for _ in range(holders)]
        for t in ended:
            t.start()
        held.wait()
        run_threads(waiters, wait)
        for t in ended:
            t.join()
    finally:
        gc.enable()
    gc.collect()  # what no waiter needed back any more, too
    return {"outcomes": outcomes, "pools": pool_status()}


def greenlets_that_never_close() -> dict[str, Any]:
    """Under gevent: a greenlet queries and ends without closing; then another queries.

    In a forked child that monkey-patches with gevent (as gunicorn's gevent
    worker), with the cycle collector off. Reports the second greenlet's
    outcome and seconds, and the pools.
    """

    def child() -> dict[str, Any]:
        from gevent import monkey

        monkey.patch_all()
        import gevent
        from asgiref.local import Local

        # Per greenlet from now on, as in a process patched before Django loaded.
        connections._connections = Local(connections.thread_critical)
        gc.disable()
        gevent.spawn(backend_id).join()  # ends holding its connection
        started = time.monotonic()
        try:
            gevent.spawn(lambda: backend_id() and connection.close()).get()
            outcome = "ok"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        return {"outcome": outcome, "seconds": time.monotonic() - started, "pools": pool_status()}

    return in_forked_child(child)


def dispose_while_others_wait(threads: int, hold: float) -> dict[str, Any]:
    """``threads`` threads each hold a connection ``hold`` s; dispose() while most wait.

    Reports the outcomes, and how many connections the disposed pool opened
    after dispose() (none: its waiters move to the new pool).
    """
    run_threads(1, lambda _: backend_id() and connection.close())
    old = connection.sapool_pool()
    codes: list[int] = []

    def work(_: int) -> None:
        codes.append(request(f"/hold?seconds={hold}")[0])

    worker = threading.Thread(target=run_threads, args=(threads, work))
    worker.start()
    time.sleep(hold / 2)  # the pool's connections are held, the other threads wait
    opened_before = old.status().connections_opened
    django_sapool.dispose()
    worker.join()
    return {
        "codes": codes,
        "opened_after_dispose": old.status().connections_opened - opened_before,
        "pools": pool_status(),
    }


def dispose_while_waiting_for_a_full_pool(
    waiters: int, dispose_after: float, hold: float
) -> dict[str, Any]:
    """POOL_SIZE 1: a holder keeps the connection; ``waiters`` wait; dispose() meanwhile.

    The waiters move to the alias's new pool, where the first one takes its
    only connection (and keeps it ``hold`` s) and the others wait again.
    Reports each waiter's outcome and the seconds from its start to its end.
    """
    holding = threading.Event()
    outcomes: list[tuple[str, float]] = []

    def hold_it() -> None:
        try:
            backend_id()
            holding.set()
            time.sleep(hold)
        finally:
            connection.close()

    def wait(_: int) -> None:
        started = time.monotonic()
        try:
            backend_id()
            outcome = "ok"
            time.sleep(hold)
        except Exception as exc:
            outcome = type(exc).__name__
        finally:
            connection.close()
        outcomes.append((outcome, round(time.monotonic() - started, 3)))

    holder = threading.Thread(target=hold_it)
    holder.start()
    holding.wait(10)
    waiting = threading.Thread(target=run_threads, args=(waiters, wait))
    waiting.start()
    time.sleep(dispose_after)
    django_sapool.dispose()
    waiting.join()
    holder.join()
    return {"outcomes": sorted(outcomes), "pools": pool_status()}


def in_forked_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Return what ``work()`` reports in a forked child (killed after 20 s: child_status 9)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report on the pipe, never return into the scenario
        code = 1
        try:
            os.write(write_end, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)  # hung: status says killed (9)
        status = os.waitpid(pid, 0)[1]
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    child = json.loads(output) if output else {}
    return {"child_status": status, **child}


def gevent_after_fork(sleeps: int) -> dict[str, Any]:
    """What gunicorn's gevent worker does with a preloaded app that queried.

    The parent checks a connection out and back in a thread (its pool and
    housekeeper exist), forks; the child monkey-patches with gevent, serves a
    request in a greenlet, then sleeps 50 ms ``sleeps`` times in the hub and
    reports the longest sleep and its pool once IDLE_TIMEOUT has passed. A
    child that hangs is killed after 20 s.
    """
    run_threads(1, lambda _: backend_id() and connection.close())

    def child() -> dict[str, Any]:
        from gevent import monkey

        monkey.patch_all()
        import gevent

        gevent.spawn(lambda: backend_id() and connection.close()).join()
        longest = 0.0
        for _ in range(sleeps):
            started = time.monotonic()
            gevent.sleep(0.05)
            longest = max(longest, time.monotonic() - started)
        return {"longest_sleep": longest, "pools": pool_status()}

    return in_forked_child(child)


def connect_fails_while_another_waits() -> dict[str, Any]:
    """Thread A opens the pool's only connection, which fails after 1 s; B queues meanwhile.

    PASSWORD_PROVIDER (flaky_password.py) fails that call only. Reports
    each thread's outcome and seconds from A's start.
    """
    from tests.integration import flaky_password

    django_sapool.dispose()  # the next checkout opens the pool's only connection
    flaky_password.armed = True
    outcomes: dict[str, Any] = {}
    started = time.monotonic()

    def checkout(name: str) -> None:
        if name == "b":
            time.sleep(0.3)  # A is connecting by now
        try:
            backend_id()
            outcomes[name] = ("ok", time.monotonic() - started)
        except Exception as exc:
            outcomes[name] = (type(exc).__name__, time.monotonic() - started)
        finally:
            connection.close()

    run_threads(2, lambda i: checkout("ab"[i]))
    return {**outcomes, "pools": pool_status()}


def late_cursor_close(in_atomic: bool) -> dict[str, Any]:
    """An iterator's cursor outlives its request; it is closed while another request runs.

    Request A, in a thread, opens a chunked cursor (PostgreSQL: server-side),
    inside atomic() or not (then holdable), as ``QuerySet.iterator()`` does,
    reads one row and keeps it past its end (a cache, a reference cycle, an
    abandoned async iterator). Request B, in another thread, gets the same
    pooled session (POOL_SIZE 1), counts the session's open cursors
    (PostgreSQL), inserts a row in atomic() and runs a 0.6 s statement,
    during which A's cursor is closed (the iterator dropped); then B inserts
    a second row and commits. Reports both sessions, the cursors B saw, how
    the late close went, B's outcome and the rows B committed.
    """
    marker = f"late-{time.monotonic_ns()}"
    with connection.cursor() as cursor:
        cursor.executemany("INSERT INTO item (name) VALUES (%s)", [("late-a",)] * 5)
    connection.close()
    kept: list[Any] = []
    facts: dict[str, Any] = {}

    def request_a() -> None:
        with transaction.atomic() if in_atomic else nullcontext():
            facts["a_session"] = backend_id()
            cursor = connection.chunked_cursor()
            cursor.execute("SELECT id FROM item WHERE name = 'late-a'")
            facts["a_read"] = len(cursor.fetchmany(1))
            kept.append(cursor)
        connection.close()  # the request's end

    inserted, dropped = threading.Event(), threading.Event()

    postgresql = connection.vendor == "postgresql"

    def insert() -> None:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO item (name) VALUES (%s)", [marker])

    def request_b() -> None:
        try:
            if postgresql:
                facts["b_cursors"] = _scalar("SELECT count(*) FROM pg_cursors")
            with transaction.atomic():
                facts["b_session"] = backend_id()
                insert()
                inserted.set()
                sleep_on_server(0.6)
                dropped.wait(10)
                insert()
            facts["b_outcome"] = "committed"
        except Exception as exc:
            facts["b_outcome"] = f"{type(exc).__name__}: {exc}"
        finally:
            inserted.set()
            connection.close()

    thread = threading.Thread(target=request_a)
    thread.start()
    thread.join()
    thread = threading.Thread(target=request_b)
    thread.start()
    inserted.wait(10)
    time.sleep(0.2)  # within B's 0.6 s statement
    try:
        kept.pop().close()  # what the iterator's finally does when it is dropped
        facts["late_close"] = "ok"
    except Exception as exc:  # psycopg2: a cursor that died with its transaction
        facts["late_close"] = f"{type(exc).__name__}: {exc}"
    dropped.set()
    thread.join()
    facts["b_rows"] = Observer().item_count(marker)
    facts["pools"] = pool_status()
    return facts


def long_query(seconds: float) -> dict[str, Any]:
    """One statement of ``seconds`` on a new connection; its outcome."""
    try:
        sleep_on_server(seconds)
        outcome = "ok"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    connection.close()
    return {"outcome": outcome, "pools": pool_status()}


def iterator_read_after_return(rows: int) -> dict[str, Any]:
    """Read 2 rows of an iterator, end the request (the connection goes back), read on.

    As ``QuerySet.iterator()`` reads (Django's ``cursor_iter``): a chunked
    cursor, ``fetchmany()`` until empty, ``close()``. Then 50 iterators are
    read to the end in one checkout, and the cursors the wrapper still tracks
    are counted (none: a finished one is not kept, however many a batch job
    runs).
    """
    with connection.cursor() as cursor:
        cursor.executemany("INSERT INTO item (name) VALUES (%s)", [("after",)] * rows)
    connection.close()
    select = "SELECT id FROM item WHERE name = 'after'"
    facts: dict[str, Any] = {}
    cursor = connection.chunked_cursor()
    cursor.execute(select)
    read = list(cursor.fetchmany(2))
    connection.close()  # the request's end
    try:
        while chunk := cursor.fetchmany(100):
            read.extend(chunk)
        cursor.close()
        facts["outcome"] = "ok"
    except Exception as exc:
        facts["outcome"] = type(exc).__name__
    facts["read"] = len(read)
    for _ in range(50):
        cursor = connection.chunked_cursor()
        cursor.execute(select)
        while cursor.fetchmany(100):
            pass
        cursor.close()
    del cursor
    gc.collect()
    facts["tracked"] = len(list(connection._sapool_iterator_cursors or ()))
    connection.close()
    facts["pools"] = pool_status()
    return facts


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    f.__name__: f
    for f in (
        sequential,
        threads,
        exhaustion,
        transactions,
        statements,
        dead_connection,
        closed_raw,
        idle_ping,
        recycle,
        session_state,
        fork,
        idle_shrink,
        leak,
        recycle_spread,
        failed_first_statement,
        reset_rounds,
        late_cursor_close,
        read_only_alias_write,
        threads_that_never_close,
        threads_end_while_others_wait,
        greenlets_that_never_close,
        dispose_while_others_wait,
        dispose_while_waiting_for_a_full_pool,
        iterator_read_after_return,
        long_query,
        gevent_after_fork,
        connect_fails_while_another_waits,
    )
}


def main() -> None:
    if CONFIG["scenario"] != "read_only_alias_write":  # whose alias cannot create it
        setup_table()
    facts = SCENARIOS[CONFIG["scenario"]](**CONFIG.get("params", {}))
    facts["driver"] = connection.Database.__name__
    if connection.vendor == "mysql":
        facts["driver"] = type(connection.connection or connection.Database).__module__
    print("SAPOOL-RESULT " + json.dumps(facts, default=str))


if __name__ == "__main__":
    main()
