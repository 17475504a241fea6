"""The multi-vendor example project, end to end: PostgreSQL, MariaDB/MySQL and SQLite at once.

``examples/multivendor`` routes one app to each alias and gives each alias its own
POOL_OPTIONS. This test creates fresh databases on both servers (dropped at the end,
even on failure), runs the example's own ``manage.py migrate --database=<alias>``
for each alias, and drives the example's WSGI application in a separate Django
process (``examples/multivendor/drive.py``): sequential requests, then concurrent
ones from 8 threads, each touching all three databases. Then it checks

- every request succeeded;
- there is one pool per alias, each with that alias's own options;
- connections opened per alias: 1 while requests come one at a time, at most
  POOL_SIZE + MAX_OVERFLOW under concurrency;
- after the requests no pool has a connection checked out (request_finished
  returned each one to its own pool);
- the rows are where the router sent them, asked of each server directly with its
  own driver (not through Django), and the tables of one alias exist nowhere else.

Servers: SAPOOL_PG_URL and SAPOOL_MYSQL_URL, as the example's settings read them.
Under CI=true an unreachable server fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "multivendor"
PG_URL = os.environ.get("SAPOOL_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_URL = os.environ.get("SAPOOL_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")

SEQUENTIAL = 50
CONCURRENT = 80
THREADS = 8
CUSTOMERS = 5
TOTAL = SEQUENTIAL + CONCURRENT
ALIASES = ("default", "legacy", "local")


def unavailable(reason: str) -> None:
    """Fail under CI (a missing server is a broken run), skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing server fails the run)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Server:
    """Where to connect as an administrator; parsed like the example's settings do."""

    host: str
    port: int
    user: str
    password: str
    admin_db: str

    @classmethod
    def from_url(cls, url: str, port: int, user: str, admin_db: str) -> Server:
        parts = urlsplit(url)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or port,
            user=unquote(parts.username or user),
            password=unquote(parts.password or ""),
            admin_db=parts.path.lstrip("/") or admin_db,
        )


def pg_connect(server: Server, dbname: str | None = None) -> Any:
    import psycopg

    return psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password or None,
        dbname=dbname or server.admin_db,
        autocommit=True,
        connect_timeout=5,
    )


def mysql_connect(server: Server, dbname: str | None = None) -> Any:
    import MySQLdb

    kwargs: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "connect_timeout": 5,
    }
    if dbname:
        kwargs["database"] = dbname
    conn = MySQLdb.connect(**kwargs)
    conn.autocommit(True)
    return conn


@pytest.fixture
def servers() -> tuple[Server, Server]:
    """Both servers, reachable; checked before any database is created."""
    pg = Server.from_url(PG_URL, 5432, "postgres", "postgres")
    mysql = Server.from_url(MYSQL_URL, 3306, "root", "")
    try:
        import MySQLdb
        import psycopg
    except ImportError as exc:
        unavailable(f"a database driver is missing: {exc}")
    try:
        pg_connect(pg).close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {pg.host}:{pg.port} is unreachable: {exc}")
    try:
        mysql_connect(mysql).close()
    except MySQLdb.OperationalError as exc:
        unavailable(f"MySQL/MariaDB at {mysql.host}:{mysql.port} is unreachable: {exc}")
    return pg, mysql


@pytest.fixture
def pg_db(servers: tuple[Server, Server]) -> Iterator[str]:
    """A fresh PostgreSQL database, dropped at the end even if the test failed."""
    pg = servers[0]
    name = f"sapool_mv_{uuid.uuid4().hex[:10]}"
    with pg_connect(pg) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with pg_connect(pg) as conn:
            # A driver process killed by a timeout may leave sessions behind for a
            # moment, and DROP DATABASE refuses to drop a database in use.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def mysql_db(servers: tuple[Server, Server]) -> Iterator[str]:
    """A fresh MySQL/MariaDB database, dropped at the end even if the test failed."""
    mysql = servers[1]
    name = f"sapool_mv_{uuid.uuid4().hex[:10]}"
    conn = mysql_connect(mysql)
    try:
        conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield name
    finally:
        cursor = conn.cursor()
        # Leftover sessions could hold metadata locks that make DROP DATABASE wait.
        cursor.execute(
            "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
            [name],
        )
        for (session_id,) in cursor.fetchall():
            try:
                cursor.execute(f"KILL {int(session_id)}")
            except Exception:  # already gone
                pass
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def run_example(args: list[str], env: dict[str, str], timeout: float) -> str:
    """Run one of the example's scripts in a fresh process; return its stdout."""
    try:
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} timed out after {timeout}s:\n{exc.stderr!s}")
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    # The driver's stderr carries django_sapool's warnings (e.g. a connection
    # never returned): those are failures here, even with exit status 0.
    for warning in ("never returned", "discarded a connection", "ERROR"):
        assert warning not in proc.stderr, proc.stderr[-5000:]
    return proc.stdout


