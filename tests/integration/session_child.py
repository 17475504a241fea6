"""A Django process for the session-state and security tests.

Run as ``python -m tests.integration.session_child``; the parent passes a JSON
config in SAPOOL_SESSION_CHILD (see ``run_child`` in conftest.py) and gets the
scenario's facts back as JSON on a line starting with ``SAPOOL-RESULT``.

The facts are raw observations (what the server and the pooled session said);
the tests classify them, so what counts as "kept" or "cleared" is decided in
one visible place (test_session_state.py). Requests go through Django's real
WSGIHandler: request_finished -> close_old_connections() returns connections to
the pool exactly as under a WSGI server.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

CONFIG = read_config("SAPOOL_SESSION_CHILD")
DRIVERS: list[str] = CONFIG.get("drivers", [])
use_driver(*DRIVERS)

from django.conf import settings  # noqa: E402


def _databases() -> dict[str, Any]:
    """DATABASES from the config; PostgreSQL isolation levels given by name."""
    databases: dict[str, Any] = CONFIG.get("databases", {})
    for db in databases.values():
        options = db.get("OPTIONS", {})
        level = options.get("isolation_level")
        if "postgresql" in db["ENGINE"] and isinstance(level, str):
            # psycopg's and psycopg2's numbers differ: Django's enum of the driver in use.
            from django.db.backends.postgresql.psycopg_any import IsolationLevel

            options["isolation_level"] = IsolationLevel[level]
    return databases


setup_django(
    DEBUG=CONFIG.get("debug", False),
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=CONFIG.get("installed_apps", []),
    TIME_ZONE="UTC",
    DATABASES=_databases(),
)

from django.db import connections, transaction  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

import django_sapool  # noqa: E402

# -- helpers -------------------------------------------------------------------


def _rows(alias: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _scalar(alias: str, sql: str, params: Any = None) -> Any:
    return _rows(alias, sql, params)[0][0]


def _execute(alias: str, *statements: str | tuple[str, list[Any]]) -> None:
    with connections[alias].cursor() as cursor:
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, None)
            cursor.execute(sql, params)


def _fails(alias: str, sql: str) -> bool:
    """Run a statement; return whether the server refused it (the statement's object is gone)."""
    try:
        _rows(alias, sql)
    except Exception:
        return True
    return False


def backend_pid(alias: str) -> int:
    vendor = connections[alias].vendor
    return int(
        _scalar(
            alias, "SELECT pg_backend_pid()" if vendor == "postgresql" else "SELECT CONNECTION_ID()"
        )
    )


# -- views ---------------------------------------------------------------------
# Every view takes ?alias=...; the state-changing ones use names derived from
# ?token=... so that two aliases (or two runs) never touch each other's objects.


def view_setup(request: HttpRequest) -> HttpResponse:
    """What Django's own session setup left on the pooled session."""
    alias = request.GET["alias"]
    if connections[alias].vendor == "postgresql":
        facts = {
            "pid": backend_pid(alias),
            "time_zone": _scalar(alias, "SELECT current_setting('TimeZone')"),
            "current_user": _scalar(alias, "SELECT current_user"),
            "statement_timeout": _scalar(alias, "SELECT current_setting('statement_timeout')"),
        }
        # psycopg applies OPTIONS['isolation_level'] to the transactions it opens.
        with transaction.atomic(using=alias):
            facts["isolation"] = _scalar(alias, "SHOW transaction_isolation")
        return JsonResponse(facts)
    return JsonResponse(
        {
            "pid": backend_pid(alias),
            "isolation": _scalar(alias, "SELECT @@session.tx_isolation"),
            "sql_mode": _scalar(alias, "SELECT @@session.sql_mode"),
            "current_role": _scalar(alias, "SELECT CURRENT_ROLE()"),
        }
    )


def view_dirty(request: HttpRequest) -> HttpResponse:
    """Leave every kind of session state behind, then an open transaction.

    The transaction comes last: PostgreSQL's SET is transactional, and a rollback
    must not be what clears the settings made before it.
    """
    alias, token = request.GET["alias"], request.GET["token"]
    pid = backend_pid(alias)
    if connections[alias].vendor == "postgresql":
        _execute(
            alias,
            f'SET ROLE "{CONFIG["role"]}"',
            "SET search_path TO sapool_dirty, public",
            "SELECT set_config('sapool.x', 'v', false)",
            "SET TIME ZONE 'Asia/Tokyo'",
            "CREATE TEMP TABLE sapool_tmp (x int)",
            ("SELECT pg_advisory_lock(%s)", [int(request.GET["lock"])]),
            "PREPARE sapool_p AS SELECT 1",
            "BEGIN",
            ("INSERT INTO item (name) VALUES (%s)", [token]),
        )
    else:
        _execute(
            alias,
            f"SET ROLE `{CONFIG['role']}`",
            "SET SESSION time_zone = '+05:00'",
            "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET @sapool_x = 1",
            "CREATE TEMPORARY TABLE sapool_tmp (x int)",
            ("SELECT GET_LOCK(%s, 0)", [request.GET["lock"]]),
            "PREPARE sapool_p FROM 'SELECT 1'",
            "START TRANSACTION",
            ("INSERT INTO item (name) VALUES (%s)", [token]),
        )
    return JsonResponse({"pid": pid})


def view_observe(request: HttpRequest) -> HttpResponse:
    """Read, from the next checkout of the same server session, what is still there."""
    alias, token = request.GET["alias"], request.GET["token"]
    if connections[alias].vendor == "postgresql":
        lock = int(request.GET["lock"])
        return JsonResponse(
            {
                "pid": backend_pid(alias),
                # An open transaction that survived has the INSERT's transaction id.
                "xact_id": _scalar(alias, "SELECT pg_current_xact_id_if_assigned()::text"),
                "own_rows": _scalar(alias, "SELECT count(*) FROM item WHERE name = %s", [token]),
                "current_user": _scalar(alias, "SELECT current_user"),
                "search_path": _scalar(alias, "SELECT current_setting('search_path')"),
                "variable": _scalar(alias, "SELECT current_setting('sapool.x', true)"),
                "time_zone": _scalar(alias, "SELECT current_setting('TimeZone')"),
                "temp_table": _scalar(
                    alias, "SELECT to_regclass('pg_temp.sapool_tmp') IS NOT NULL"
                ),
                "prepared": _scalar(
                    alias, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'sapool_p'"
                ),
                "own_lock": _scalar(
                    alias,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND objid = %s AND granted",
                    [lock],
                ),
            }
        )
    return JsonResponse(
        {
            "pid": backend_pid(alias),
            # 1 while a transaction is open in this session (MariaDB >= 10.3).
            "in_transaction": _scalar(alias, "SELECT @@in_transaction"),
            "own_rows": _scalar(alias, "SELECT count(*) FROM item WHERE name = %s", [token]),
            "current_role": _scalar(alias, "SELECT CURRENT_ROLE()"),
            "time_zone": _scalar(alias, "SELECT @@session.time_zone"),
            "isolation": _scalar(alias, "SELECT @@session.tx_isolation"),
            "variable": _scalar(alias, "SELECT @sapool_x"),
            "temp_table": not _fails(alias, "SELECT count(*) FROM sapool_tmp"),
            "prepared": not _fails(alias, "EXECUTE sapool_p"),
            "own_lock": _scalar(
                alias, "SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", [request.GET["lock"]]
            ),
        }
    )


def view_whoami(request: HttpRequest) -> HttpResponse:
    alias = request.GET["alias"]
    if connections[alias].vendor == "postgresql":
        user, pid = _rows(alias, "SELECT current_user, pg_backend_pid()")[0]
    else:
        user, pid = _rows(alias, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), CONNECTION_ID()")[
            0
        ]
    return JsonResponse({"user": user, "pid": pid})


