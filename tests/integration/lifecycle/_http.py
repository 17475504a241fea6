"""Shared helpers for the real-server lifecycle tests: HTTP load, gunicorn, server sessions.

- ``load()`` sends a bounded number of GET requests with a bounded number of threads
  (http.client, one TCP connection per request, so that a multi-process server spreads
  them over its workers) and never runs longer than its deadline.
- ``Gunicorn`` starts a real gunicorn on a free 127.0.0.1 port in its own process group
  and always kills that group on exit, whatever the test did.
- ``PgSessions`` / ``MySQLSessions`` read our sessions from the database server itself
  (pg_stat_activity by application_name, information_schema.processlist by db),
  ``Sampler`` records the peak while a load runs, and ``socket_holders`` maps a
  session to the processes holding its client socket (/proc).
- ``open_site`` builds a lifesite on a fresh database through the shared fixtures;
  ``terminate_cleanly`` is the TERM check every gunicorn test ends with.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..conftest import ROOT, MySQLServer, PgServer

HOST = "127.0.0.1"
EXAMPLE_CONF = ROOT / "examples" / "gunicorn.conf.py"
WSGI_APP = "tests.integration.lifecycle.lifesite.wsgi:application"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (gunicorn binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- HTTP --------------------------------------------------------------------


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One GET on a fresh connection; return (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_json(port: int, path: str, timeout: float = 10.0) -> Any:
    status, body = get(port, path, timeout)
    if status != 200:
        raise AssertionError(f"GET {path} -> {status}: {body[:500]!r}")
    return json.loads(body)


@dataclass
class LoadResult:
    """What a load run saw: one entry per request that completed, plus the errors."""

    requested: int
    statuses: list[int] = field(default_factory=list)
    payloads: list[Any] = field(default_factory=list)  # JSON bodies of the 200s
    errors: list[str] = field(default_factory=list)  # exceptions and non-200 bodies
    elapsed: float = 0.0

    @property
    def all_ok(self) -> bool:
        return len(self.statuses) == self.requested and set(self.statuses) == {200}

    def summary(self) -> str:
        counts = {s: self.statuses.count(s) for s in sorted(set(self.statuses))}
        return (
            f"{len(self.statuses)}/{self.requested} answered in {self.elapsed:.2f}s, "
            f"statuses {counts}, {len(self.errors)} errors {self.errors[:3]}"
        )


def load(
    port: int,
    path: str,
    total: int,
    concurrency: int,
    deadline: float = 30.0,
    timeout: float = 15.0,
) -> LoadResult:
    """Send ``total`` GETs with ``concurrency`` threads; stop taking new ones at ``deadline``.

    Each thread takes the next request number from a shared counter, so the
    concurrency stays at ``concurrency`` until the tail. Nothing is retried: a failed
    request is an error the caller asserts on.
    """
    result = LoadResult(requested=total)
    lock = threading.Lock()
    taken = 0
    start = time.monotonic()
    stop_at = start + deadline

    def worker() -> None:
        nonlocal taken
        while True:
            with lock:
                if taken >= total or time.monotonic() > stop_at:
                    return
                taken += 1
            try:
                status, body = get(port, path, timeout)
            except Exception as exc:  # a refused/reset connection is a result too
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                result.statuses.append(status)
                if status == 200:
                    result.payloads.append(json.loads(body))
                else:
                    result.errors.append(f"{status}: {body[:300]!r}")

    threads = [
        threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        # A request never outlives its socket timeout, so this join is bounded.
        t.join(max(0.0, stop_at - time.monotonic()) + timeout + 1)
    result.elapsed = time.monotonic() - start
    return result


# -- server sessions ---------------------------------------------------------


@dataclass(frozen=True)
class Session:
    id: int  # pg_backend_pid() / CONNECTION_ID(): what the views report
    client_port: int  # our side of the TCP connection


class Sessions(Protocol):
    """Our sessions as the database server sees them."""

    vendor: str

    def current(self) -> list[Session]: ...

    def close(self) -> None: ...


class PgSessions:
    """PostgreSQL sessions tagged with our application_name."""

    vendor = "postgresql"

    def __init__(self, pg: PgServer, tag: str, dbname: str) -> None:
        import psycopg

        self.tag = tag
        self.dbname = dbname
        self._conn = psycopg.connect(pg.conninfo(pg.admin_db), autocommit=True)

    def current(self) -> list[Session]:
        rows = self._conn.execute(
            "SELECT pid, client_port FROM pg_stat_activity WHERE application_name = %s",
            [self.tag],
        ).fetchall()
        return [Session(int(pid), int(port or -1)) for pid, port in rows]

    def abandoned(self) -> int:
        """Sessions of our database that ended because the client vanished (PG >= 14).

        A client that closes properly sends a Terminate message first; a process that
        just exits (no dispose) leaves the server to find an EOF: "abandoned".
        """
        self._conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self._conn.execute(
            "SELECT sessions_abandoned FROM pg_stat_database WHERE datname = %s",
            [self.dbname],
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._conn.close()


class MySQLSessions:
    """MySQL/MariaDB sessions whose current database is our (fresh) database."""

    vendor = "mysql"

    def __init__(self, mysql: MySQLServer, dbname: str) -> None:
        import MySQLdb

        self.dbname = dbname
        self._conn = MySQLdb.connect(**mysql.conninfo())  # no default db: not counted
        self._conn.autocommit(True)

    def current(self) -> list[Session]:
        cursor = self._conn.cursor()
        cursor.execute(
            "SELECT ID, HOST FROM information_schema.PROCESSLIST WHERE DB = %s",
            [self.dbname],
        )
        rows = cursor.fetchall()
        cursor.close()
        # HOST is "127.0.0.1:port" for TCP clients (our HOST is 127.0.0.1).
        return [Session(int(i), int(h.rpartition(":")[2] or -1)) for i, h in rows]

    def close(self) -> None:
        self._conn.close()


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll until predicate() is true; False if it still isn't after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


class Sampler:
    """Count our server sessions in a background thread; keep the peak.

    It uses its own admin connection (``make``), so sampling never competes
    with the test thread's probe.
    """

    def __init__(self, make: Callable[[], Sessions], interval: float = 0.01) -> None:
        self._make = make
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.peak = 0
        self.samples = 0
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            probe = self._make()
            try:
                while not self._stop.is_set():
                    self.peak = max(self.peak, len(probe.current()))
                    self.samples += 1
                    self._stop.wait(self._interval)
            finally:
                probe.close()
        except BaseException as exc:  # reported by stop(), not lost in a thread
            self.error = exc

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error


# -- processes ---------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of pid (gunicorn workers of a master), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def socket_holders(local_port: int, pids: Sequence[int]) -> set[int]:
    """Which of pids hold an open TCP socket whose local port is local_port.

    Maps a server session (by its client port) to the process that owns it: the
    socket's inode from /proc/net/tcp, then the processes with that inode among
    their file descriptors. A forked child whose copy was disarmed (dup2'ed to
    /dev/null) no longer holds it.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[1].rpartition(":")[2], 16) == local_port:
                inodes.add(f"socket:[{cols[9]}]")
    holders: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    holders.add(pid)
                    break
            except OSError:
                continue
    return holders


