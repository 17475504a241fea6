"""Helpers for the lifecycle tests: server processes, HTTP load, server-side session counts.

Everything here observes from the outside: the HTTP client knows nothing about
Django, and connection counts come from the database server itself
(``pg_stat_activity`` / ``information_schema.processlist``), never from the pool's
own bookkeeping, so a leak or an over-large pool cannot hide behind a wrong counter.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT, MySQLServer, PgServer

#: Pool limits shared by the scenarios: small enough that 50 concurrent clients
#: must queue, with a TIMEOUT far above any test's duration (nobody may time out).
POOL_OPTIONS: dict[str, Any] = {"POOL_SIZE": 4, "MAX_OVERFLOW": 0, "TIMEOUT": 60}
CAP = POOL_OPTIONS["POOL_SIZE"] + POOL_OPTIONS["MAX_OVERFLOW"]

VENDORS = ["postgresql", "mysql"]
OURS = {"postgresql": "django_sapool.backends.postgresql", "mysql": "django_sapool.backends.mysql"}
DJANGOS = {"postgresql": "django.db.backends.postgresql", "mysql": "django.db.backends.mysql"}

_URL = re.compile(rb"http://127\.0\.0\.1:(\d+)")


# -- the database server's view ---------------------------------------------------


class Observer:
    """Counts and lists one site's sessions as the database server sees them."""

    def __init__(self, vendor: str, server: PgServer | MySQLServer, env: dict[str, str]) -> None:
        self.vendor = vendor
        self.dbname = env["SAPOOL_SITE_DBNAME"]
        self._server = server
        self._lock = threading.Lock()  # the sampler thread and the test share one session
        if vendor == "postgresql":
            import psycopg

            assert isinstance(server, PgServer)
            # The admin database, so this session is never one of the site's.
            self._conn: Any = psycopg.connect(server.conninfo(server.admin_db), autocommit=True)
            self._where = "FROM pg_stat_activity WHERE application_name = %s"
            self._param: str = env["SAPOOL_SITE_TAG"]
            self._id = "pid"
        else:
            import MySQLdb

            assert isinstance(server, MySQLServer)
            # No default database: this session's processlist db is NULL, never ours.
            self._conn = MySQLdb.connect(**server.conninfo())
            self._conn.autocommit(True)
            self._where = "FROM information_schema.processlist WHERE db = %s"
            self._param = self.dbname
            self._id = "id"

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self._conn.cursor()
            try:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()

    def count(self) -> int:
        return int(self._rows(f"SELECT count(*) {self._where}", [self._param])[0][0])

    def ids(self) -> set[int]:
        return {int(r[0]) for r in self._rows(f"SELECT {self._id} {self._where}", [self._param])}

    def items(self, name: str) -> int:
        """Committed rows of the lifesite table with this name, seen from another session."""
        if self.vendor == "postgresql":
            import psycopg

            assert isinstance(self._server, PgServer)
            # PostgreSQL can't query another database: a short session in the site's.
            with psycopg.connect(self._server.conninfo(self.dbname), autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM lifesite_item WHERE name = %s", [name])
                return int(row.fetchone()[0])  # type: ignore[index]
        sql = f"SELECT count(*) FROM `{self.dbname}`.lifesite_item WHERE name = %s"
        return int(self._rows(sql, [name])[0][0])

    def wait_until(self, predicate: Callable[[int], bool], timeout: float) -> int:
        """Poll count() until predicate(count) holds or timeout passes; return the count."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count()
            if predicate(n) or time.monotonic() > deadline:
                return n
            time.sleep(0.05)

    def close(self) -> None:
        self._conn.close()


@dataclass
class Sampler:
    """Samples Observer.count() in a thread while load runs; keeps the peak."""

    observer: Observer
    interval: float = 0.01
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        def run() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.observer.count())
                self.samples += 1
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="session-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@dataclass(frozen=True)
class Site:
    """One vendor's lifesite factory plus how to watch its sessions."""

    vendor: str
    server: PgServer | MySQLServer
    make: Callable[..., dict[str, str]]

    def ours(self, **db: Any) -> dict[str, str]:
        return self.make(engine=OURS[self.vendor], POOL_OPTIONS=POOL_OPTIONS, **db)

    def djangos(self, **db: Any) -> dict[str, str]:
        """Django's own backend, CONN_MAX_AGE=0: a new server connection per request."""
        return self.make(engine=DJANGOS[self.vendor], CONN_MAX_AGE=0, **db)

    @contextmanager
    def observer(self, env: dict[str, str]) -> Iterator[Observer]:
        obs = Observer(self.vendor, self.server, env)
        try:
            yield obs
        finally:
            obs.close()


def site_for(request: pytest.FixtureRequest) -> Site:
    """Build the Site for request.param ("postgresql" or "mysql") from the shared fixtures."""
    vendor: str = request.param
    if vendor == "postgresql":
        return Site(vendor, request.getfixturevalue("pg"), request.getfixturevalue("pg_site"))
    return Site(vendor, request.getfixturevalue("mysql"), request.getfixturevalue("mysql_site"))


# -- processes ---------------------------------------------------------------------


@dataclass
class Proc:
    """A process we started, with its output in files (a full pipe can't block it)."""

    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return (self.out.read_bytes() + b"\n" + self.err.read_bytes()).decode(errors="replace")

    def port(self, timeout: float = 30) -> int:
        """The port the server printed it listens on (they are started with port 0)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _URL.search(self.out.read_bytes() + self.err.read_bytes())
            if match:
                return int(match.group(1))
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"server did not start (exit {self.popen.poll()}):\n{self.output()}")


@contextmanager
def started(
    argv: list[str], env: dict[str, str], tmp: Path, name: str, stop: int = signal.SIGTERM
) -> Iterator[Proc]:
    """Start argv in its own session; always stop it (stop signal, then SIGKILL) on exit.

    Its own session (process group) lets us reach the children it forks (Celery's
    prefork workers) by this one id, and only them.
    """
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with out.open("wb") as fout, err.open("wb") as ferr:
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=fout,
            stderr=ferr,
            start_new_session=True,
        )
    proc = Proc(popen, out, err)
    try:
        yield proc
    finally:
        stop_group(proc, stop)


def stop_group(proc: Proc, sig: int = signal.SIGTERM, grace: float = 10) -> int | None:
    """Signal the process, wait up to grace seconds, then SIGKILL its process group."""
    popen = proc.popen
    if popen.poll() is None:
        popen.send_signal(sig)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(popen.pid, signal.SIGKILL)  # leftovers of the group we created
    except ProcessLookupError:
        pass
    if popen.poll() is None:
        popen.wait(5)
    return popen.returncode


# -- HTTP ------------------------------------------------------------------------


def get(port: int, path: str, timeout: float = 60) -> tuple[int, Any]:
    """One GET on a fresh TCP connection (Connection: close): one server thread each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body.decode(errors="replace")
    finally:
        conn.close()


def wait_ready(proc: Proc, path: str = "/stats", timeout: float = 30) -> int:
    """Wait until the server answers path with 200; return its port."""
    port = proc.port(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = get(port, path, timeout=5)
            if status == 200:
                return port
        except OSError:
            pass
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server not ready on port {port}:\n{proc.output()}")
        time.sleep(0.05)


@dataclass
class LoadResult:
    statuses: dict[int, int]
    bodies: list[Any]
    seconds: float

    def sessions(self) -> set[int]:
        return {b["session"] for b in self.bodies if isinstance(b, dict) and "session" in b}


def hammer(port: int, paths: Sequence[str], total: int, concurrency: int) -> LoadResult:
    """GET paths round-robin, total requests from `concurrency` client threads."""
    started_at = time.monotonic()

    def one(i: int) -> tuple[int, Any]:
        try:
            return get(port, paths[i % len(paths)])
        except OSError as exc:  # counted as status 0, shown in the assertion
            return 0, repr(exc)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="client") as pool:
        results = list(pool.map(one, range(total)))
    statuses: dict[int, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return LoadResult(statuses, [b for _, b in results], time.monotonic() - started_at)


def pool_stats(port: int) -> dict[str, Any]:
    """The server process's single pool status (our backend, one alias)."""
    status, body = get(port, "/stats")
    assert status == 200, body
    pools = body["pools"]
    assert len(pools) == 1, pools
    stats: dict[str, Any] = pools[0]
    return stats


def sapool_warnings(text: str) -> list[str]:
    """django_sapool's warnings in a process's output (an abandoned connection, a discard).

    The lifesite logs them as bare messages; Celery prefixes its children's
    redirected output, hence "in", not "startswith".
    """
    return [ln for ln in text.splitlines() if "django_sapool:" in ln]


def brief(stats: dict[str, Any] | None) -> str:
    """The pool status fields the lifecycle tests talk about, on one line."""
    if stats is None:
        return "-"
    keys = ("size", "checked_out", "idle", "connections_opened", "pings", "timeouts")
    return " ".join(f"{k}={stats[k]}" for k in keys)