def view_hold(request: HttpRequest) -> HttpResponse:
    alias = request.GET["alias"]
    pid = backend_pid(alias)
    time.sleep(float(request.GET["seconds"]))
    return JsonResponse({"pid": pid})


urlpatterns = [
    path("setup", view_setup),
    path("dirty", view_dirty),
    path("observe", view_observe),
    path("whoami", view_whoami),
    path("hold", view_hold),
]

# -- plumbing ------------------------------------------------------------------

from tests.integration.child_threads import run_threads  # noqa: E402
from tests.wsgi_request import request  # noqa: E402


def get(url: str) -> Any:
    code, body = request(url)
    if code != 200:
        raise AssertionError(f"GET {url} answered {code}")
    return body


def pool_status(alias: str | None = None) -> list[dict[str, Any]]:
    return [asdict(s) for s in django_sapool.pool_status(alias)]


class Observer:
    """A separate, unpooled session (the admin's), with the driver Django picked."""

    def __init__(self, vendor: str, conninfo: Any) -> None:
        self.mysql = vendor == "mysql"
        if self.mysql:
            import MySQLdb

            self.conn = MySQLdb.connect(**conninfo)
            self.conn.autocommit(True)
        else:
            from django.db.backends.postgresql.base import Database

            self.conn = Database.connect(conninfo)
            self.conn.autocommit = True

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def scalar(self, sql: str, params: Any = None) -> Any:
        return self.rows(sql, params)[0][0]

    def close(self) -> None:
        self.conn.close()


