#!/usr/bin/env python
"""Django's default database backend vs django_sapool, under the same HTTP load.

The same small Django site (demosite/) is served twice by waitress, a
multi-threaded WSGI server, each time in a fresh process: once with Django's
backend (CONN_MAX_AGE=0, so one new database connection per request) and once
with django_sapool's backend (connections come from a SQLAlchemy QueuePool).
A client sends the same concurrent requests to each, then asks each server how
many database connections it opened, and prints both side by side.

    python examples/demo/run.py
    python examples/demo/run.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without --database-url the database is a SQLite file in a temporary directory.
With a PostgreSQL URL (of a user allowed to CREATE DATABASE) the demo creates a
fresh database next to the one named in the URL and drops it at the end.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import secrets
import select
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

DEMO_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEMO_DIR.parent.parent
#: Seconds a server gets to start and announce its port.
STARTUP_TIMEOUT = 60.0
#: Seconds a single HTTP request may take before it counts as failed.
REQUEST_TIMEOUT = 30.0
#: How many distinct failure messages to show.
MAX_ERRORS_SHOWN = 5


class DemoError(Exception):
    """Something went wrong that the user should read about (not a traceback)."""


# -- the database --------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """Where the demo table lives: Django settings without ENGINE, and a safe label."""

    vendor: str  # "sqlite3" or "postgresql": the last part of both ENGINEs
    settings: dict[str, Any]
    label: str  # for display; never contains the password
    #: Sessions the database server has seen so far, counted by the server itself
    #: (PostgreSQL only): a check on the client-side counts that needs no trust.
    server_sessions: Callable[[], int | None] | None = None


@contextmanager
def sqlite_database() -> Iterator[Database]:
    """Yield a SQLite file in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sapool_demo_") as tmp:
        path = Path(tmp) / "demo.sqlite3"
        # WAL lets readers read while a writer writes, as production SQLite
        # setups do. The mode is stored in the file, so setting it once here
        # serves both contenders without a PRAGMA per connection.
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        yield Database("sqlite3", {"NAME": str(path)}, "SQLite file in a temporary directory")


def parse_postgres_url(url: str) -> dict[str, Any]:
    """Turn postgresql://user:pw@host:port/dbname?opt=v into Django's settings keys."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise DemoError(
            f"--database-url must start with postgresql://, got {parts.scheme or '?'}://..."
        )
    try:
        port = parts.port
    except ValueError:
        raise DemoError("--database-url has an invalid port") from None
    return {
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        # Query parameters (sslmode=require, ...) are libpq options.
        "OPTIONS": dict(parse_qsl(parts.query)),
    }


def postgres_connect(settings: dict[str, Any]) -> Any:
    """Open an autocommit connection with psycopg 3, or psycopg2 if that's what is installed."""
    keys = {"NAME": "dbname", "USER": "user", "PASSWORD": "password", "HOST": "host"}
    kwargs = {arg: settings[key] for key, arg in keys.items() if settings[key]}
    if settings["PORT"]:
        kwargs["port"] = int(settings["PORT"])
    kwargs.update(settings["OPTIONS"])
    try:
        import psycopg
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(**kwargs)
        conn.autocommit = True
        return conn
    return psycopg.connect(**kwargs, autocommit=True)


@contextmanager
def postgres_database(url: str) -> Iterator[Database]:
    """Create a fresh database through the URL's server and drop it afterwards."""
    admin = parse_postgres_url(url)
    # Our own name, so it needs no quoting beyond the double quotes below, and a
    # random part, so that two demos at once (or a leftover) never collide.
    name = f"sapool_demo_{secrets.token_hex(4)}"
    try:
        with closing(postgres_connect(admin)) as conn, closing(conn.cursor()) as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    except ImportError:
        raise DemoError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from None
    except Exception as exc:
        # The driver's message names host, port and user, never the password.
        raise DemoError(f"could not create database {name}: {exc}".strip()) from None
    where = f"{admin['USER'] or '(default user)'}@{admin['HOST'] or 'localhost'}"
    if admin["PORT"]:
        where += f":{admin['PORT']}"
    try:
        yield Database(
            "postgresql",
            {**admin, "NAME": name},
            f"PostgreSQL {where}, fresh database {name}",
            lambda: postgres_sessions(admin, name),
        )
    finally:
        drop_postgres_database(admin, name)


def postgres_sessions(admin: dict[str, Any], name: str) -> int | None:
    """Return how many sessions PostgreSQL has opened on `name`, once none is left.

    pg_stat_database.sessions (PostgreSQL 14+) is counted by the server. Waiting
    for the stopped demo server's sessions to end makes sure they are all in it.
    """
    with closing(postgres_connect(admin)) as conn, closing(conn.cursor()) as cursor:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.05)
        try:
            cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,))
        except Exception:  # PostgreSQL < 14 has no such column
            return None
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def drop_postgres_database(admin: dict[str, Any], name: str) -> None:
    """Drop the demo database, first ending any session still using it."""
    with closing(postgres_connect(admin)) as conn, closing(conn.cursor()) as cursor:
        # A server killed mid-request can leave a backend behind for a moment;
        # DROP DATABASE refuses to run while anyone is connected.
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')