def by_alias(pools_view: dict[str, Any], pid: int) -> dict[str, dict[str, Any]]:
    """Index the /pools/ answer by alias; one pool per alias, all of the driver process."""
    pools: list[dict[str, Any]] = pools_view["pools"]
    assert pools_view["pid"] == pid
    assert sorted(p["alias"] for p in pools) == sorted(ALIASES), pools  # exactly one each
    assert all(p["pid"] == pid for p in pools)
    return {p["alias"]: p for p in pools}


@pytest.mark.postgresql
@pytest.mark.mysql
def test_multivendor_example(
    servers: tuple[Server, Server], pg_db: str, mysql_db: str, tmp_path: Path
) -> None:
    sqlite_path = tmp_path / "local.sqlite3"
    env = {
        **os.environ,
        "SAPOOL_PG_URL": PG_URL,
        "SAPOOL_MYSQL_URL": MYSQL_URL,
        "MULTIVENDOR_PG_NAME": pg_db,
        "MULTIVENDOR_MYSQL_NAME": mysql_db,
        "MULTIVENDOR_SQLITE_PATH": str(sqlite_path),
        # Not setdefault()'s job: an inherited DJANGO_SETTINGS_MODULE would win.
        "DJANGO_SETTINGS_MODULE": "multivendor.settings",
    }

    # 1. The example's own migrations, one alias at a time, as its README says.
    manage = str(EXAMPLE / "manage.py")
    for alias in ALIASES:
        run_example([manage, "migrate", f"--database={alias}", "--no-input"], env, timeout=60)

    # 2. The requests, in a Django process of their own.
    stdout = run_example(
        [
            str(EXAMPLE / "drive.py"),
            f"--sequential={SEQUENTIAL}",
            f"--concurrent={CONCURRENT}",
            f"--threads={THREADS}",
            f"--customers={CUSTOMERS}",
        ],
        env,
        timeout=120,
    )
    lines = [ln for ln in stdout.splitlines() if ln.startswith("MULTIVENDOR-RESULT ")]
    assert lines, stdout[-3000:]
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("MULTIVENDOR-RESULT "))
    configured: dict[str, dict[str, Any]] = report["settings"]
    pid: int = report["pid"]

    # Every request succeeded, and the second phase really ran in parallel.
    assert report["sequential"]["ok"] == SEQUENTIAL, report["sequential"]
    assert report["concurrent"]["ok"] == CONCURRENT, report["concurrent"]
    assert report["concurrent"]["threads_used"] >= 2, report["concurrent"]

    # The router sent each model to its alias (as the view saw it).
    first = report["first_response"]
    assert (first["order"]["database"], first["order"]["vendor"]) == ("default", "postgresql")
    assert (first["customer"]["database"], first["customer"]["vendor"]) == ("legacy", "mysql")
    assert (first["counter"]["database"], first["counter"]["vendor"]) == ("local", "sqlite")

    # One pool per alias with that alias's own options. The example configures
    # a different POOL_SIZE per alias, so a pool shared between aliases, or one
    # built from another alias's settings, can't pass.
    expected_vendor = {"default": "postgresql", "legacy": "mysql", "local": "sqlite"}
    assert len({configured[a]["POOL_OPTIONS"]["POOL_SIZE"] for a in ALIASES}) == len(ALIASES)
    sequential = by_alias(report["pools_after_sequential"], pid)
    concurrent = by_alias(report["pools_after_concurrent"], pid)
    for alias in ALIASES:
        options = configured[alias]["POOL_OPTIONS"]
        for snapshot in (sequential[alias], concurrent[alias]):
            assert snapshot["vendor"] == configured[alias]["vendor"] == expected_vendor[alias]
            assert snapshot["database"] == configured[alias]["NAME"]
            assert snapshot["pool_size"] == options["POOL_SIZE"]
            assert snapshot["max_overflow"] == options["MAX_OVERFLOW"]
            # Every connection went back to its own pool at request_finished.
            assert snapshot["checked_out"] == 0, snapshot
            assert snapshot["connections_invalidated"] == 0, snapshot
            assert snapshot["timeouts"] == 0, snapshot

        # One request at a time: one connection per alias, reused every time.
        seq = sequential[alias]
        assert (seq["connections_opened"], seq["size"], seq["idle"]) == (1, 1, 1), seq

        # Threads: never more than the alias's limit; overflow connections are
        # closed when returned, so at most POOL_SIZE stay open.
        con = concurrent[alias]
        limit = options["POOL_SIZE"] + options["MAX_OVERFLOW"]
        assert 1 <= con["connections_opened"] <= limit, con
        assert con["idle"] == con["size"] <= options["POOL_SIZE"], con
        assert con["overflow"] == 0, con

    # 3. The data, asked of each server directly.
    pg, mysql = servers
    with pg_connect(pg, pg_db) as conn:
        pg_tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        (orders,) = conn.execute("SELECT count(*) FROM shop_order").fetchone()
        pg_per_customer = dict(
            conn.execute(
                "SELECT customer_email, count(*) FROM shop_order GROUP BY customer_email"
            ).fetchall()
        )
    my = mysql_connect(mysql, mysql_db)
    try:
        cursor = my.cursor()
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            [mysql_db],
        )
        mysql_tables = {row[0] for row in cursor.fetchall()}
        cursor.execute("SELECT email, order_count FROM customer")
        mysql_per_customer = {email: int(n) for email, n in cursor.fetchall()}
    finally:
        my.close()
    import sqlite3

    lite = sqlite3.connect(sqlite_path)
    try:
        sqlite_tables = {
            row[0]
            for row in lite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        counter = lite.execute("SELECT value FROM cache_app_counter WHERE name = 'orders'")
        (counter_value,) = counter.fetchone()
    finally:
        lite.close()

    # Each app's tables in its own database only; Django's migration ledger in all.
    assert pg_tables == {"django_migrations", "shop_order"}, pg_tables
    assert mysql_tables == {"django_migrations", "customer"}, mysql_tables
    assert "shop_order" not in mysql_tables  # the router kept orders out of MySQL
    assert sqlite_tables == {"django_migrations", "cache_app_counter"}, sqlite_tables

    succeeded = report["sequential"]["ok"] + report["concurrent"]["ok"]
    assert succeeded == TOTAL
    assert orders == succeeded
    assert sum(mysql_per_customer.values()) == succeeded
    assert len(mysql_per_customer) == CUSTOMERS
    assert counter_value == succeeded
    # The two servers agree order by order: each customer's count in MySQL equals
    # that customer's orders in PostgreSQL (no increment lost under threads).
    assert pg_per_customer == mysql_per_customer
    assert report["orm_counts"] == {
        "orders": succeeded,
        "customers": CUSTOMERS,
        "customer_orders": succeeded,
        "counter": succeeded,
    }

    # Shown with `pytest -s`; the figures the README quotes.
    print(
        "\nmultivendor:",
        json.dumps(
            {
                "requests": {"sequential": SEQUENTIAL, "concurrent": CONCURRENT},
                "seconds": {
                    "sequential": report["sequential"]["seconds"],
                    "concurrent": report["concurrent"]["seconds"],
                },
                "connections_opened": {
                    alias: {
                        "sequential": sequential[alias]["connections_opened"],
                        "after_threads": concurrent[alias]["connections_opened"],
                        "limit": concurrent[alias]["pool_size"] + concurrent[alias]["max_overflow"],
                    }
                    for alias in ALIASES
                },
                "rows": {
                    "orders": orders,
                    "customers": mysql_per_customer,
                    "counter": counter_value,
                },
            }
        ),
    )