# -- scenario: what survives a return, per RESET_ON_RETURN ---------------------


def _outside(observer: Observer, pid: int, token: str, lock: Any) -> dict[str, Any]:
    """What another session sees of ours while it sits idle in the pool."""
    if observer.mysql:
        return {
            "rows": observer.scalar("SELECT count(*) FROM item WHERE name = %s", [token]),
            "in_transaction": observer.scalar(
                "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = %s",
                [pid],
            ),
            "lock_holder": observer.scalar("SELECT IS_USED_LOCK(%s)", [lock]),
        }
    return {
        "rows": observer.scalar("SELECT count(*) FROM item WHERE name = %s", [token]),
        "state": observer.scalar("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]),
        "lock_holder": observer.scalar(
            "SELECT min(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
            [lock],
        ),
    }


def matrix(aliases: list[str]) -> dict[str, Any]:
    """Per alias (one RESET_ON_RETURN mode each): two clean requests, then dirty + observe."""
    vendor = connections[aliases[0]].vendor
    observer = Observer(vendor, CONFIG["observer"])
    results: dict[str, Any] = {}
    try:
        for n, alias in enumerate(aliases):
            token = f"{CONFIG['token']}_{alias}"
            lock: Any = CONFIG["lock_base"] + n if vendor == "postgresql" else f"sapool_{token}"
            query = f"alias={alias}&token={token}&lock={lock}"
            setup = [get(f"/setup?{query}"), get(f"/setup?{query}")]
            dirty = get(f"/dirty?{query}")
            after_dirty = _outside(observer, dirty["pid"], token, lock)
            observed = get(f"/observe?{query}")
            results[alias] = {
                "setup": setup,
                "dirty_pid": dirty["pid"],
                "after_dirty": after_dirty,
                "observe": observed,
                "after_observe": _outside(observer, observed["pid"], token, lock),
                "pools": pool_status(alias),
            }
    finally:
        observer.close()
    return results


# -- scenario: two users on one server -----------------------------------------


class Sessions:
    """Samples the server's sessions of our database: backend pid -> login user."""

    def __init__(self, vendor: str) -> None:
        self.observer = Observer(vendor, CONFIG["observer"])
        self.users: dict[int, set[str]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def sample(self) -> None:
        if self.observer.mysql:
            sql = (
                "SELECT id, user FROM information_schema.processlist "
                "WHERE db = %s AND id <> CONNECTION_ID()"
            )
        else:
            sql = (
                "SELECT pid, usename FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()"
            )
        for pid, user in self.observer.rows(sql, [CONFIG["dbname"]]):
            self.users.setdefault(int(pid), set()).add(str(user))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.005)

    def __enter__(self) -> Sessions:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.observer.close()


def interleave(aliases: list[str], threads: int, rounds: int) -> list[dict[str, Any]]:
    """Each thread alternates between the aliases; one request per query."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()
    errors: list[str] = []

    def work(offset: int) -> None:
        for i in range(rounds):
            alias = aliases[(i + offset) % len(aliases)]
            try:
                body = get(f"/whoami?alias={alias}")
            except Exception as exc:  # collected: the test asserts there are none
                with lock:
                    errors.append(f"{alias}: {exc}")
                continue
            with lock:
                seen.append({"alias": alias, **body})

    run_threads(threads, work)
    if errors:
        raise AssertionError(f"{len(errors)} requests failed, first: {errors[0]}")
    return seen


def users(threads: int, rounds: int) -> dict[str, Any]:
    """Two aliases, two users; then USER and PASSWORD changed at run time."""
    vendor = connections["a"].vendor
    facts: dict[str, Any] = {}
    with Sessions(vendor) as sessions:
        facts["both"] = interleave(["a", "b"], threads, rounds)
    facts["both_sessions"] = {str(k): sorted(v) for k, v in sessions.users.items()}
    facts["both_samples"] = sessions.samples

    # What Django's test tools do: mutate the alias's settings_dict, which every
    # thread's wrapper of the alias shares.
    shared = connections["a"].settings_dict
    original = {"USER": shared["USER"], "PASSWORD": shared["PASSWORD"]}
    shared.update(USER=CONFIG["user_c"], PASSWORD=CONFIG["password_c"])
    with Sessions(vendor) as sessions:
        facts["switched"] = interleave(["a", "b"], threads, rounds)
    facts["switched_sessions"] = {str(k): sorted(v) for k, v in sessions.users.items()}
    facts["switched_pools"] = len(pool_status("a"))
    shared.update(original)
    facts["restored"] = interleave(["a"], 2, 10)
    facts["restored_pools"] = len(pool_status("a"))

    # Only the password changes. It must not share the old pool: on PostgreSQL
    # (trust) it connects anew; on MariaDB a wrong password must fail to connect
    # rather than borrow the idle, authenticated session.
    b_pools_before = len(pool_status("b"))
    connections.close_all()
    shared_b = connections["b"].settings_dict
    good_password = shared_b["PASSWORD"]
    shared_b["PASSWORD"] = CONFIG["other_password"]
    try:
        facts["new_password"] = {"ok": True, **get("/whoami?alias=b")}
    except Exception:
        facts["new_password"] = {"ok": False}
    try:
        connections["b"].ensure_connection()
    except Exception as exc:
        facts["new_password_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        connections["b"].close()
    facts["new_password_pools"] = len(pool_status("b"))
    facts["b_pools_before"] = b_pools_before
    shared_b["PASSWORD"] = good_password
    facts["restored_b"] = interleave(["b"], 2, 10)

    # override_settings(DATABASES=...) is what a test would try. Django warns
    # and its connection handler keeps the settings it read at startup.
    import warnings

    from django.db.utils import ConnectionHandler
    from django.test import override_settings

    overridden = {k: dict(v) for k, v in settings.DATABASES.items()}
    overridden["a"].update(USER=CONFIG["user_c"], PASSWORD=CONFIG["password_c"])
    whoami = (
        "SELECT current_user, pg_backend_pid()"
        if vendor == "postgresql"
        else "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), CONNECTION_ID()"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with override_settings(DATABASES=overridden):
            facts["override_existing"] = get("/whoami?alias=a")
            facts["override_existing_settings_user"] = connections["a"].settings_dict["USER"]
            # A new handler (as in a new process) reads the overridden settings.
            fresh = ConnectionHandler()
            try:
                user, pid = _fresh_rows(fresh["a"], whoami)
            finally:
                fresh.close_all()
            facts["override_fresh"] = {"user": user, "pid": pid}
    facts["override_warned"] = any("DATABASES" in str(w.message) for w in caught)
    connections.close_all()
    sessions = Sessions(vendor)
    sessions.sample()
    facts["final_sessions"] = {str(k): sorted(v) for k, v in sessions.users.items()}
    sessions.observer.close()
    facts["pools"] = pool_status()
    return facts


def _fresh_rows(wrapper: Any, sql: str) -> tuple[Any, ...]:
    with wrapper.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchone())


# -- scenario: the password never shows ----------------------------------------


class Collect(logging.Handler):
    """Every log record, rendered every way a log pipeline could render it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.messages: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(f"{record.name}: {message}")
        self.texts += [self.format(record), repr(record.args), repr(vars(record)), message]
        if record.exc_info:
            self.texts.append("".join(traceback.format_exception(*record.exc_info)))


def _caught(texts: list[str], action: Callable[[], Any]) -> str:
    """Run an action expected to fail; keep every rendering of its exception."""
    try:
        action()
    except BaseException as exc:
        rendered = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        rendered += [repr(getattr(exc, "args", ())), repr(exc.__cause__), repr(exc.__context__)]
        texts += rendered
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"{action} did not fail")