def provision(database_url: str | None) -> Any:
    """Return the context manager that creates (and later removes) the demo database."""
    return postgres_database(database_url) if database_url else sqlite_database()


# -- the server ----------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    title: str
    engine: str
    pool_options: dict[str, Any] | None = None  # only for django_sapool

    @property
    def pooled(self) -> bool:
        return self.pool_options is not None


def contenders(db: Database, threads: int) -> list[Contender]:
    return [
        Contender("Django default", f"django.db.backends.{db.vendor}"),
        Contender(
            "django_sapool",
            f"django_sapool.backends.{db.vendor}",
            # A waitress thread holds at most one connection at a time, so one
            # connection per thread is all the pool ever needs to keep.
            {"POOL_SIZE": threads},
        ),
    ]


def database_settings(db: Database, contender: Contender) -> dict[str, Any]:
    settings: dict[str, Any] = {**db.settings, "ENGINE": contender.engine, "CONN_MAX_AGE": 0}
    if contender.pool_options is not None:
        settings["POOL_OPTIONS"] = contender.pool_options
    return settings


def child_env(settings: dict[str, Any]) -> dict[str, str]:
    """Environment for a Django process: its database, and this checkout on the path."""
    # The repository root goes on PYTHONPATH so that the demo also runs from a
    # checkout where django_sapool is not installed.
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    # The settings travel in the environment, not on the command line, where
    # any user could read a password with `ps`.
    return {**os.environ, "DEMO_DATABASE": json.dumps(settings), "PYTHONPATH": python_path}


def create_table(db: Database) -> None:
    """Create the demo's table once, with Django's own migrate command."""
    settings = database_settings(db, Contender("setup", f"django.db.backends.{db.vendor}"))
    command = [sys.executable, str(DEMO_DIR / "manage.py"), "migrate", "--run-syncdb", "-v", "0"]
    if subprocess.run(command, env=child_env(settings)).returncode != 0:
        raise DemoError("creating the demo table failed (see the error above)")


def read_port(proc: subprocess.Popen[str]) -> int:
    """Wait for the server's `PORT <n>` line; fail if it exits or takes too long."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("PORT "):
        raise DemoError("the demo server did not start (see its error above)")
    return int(line.split()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop a server: SIGTERM lets it close its connections; kill it if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextmanager
def running_server(settings: dict[str, Any], threads: int) -> Iterator[int]:
    """Run demosite in a new process (fresh settings and ENGINE); yield its port."""
    proc = subprocess.Popen(
        [sys.executable, str(DEMO_DIR / "server.py"), "--threads", str(threads)],
        env=child_env(settings),
        stdout=subprocess.PIPE,  # only for the port; errors go straight to our stderr
        text=True,
    )
    try:
        yield read_port(proc)
    finally:
        stop(proc)


# -- the client ----------------------------------------------------------------


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


class Tickets:
    """Hands out at most `total` request tickets, until the deadline passes."""

    def __init__(self, total: int, deadline: float) -> None:
        self._lock = threading.Lock()
        self._left = total
        self._deadline = deadline

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0 or time.monotonic() >= self._deadline:
                return False
            self._left -= 1
            return True

    def cancel(self) -> None:
        with self._lock:
            self._left = 0


def client_worker(port: int, tickets: Tickets, result: LoadResult, lock: threading.Lock) -> None:
    """Send requests over one keep-alive HTTP connection, like a browser or a proxy."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    ok = 0
    errors: list[str] = []
    try:
        while tickets.take():
            try:
                conn.request("POST", "/hit/")
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()  # reconnects on the next request
                continue
            if response.status == 200:
                ok += 1
            else:
                errors.append(f"HTTP {response.status}: {body[:200]!r}")
    finally:
        conn.close()
        with lock:
            result.ok += ok
            result.failed += len(errors)
            result.errors.extend(errors)


def run_load(port: int, total: int, concurrency: int, time_limit: float) -> LoadResult:
    """Send `total` requests from `concurrency` threads; stop early at the time limit."""
    result = LoadResult()
    lock = threading.Lock()
    started = time.monotonic()
    tickets = Tickets(total, started + time_limit)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="client")
    try:
        futures = [
            pool.submit(client_worker, port, tickets, result, lock) for _ in range(concurrency)
        ]
        for future in futures:
            future.result()  # re-raises a bug in the client, if any
    finally:
        # On Ctrl-C (or a client bug), let the other threads stop after their
        # current request instead of sending all the remaining ones.
        tickets.cancel()
        pool.shutdown()
    result.seconds = time.monotonic() - started
    return result