class Gunicorn:
    """A real gunicorn master on a free port; ``with`` guarantees it is gone afterwards.

    Output goes to a file (a pipe nobody reads could fill up and stall the master);
    ``log()`` returns it for assertion messages.
    """

    def __init__(
        self,
        env: dict[str, str],
        args: Sequence[str],
        log_path: Path,
        app: str = WSGI_APP,
        conf: Path = EXAMPLE_CONF,
    ) -> None:
        self.port = free_port()
        self.env = env
        self.log_path = log_path
        self.argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(conf),
            "--bind",
            f"{HOST}:{self.port}",
            # Short graceful timeout: TERM/HUP never wait long on a stuck request.
            "--graceful-timeout",
            "5",
            # gunicorn >= 24 opens a control socket at a fixed path in $HOME; two
            # masters (parallel test runs) would fight over it, and no test uses it.
            "--no-control-socket",
            *args,
            app,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[int]:
        return children(self.pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def start(self, workers: int, timeout: float = 20.0) -> None:
        """Start, then wait until ``workers`` workers run and the port answers."""
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            if len(self.workers()) < workers or "Booting worker" not in self.log():
                return False
            try:
                # /stats doesn't touch the database: the server sees no session from it.
                return get(self.port, "/stats", timeout=2)[0] == 200
            except OSError:
                return False

        if not wait_for(ready, timeout, interval=0.1):
            raise AssertionError(f"gunicorn did not become ready in {timeout}s:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM the master and wait for it (and so its workers) to exit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Kill the whole process group (master and workers) if anything is left."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def conf_with_urls_in_master(directory: Path) -> Path:
    """examples/gunicorn.conf.py plus a master hook that imports the site's URLconf.

    With ``--preload`` gunicorn runs django.setup() in the master, but Django imports
    the URLconf (and with it the views module, whose SAPOOL_SITE_QUERY_AT_IMPORT query
    we want in the master) only at the first request, i.e. in a worker. A site whose
    urls/views query at import time and that warms its URLconf up before forking
    (or queries in AppConfig.ready()) leaves a session in the master; this hook
    does that, just before the workers are forked.
    """
    conf = directory / "gunicorn_preload.conf.py"
    conf.write_text(
        f"""
exec(compile(open({str(EXAMPLE_CONF)!r}).read(), {str(EXAMPLE_CONF)!r}, "exec"))


def when_ready(server):
    from django.urls import get_resolver

    get_resolver().url_patterns  # imports the views module: its query runs here
"""
    )
    return conf


def worker_stats(server: Gunicorn, workers: int, attempts: int = 100) -> dict[int, dict[str, Any]]:
    """/stats of every worker, once each has answered and has nothing checked out.

    A worker returns a request's connection in request_finished, which Django sends
    when the server closes the response, i.e. after the client may already have read
    it: right after a load, a /stats can still see that connection out. So ask again
    (bounded) until every worker has answered with checked_out == 0 everywhere.
    """
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(attempts):
        data = get_json(server.port, "/stats")
        seen[int(data["worker"])] = data
        if len(seen) >= workers and all(
            pool["checked_out"] == 0 for d in seen.values() for pool in d["pools"]
        ):
            break
        time.sleep(0.01)
    return seen


def by_worker(payloads: Iterable[Any]) -> dict[int, set[int]]:
    """Session ids per worker pid, from /pid responses."""
    out: dict[int, set[int]] = {}
    for p in payloads:
        out.setdefault(int(p["worker"]), set()).add(int(p["session"]))
    return out


# -- a lifesite on a fresh database, with a probe of its server sessions -----------


@dataclass
class Site:
    """Settings env for the lifesite plus a way to see its sessions on the server."""

    vendor: str
    env: dict[str, str]
    new_probe: Callable[[], Sessions]  # a fresh admin connection (for a Sampler)
    probe: Sessions  # the test thread's own

    def ids(self) -> set[int]:
        return {s.id for s in self.probe.current()}

    def count(self) -> int:
        return len(self.probe.current())

    def abandoned(self) -> int | None:
        """PostgreSQL only: sessions that ended without the client's goodbye."""
        return self.probe.abandoned() if isinstance(self.probe, PgSessions) else None


def open_site(request: Any, vendor: str, engine: str | None = None, **db: Any) -> Site:
    """A lifesite on a fresh database of ``vendor`` ("postgresql" or "mysql").

    Uses the shared pg_site / mysql_site fixtures through request.getfixturevalue, so a
    missing MySQL server skips (or, under CI, fails) only the MySQL variants.
    """
    if vendor == "postgresql":
        pg: PgServer = request.getfixturevalue("pg")
        env = request.getfixturevalue("pg_site")(
            engine=engine or "django_sapool.backends.postgresql", **db
        )
        tag, name = env["SAPOOL_SITE_TAG"], env["SAPOOL_SITE_DBNAME"]

        def new_probe() -> Sessions:
            return PgSessions(pg, tag, name)

    elif vendor == "mysql":
        mysql: MySQLServer = request.getfixturevalue("mysql")
        env = request.getfixturevalue("mysql_site")(
            engine=engine or "django_sapool.backends.mysql", **db
        )
        name = env["SAPOOL_SITE_DBNAME"]

        def new_probe() -> Sessions:
            return MySQLSessions(mysql, name)

    else:  # pragma: no cover
        raise ValueError(vendor)
    probe = new_probe()
    request.addfinalizer(probe.close)
    return Site(vendor, env, new_probe, probe)


def terminate_cleanly(server: Gunicorn, site: Site, abandoned_before: int | None) -> None:
    """TERM the master; then the server must see none of our sessions (scenario 5).

    Sessions vanish anyway once the processes are gone (the kernel closes their
    sockets), so on PostgreSQL we also check that each was closed with a goodbye
    (the example's worker_exit/on_exit close the pools explicitly): pg_stat_database
    counts a session whose client just disappeared as "abandoned". The drivers'
    destructors at interpreter exit are clean too, so this guards against
    regressions (a hook that raises, a hard exit) rather than proving the hooks run;
    their exceptions would show in the log, checked last.
    """
    started = time.monotonic()
    assert server.terminate(timeout=15) == 0, server.log()
    exited = time.monotonic() - started
    assert wait_for(lambda: site.count() == 0, timeout=5), (
        f"sessions left {exited:.1f}s after gunicorn exited: {site.probe.current()}"
    )
    if abandoned_before is not None:
        # The disconnect statistics are flushed as each backend exits.
        assert site.abandoned() == abandoned_before, "a session ended without a goodbye"
    assert "Exception during worker exit" not in server.log(), server.log()