def _command(texts: list[str], *args: str) -> dict[str, Any]:
    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    error = None
    try:
        call_command(*args, stdout=out, stderr=err)
    except BaseException as exc:  # CommandError / SystemCheckError: kept as text
        error = f"{type(exc).__name__}: {exc}"
        texts.append(error)
    texts += [out.getvalue(), err.getvalue()]
    return {"out": out.getvalue(), "err": err.getvalue(), "error": error}


def leak() -> dict[str, Any]:
    """Everything the library can say about aliases with a password, at DEBUG.

    File descriptor 1 goes to a file meanwhile, so that whatever writes to stdout
    (SQLAlchemy's echo handler, a C library) is captured too; fd 2 is captured by
    the parent.
    """
    import tempfile

    sys.stdout.flush()
    saved_stdout = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 1)
        try:
            facts = _leak()
        finally:
            sys.stdout.flush()
            os.dup2(saved_stdout, 1)
            os.close(saved_stdout)
        captured.seek(0)
        facts["stdout"] = captured.read().decode("utf-8", "replace")
    return facts


def _leak() -> dict[str, Any]:
    from django_sapool import registry

    handler = Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    stream = logging.StreamHandler(sys.stderr)
    stream.setLevel(logging.DEBUG)
    root.addHandler(stream)
    for name in (
        "django_sapool",
        "sqlalchemy",
        "sqlalchemy.pool",
        "sqlalchemy.engine",
        "django.db.backends",
    ):
        logging.getLogger(name).setLevel(logging.DEBUG)

    texts: list[str] = []
    facts: dict[str, Any] = {"events": {}}
    events = facts["events"]
    for alias in ("pg", "my"):
        pids = [get(f"/whoami?alias={alias}")["pid"] for _ in range(3)]  # checkouts, returns
        events[f"{alias}_checkouts"] = pids
        time.sleep(CONFIG["recycle"] + 0.3)
        events[f"{alias}_after_recycle"] = get(f"/whoami?alias={alias}")["pid"]
        observer = Observer(connections[alias].vendor, CONFIG[f"{alias}_observer"])
        victim = events[f"{alias}_after_recycle"]
        if observer.mysql:
            observer.rows(f"KILL {int(victim)}")
        else:
            observer.rows("SELECT pg_terminate_backend(%s)", [victim])
        observer.close()
        time.sleep(0.3)
        events[f"{alias}_after_kill"] = get(f"/whoami?alias={alias}")["pid"]
        # Exhaustion: POOL_SIZE=1, MAX_OVERFLOW=0, a short TIMEOUT.
        holder = threading.Thread(target=get, args=(f"/hold?alias={alias}&seconds=1.5",))
        holder.start()
        deadline = time.monotonic() + 5
        while not any(p["checked_out"] for p in pool_status(alias)) and time.monotonic() < deadline:
            time.sleep(0.01)
        events[f"{alias}_exhausted"] = _caught(texts, connections[alias].ensure_connection)
        holder.join()
        texts += [repr(p) for p in registry.pools()]
    # A wrong password on MariaDB: the server's refusal is the error message.
    events["wrong_password"] = _caught(texts, connections["my_wrong"].ensure_connection)
    connections["my_wrong"].close()
    texts += [
        repr(registry.pools()),
        repr(list(registry._pools)),
        repr(dict(registry._pools)),
        repr(django_sapool.pool_status()),
        json.dumps(pool_status(), default=str),
    ]
    facts["pool_status"] = pool_status()
    facts["registry_keys"] = [repr(k) for k in registry._pools]
    facts["commands"] = {
        "sapool_json": _command(texts, "sapool", "--json"),
        "sapool_check": _command(texts, "sapool", "--check", "--workers", "2"),
        "sapool_check_json": _command(texts, "sapool", "--check", "--json"),
        "check": _command(texts, "check"),
        "check_deploy": _command(texts, "check", "--database", "pg", "--database", "my"),
    }
    facts["log_messages"] = handler.messages
    facts["log_texts"] = handler.texts
    facts["texts"] = texts
    root.removeHandler(handler)
    return facts


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {f.__name__: f for f in (matrix, users, leak)}


def main() -> None:
    facts = SCENARIOS[CONFIG["scenario"]](**CONFIG.get("params", {}))
    # psycopg, psycopg2, MySQLdb (mysqlclient) or pymysql (installed as MySQLdb).
    facts["drivers"] = {alias: connections[alias].Database.__name__ for alias in connections}
    print("SAPOOL-RESULT " + json.dumps(facts, default=str))


if __name__ == "__main__":
    main()