def get_stats(port: int) -> dict[str, Any]:
    """Ask the server for its database statistics (GET /stats/)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("GET", "/stats/")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise DemoError(f"GET /stats/ failed ({exc}); did the server die?") from None
    finally:
        conn.close()
    if response.status != 200:
        raise DemoError(f"GET /stats/ answered HTTP {response.status}")
    return json.loads(body)


# -- one run, and the report ---------------------------------------------------


@dataclass
class Outcome:
    contender: Contender
    load: LoadResult
    stats: dict[str, Any]
    server_sessions: int | None = None  # new sessions PostgreSQL saw during the run

    @property
    def connections_opened(self) -> int:
        if self.contender.pooled:
            # connection_created fires on every checkout from the pool; the
            # pool itself counts the connections it really opened.
            return sum(pool["connections_opened"] for pool in self.stats["pools"])
        # Without a pool, each connection_created is a new database connection.
        return int(self.stats["connection_created"])


def run_contender(contender: Contender, db: Database, args: argparse.Namespace) -> Outcome:
    print(f"  {contender.title:<15} ({contender.engine}) ...", end=" ", flush=True)
    sessions_before = db.server_sessions() if db.server_sessions else None
    with running_server(database_settings(db, contender), args.threads) as port:
        get_stats(port)  # warm-up: the first request imports the URLconf and views
        load = run_load(port, args.requests, args.concurrency, args.time_limit)
        stats = get_stats(port)
    print(f"{load.ok + load.failed} requests in {load.seconds:.1f} s", flush=True)
    outcome = Outcome(contender, load, stats)
    if sessions_before is not None and db.server_sessions is not None:
        sessions_after = db.server_sessions()
        if sessions_after is not None:
            outcome.server_sessions = sessions_after - sessions_before
    return outcome


def pool_cell(outcome: Outcome) -> str:
    if not outcome.contender.pooled:
        return "n/a"
    pools = outcome.stats["pools"]
    if not pools:
        return "(no pool)"
    return ", ".join(
        f"{p['size']} / {p['checked_out']} / {p['idle']} / {p['overflow']}" for p in pools
    )


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain aligned text: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "   ".join([first, *rest]).rstrip()

    rule = "-" * (sum(widths) + 3 * (len(widths) - 1))
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def report(outcomes: list[Outcome]) -> str:
    def row(label: str, cell: Callable[[Outcome], object]) -> list[str]:
        return [label, *(str(cell(o)) for o in outcomes)]

    rows = [
        row("requests served", lambda o: o.load.ok),
        row("requests failed", lambda o: o.load.failed),
        row("requests per second", lambda o: f"{o.load.per_second:.0f}"),
        row("database connections opened", lambda o: o.connections_opened),
        # Django "connects" once per request either way (connection_created);
        # with django_sapool that is a checkout, rarely a new connection.
        row("Django connect() calls", lambda o: o.stats["connection_created"]),
        row("pool at end: size / out / idle / overflow", pool_cell),
    ]
    if all(o.server_sessions is not None for o in outcomes):
        # The server's own count, next to ours.
        rows.insert(4, row("new sessions seen by PostgreSQL", lambda o: o.server_sessions))
    header = ["", *(o.contender.title for o in outcomes)]
    return format_table(header, rows)


def summary(default: Outcome, pooled: Outcome) -> str:
    opened, baseline = pooled.connections_opened, default.connections_opened
    return (
        f"django_sapool opened {baseline - opened} fewer database connections "
        f"({opened} instead of {baseline});\n"
        f"requests per second: {pooled.load.per_second:.0f} with django_sapool, "
        f"{default.load.per_second:.0f} with Django's default backend."
    )


def print_errors(outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.load.errors:
            print(f"\n{outcome.contender.title}: {outcome.load.failed} failed requests:")
            counts = Counter(outcome.load.errors).most_common(MAX_ERRORS_SHOWN)
            for error, count in counts:
                print(f"  {count:>6} x {error}")


# -- main ----------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def check_requirements() -> None:
    """Fail early, with the fix, when the server's one extra dependency is missing."""
    if importlib.util.find_spec("waitress") is None:
        raise DemoError(
            "the demo serves Django with waitress, which is not installed: "
            "pip install 'django-sapool[demo]' (or pip install waitress)"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Django's default database backend vs django_sapool, under HTTP load."
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user:password@host:port/dbname of a user allowed to create a "
        "database (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--requests", type=positive_int, default=2000, help="requests per contender (2000)"
    )
    parser.add_argument("--concurrency", type=positive_int, default=32, help="client threads (32)")
    parser.add_argument("--threads", type=positive_int, default=16, help="server threads (16)")
    parser.add_argument(
        "--time-limit",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="stop sending requests to a contender after this long (10)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_requirements()
        with provision(args.database_url) as db:
            print(
                f"django_sapool demo: {args.requests} POST requests per contender from "
                f"{args.concurrency} client threads\nto waitress with {args.threads} threads; "
                f"{db.label}.\n"
            )
            create_table(db)
            outcomes = [run_contender(c, db, args) for c in contenders(db, args.threads)]
    except DemoError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # The `with` blocks above have stopped the server and removed the database.
        print("\ninterrupted", file=sys.stderr)
        return 130
    print()
    print(report(outcomes))
    print()
    print(summary(*outcomes))
    print_errors(outcomes)
    unsent = [o for o in outcomes if o.load.ok + o.load.failed < args.requests]
    for outcome in unsent:
        print(f"note: {outcome.contender.title} reached --time-limit={args.time_limit:g}s.")
    return 1 if any(o.load.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
