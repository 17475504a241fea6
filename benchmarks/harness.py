"""HTTP benchmark: a real Django site under gunicorn, loaded by wrk, one contender at a time.

Run it through ``./scripts/bench`` (which makes the venv and installs wrk/pgbouncer);
``scripts/bench --help`` lists the options. What it does:

* makes a database ``sapool_bench`` on the system PostgreSQL and MariaDB, and on a
  PostgreSQL 15 cluster of its own with TLS (``ssl=on``, self-signed certificate,
  ``hostssl`` only) on port 5499; starts a PgBouncer of its own (transaction pooling,
  ``scripts/ensure-pgbouncer`` on port 6439). ``BENCH_PG_URL=own`` puts the plain
  PostgreSQL target on a cluster of its own too (port 5498), for machines whose
  system server does not preload pg_stat_statements;
* for each round, each target (pg, mariadb, pg-tls) and each gunicorn worker type,
  runs every contender once, in an order rotated from round to round: start gunicorn
  with that contender's ``DATABASES``, warm up every view, then measure each view with
  ``wrk --latency`` while reading the server's counters before and after;
* the /io comparison (issue 15) is one more worker type, ``gthread-io`` (2 workers x
  16 threads, every pool capped at 4 connections per worker), with its own view
  (``/io``: query, 50 ms sleep, query) and contenders (those above plus
  ``sapool-txn`` and ``pg-real-pool``); during each of its runs the observer also
  samples the server sessions of the bench database every 0.1 s (peak and mean);
* writes ``results.json``, ``RESULTS.md``, ``results.png`` (``benchmarks/report.py``)
  and, after a complete default run, the headline table in README.md;
* stops everything it started and drops its databases (also on Ctrl-C / TERM; and
  ``--cleanup`` does it after a crash).

Counters (per measured run, deltas between the two snapshots):

* PostgreSQL: ``pg_stat_database.sessions`` of the bench database (sessions opened)
  and ``sum(calls)`` of ``pg_stat_statements`` for it (track_utility on: SET, BEGIN,
  COMMIT, ROLLBACK, DISCARD count). The observer connects to another database
  (``postgres``), so its own queries are not in either number.
* MariaDB: global status ``Connections`` and ``Questions + Com_admin_commands``
  (Questions counts every client command but COM_PING; a ping is counted by
  Com_admin_commands), minus the observer's own ``SHOW GLOBAL STATUS``. Global:
  other clients of the server add to them; the harness measures that background
  right after each run (``background_per_s``) and the report flags it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SITE = BENCH / "site"
RESULTS = BENCH / "results"
WORK = Path(os.environ.get("BENCH_WORKDIR", "/tmp/sapool-bench"))
DBNAME = "sapool_bench"
HTTP_PORT = int(os.environ.get("BENCH_HTTP_PORT", "8765"))
TLS_PORT = int(os.environ.get("BENCH_TLS_PORT", "5499"))
PGBOUNCER_PORT = int(os.environ.get("BENCH_PGBOUNCER_PORT", "6439"))
#: "own": the pg target runs on a plain cluster of our own (OwnCluster) on OWN_PG_PORT.
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
OWN_PG_PORT = int(os.environ.get("BENCH_OWN_PG_PORT", "5498"))
#: "own": the mariadb target runs on a MariaDB server of our own (OwnMariaDB).
MYSQL_URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
OWN_MYSQL_PORT = int(os.environ.get("BENCH_OWN_MYSQL_PORT", "3399"))

sys.path.insert(0, str(SITE))
from benchsite.contenders import (  # noqa: E402
    BASE_CONTENDERS,
    CONTENDERS,
    IO_CONTENDERS,
    MAX_OVERFLOW,
    POOL_SIZE,
    database,
    server_cap,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- what is measured ------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    name: str
    workers: int
    threads: int
    #: wrk connections: twice the server's capacity, so no worker thread ever idles.
    connections: int
    #: gunicorn's --worker-class (the name, unless it is a variant of one).
    kind: str = ""
    #: Every pool capped at this many connections per worker process (fewer than its
    #: threads), the same for all pooled contenders; None: the usual sizes.
    pool_cap: int | None = None
    #: The views measured with this worker type (None: all but the /io comparison's).
    views: tuple[str, ...] | None = None

    @property
    def worker_class(self) -> str:
        return self.kind or self.name


#: The /io comparison's pool size per worker process (issue 15: more threads than
#: POOL_SIZE).
IO_POOL_CAP = 4
WORKERS = {
    "sync": Worker("sync", workers=2, threads=1, connections=4),
    "gthread": Worker("gthread", workers=2, threads=4, connections=16),
    # Issue 15: 2 x 16 threads, each worker's sharing IO_POOL_CAP connections;
    # wrk -c64, 32 per worker (--worker-connections). With one worker of 32
    # threads, the GIL made it a one-core CPU benchmark on a slower machine
    # (~500 requests/s, below the sleep's ~600 ceiling), not one of lending.
    "gthread-io": Worker(
        "gthread-io",
        workers=2,
        threads=16,
        connections=64,
        kind="gthread",
        pool_cap=IO_POOL_CAP,
        views=("io",),
    ),
}
#: The views of the sync and gthread runs; "io" only runs with gthread-io.
BASE_VIEWS = ("one", "ten", "write")
VIEWS = (*BASE_VIEWS, "io")
#: Views during which the observer samples the bench database's server sessions.
SAMPLED_VIEWS = ("io",)
#: Seconds between two samples of the server sessions.
SAMPLE_INTERVAL = 0.1


@dataclass(frozen=True)
class Target:
    name: str
    vendor: str
    title: str
    contenders: tuple[str, ...]
    workers: tuple[str, ...]
    views: tuple[str, ...]
    notes: tuple[str, ...] = ()
    #: The contenders of the workers with a pool_cap (the /io comparison).
    io_contenders: tuple[str, ...] = ()

    def group(self, worker: Worker) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(contenders, views) of this target with that worker type."""
        contenders = self.io_contenders if worker.pool_cap is not None else self.contenders
        allowed = worker.views if worker.views is not None else BASE_VIEWS
        return contenders, tuple(v for v in self.views if v in allowed)


PG_CONTENDERS = BASE_CONTENDERS
MYSQL_CONTENDERS = tuple(c for c in BASE_CONTENDERS if c not in ("django-pool", "pgbouncer"))
PG_IO_CONTENDERS = IO_CONTENDERS
MYSQL_IO_CONTENDERS = tuple(
    c for c in IO_CONTENDERS if c not in ("django-pool", "pgbouncer", "pg-real-pool")
)
TARGETS = {
    "pg": Target(
        "pg",
        "postgresql",
        "PostgreSQL",
        PG_CONTENDERS,
        ("sync", "gthread", "gthread-io"),
        VIEWS,
        io_contenders=PG_IO_CONTENDERS,
    ),
    "mariadb": Target(
        "mariadb",
        "mysql",
        "MariaDB",
        MYSQL_CONTENDERS,
        ("sync", "gthread", "gthread-io"),
        VIEWS,
        io_contenders=MYSQL_IO_CONTENDERS,
    ),
    "pg-tls": Target(
        "pg-tls",
        "postgresql",
        "PostgreSQL over TLS (sslmode=require)",
        tuple(c for c in PG_CONTENDERS if c != "pgbouncer"),
        ("sync",),
        ("one",),
        notes=(
            "pgbouncer is skipped over TLS: it would need TLS on both of its sides "
            "(client_tls_*, server_tls_*), a different setup from the plain-TCP one",
        ),
    ),
}


@dataclass(frozen=True)
class Filters:
    """``--only key=a,b`` filters: OR within a key, AND across keys."""

    wanted: dict[str, frozenset[str]] = field(default_factory=dict)

    KEYS = ("target", "worker", "view", "contender")

    @classmethod
    def parse(cls, items: list[str]) -> Filters:
        wanted: dict[str, set[str]] = {}
        for item in items:
            key, sep, values = item.partition("=")
            if not sep or key not in cls.KEYS or not values:
                raise SystemExit(f"--only {item!r}: expected KEY=V1,V2 with KEY in {cls.KEYS}")
            wanted.setdefault(key, set()).update(v for v in values.split(",") if v)
        known = {
            "target": set(TARGETS),
            "worker": set(WORKERS),
            "view": set(VIEWS),
            "contender": set(CONTENDERS),
        }
        for key, values in wanted.items():
            unknown = values - known[key]
            if unknown:
                raise SystemExit(
                    f"--only {key}: unknown {sorted(unknown)}; known {sorted(known[key])}"
                )
        return cls({k: frozenset(v) for k, v in wanted.items()})

    def ok(self, key: str, value: str) -> bool:
        return key not in self.wanted or value in self.wanted[key]


# -- servers and their counters --------------------------------------------------------


@dataclass(frozen=True)
class Conn:
    host: str
    port: int
    user: str
    password: str


def parse_url(url: str, default_port: int, default_user: str) -> Conn:
    u = urlsplit(url)
    return Conn(
        u.hostname or "127.0.0.1",
        u.port or default_port,
        unquote(u.username or default_user),
        unquote(u.password or ""),
    )


class PgServer:
    """A PostgreSQL server we make the bench database on, and read counters from."""

    def __init__(self, conn: Conn, sslmode: str = "") -> None:
        import psycopg

        self.conn, self.sslmode = conn, sslmode
        kwargs: dict[str, Any] = {"sslmode": sslmode} if sslmode else {}
        # The observer: in the `postgres` database, so nothing it runs is counted
        # in the bench database's sessions or statements.
        self.db = psycopg.connect(
            host=conn.host,
            port=conn.port,
            user=conn.user,
            password=conn.password or None,
            dbname="postgres",
            autocommit=True,
            application_name="sapool-bench-observer",
            **kwargs,
        )
        self.version = self.scalar("SHOW server_version")
        self.ssl = bool(self.scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
        self.statements_error = ""
        try:
            self.db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.scalar("SELECT count(*) FROM pg_stat_statements")
            self.track_utility = self.scalar("SHOW pg_stat_statements.track_utility")
        except Exception as exc:  # counted as n/a, said in the report
            self.statements_error = f"pg_stat_statements unusable: {str(exc).strip()}"
            self.track_utility = "n/a"
            log(f"WARNING {conn.host}:{conn.port}: {self.statements_error}")

    def scalar(self, sql: str, params: Any = None) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    def create_database(self) -> None:
        self.drop_database()
        self.db.execute(f'CREATE DATABASE "{DBNAME}"')

    def drop_database(self) -> None:
        self.db.execute(f'DROP DATABASE IF EXISTS "{DBNAME}" WITH (FORCE)')

    def snapshot(self) -> dict[str, int | None]:
        sessions = self.scalar("SELECT sessions FROM pg_stat_database WHERE datname = %s", [DBNAME])
        statements = dealloc = None
        if not self.statements_error:
            row = self.db.execute(
                "SELECT (SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s "
                "        JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s),"
                "       (SELECT dealloc FROM pg_stat_statements_info)",
                [DBNAME],
            ).fetchone()
            assert row is not None
            statements, dealloc = int(row[0]), int(row[1])
        return {"connections": int(sessions or 0), "statements": statements, "dealloc": dealloc}

    def sessions(self) -> int:
        """Server sessions connected to the bench database right now (PgBouncer's included)."""
        return int(
            self.scalar(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND backend_type = 'client backend'",
                [DBNAME],
            )
        )

    def site_env(self) -> dict[str, str]:
        env = {
            "BENCH_DB_HOST": self.conn.host,
            "BENCH_DB_PORT": str(self.conn.port),
            "BENCH_DB_USER": self.conn.user,
            "BENCH_DB_PASSWORD": self.conn.password,
        }
        if self.sslmode:
            env["BENCH_SSLMODE"] = self.sslmode
        return env

    def close(self) -> None:
        self.db.close()


class MysqlServer:
    """The MariaDB/MySQL server: bench database and global status counters."""

    STATUS = (
        "SHOW GLOBAL STATUS WHERE Variable_name IN "
        "('Questions', 'Com_admin_commands', 'Connections')"
    )

    def __init__(self, conn: Conn) -> None:
        import MySQLdb

        self.conn = conn
        self.db = MySQLdb.connect(
            host=conn.host, port=conn.port, user=conn.user, passwd=conn.password
        )
        self.db.autocommit(True)
        self.version = self.scalar("SELECT version()")
        self.statements_error = ""
        # What one snapshot adds to the counters itself (its SHOW is a Question):
        # the least of a few back-to-back differences (others' traffic only adds).
        deltas = []
        for _ in range(5):
            a = self._raw()
            b = self._raw()
            deltas.append(b["statements"] - a["statements"])
        self.own = min(deltas)

    def scalar(self, sql: str) -> Any:
        cursor = self.db.cursor()
        try:
            cursor.execute(sql)
            return cursor.fetchone()[0]
        finally:
            cursor.close()

    def _raw(self) -> dict[str, int]:
        cursor = self.db.cursor()
        try:
            cursor.execute(self.STATUS)
            status = {name.lower(): int(value) for name, value in cursor.fetchall()}
        finally:
            cursor.close()
        return {
            "connections": status["connections"],
            "statements": status["questions"] + status["com_admin_commands"],
            "pings": status["com_admin_commands"],
        }

    def snapshot(self) -> dict[str, int | None]:
        return dict(self._raw())

    def sessions(self) -> int:
        """Server sessions (threads) whose current database is the bench database.

        Each call is one Question on the global counters: :func:`counts` subtracts them.
        """
        cursor = self.db.cursor()
        try:
            cursor.execute(
                "SELECT count(*) FROM information_schema.processlist WHERE db = %s", [DBNAME]
            )
            return int(cursor.fetchone()[0])
        finally:
            cursor.close()

    def create_database(self) -> None:
        self.drop_database()
        self._execute(f"CREATE DATABASE `{DBNAME}` CHARACTER SET utf8mb4")

    def drop_database(self) -> None:
        self._execute(f"DROP DATABASE IF EXISTS `{DBNAME}`")

    def _execute(self, sql: str) -> None:
        cursor = self.db.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    def site_env(self) -> dict[str, str]:
        return {
            "BENCH_DB_HOST": self.conn.host,
            "BENCH_DB_PORT": str(self.conn.port),
            "BENCH_DB_USER": self.conn.user,
            "BENCH_DB_PASSWORD": self.conn.password,
        }

    def close(self) -> None:
        self.db.close()


class SessionSampler:
    """Samples ``server.sessions()`` every SAMPLE_INTERVAL in a thread, during one wrk run.

    It uses the observer connection, which nothing else touches while wrk runs (the
    main thread waits for wrk, and leaving the ``with`` block joins the thread before
    the next snapshot).
    """

    def __init__(self, server: PgServer | MysqlServer) -> None:
        self.server = server
        self.samples: list[int] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="session-sampler", daemon=True)

    def __enter__(self) -> SessionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.server.sessions())
            except Exception as exc:  # reported, the run goes on
                self.error = str(exc).strip()
                return
            self._stop.wait(SAMPLE_INTERVAL)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sessions_peak": max(self.samples) if self.samples else None,
            "sessions_mean": sum(self.samples) / len(self.samples) if self.samples else None,
            "sessions_samples": len(self.samples),
        }
        if self.error:
            out["sessions_error"] = self.error
        return out


def run_quiet(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


class OwnCluster:
    """A PostgreSQL cluster of our own (initdb in /tmp, run as ``postgres``).

    ``tls=True``: ssl=on with a self-signed certificate, TLS connections only (the
    pg-tls target). ``tls=False``: plain TCP, for the pg target when
    ``BENCH_PG_URL=own`` (a machine whose system server cannot preload
    pg_stat_statements, or must not be used). Both preload pg_stat_statements.
    """

    def __init__(self, port: int = TLS_PORT, tls: bool = True) -> None:
        self.port, self.tls = port, tls
        self.kind = "TLS" if tls else "plain"
        self.dir = WORK / f"pg{'tls' if tls else 'own'}-{port}"
        self.data = self.dir / "data"
        self.bin = self._bindir()

    @staticmethod
    def _bindir() -> Path:
        wanted = os.environ.get("BENCH_TLS_PG_BINDIR")
        if wanted:
            return Path(wanted)
        # PostgreSQL 15 (the system server's major version) when there, else the newest.
        base = Path("/usr/lib/postgresql")
        versions = sorted(
            (p for p in base.glob("*/bin") if (p / "initdb").exists()),
            key=lambda p: (p.parent.name != "15", -int(p.parent.name)),
        )
        if not versions:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb: install postgresql-15")
        return versions[0]

    def _as_postgres(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return run_quiet(["runuser", "-u", "postgres", "--", *cmd], cwd="/tmp")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        if self.running():
            log(f"stop our {self.kind} PostgreSQL cluster on port {self.port}")
            with contextlib.suppress(RuntimeError):
                self._as_postgres(
                    str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
                )
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def start(self) -> None:
        self.stop()  # leftovers of a crashed run
        pg = pwd.getpwnam("postgres")
        WORK.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700)
        os.chown(self.dir, pg.pw_uid, pg.pw_gid)
        log(
            f"initdb a PostgreSQL {self.bin.parent.name} cluster in {self.data} "
            f"({self.kind}, port {self.port})"
        )
        self._as_postgres(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        key, cert = self.dir / "server.key", self.dir / "server.crt"
        if self.tls:
            self._certificate(key, cert)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\n# sapool benchmark: {self.kind} cluster\n"
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "shared_preload_libraries = 'pg_stat_statements'\n"
                "max_connections = 100\nautovacuum = off\n"
            )
            if self.tls:
                conf.write(f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n")
        # TLS: TCP only over TLS (hostssl), a plain connection is refused, so
        # sslmode=require is real. Plain: no TLS offered at all.
        (self.data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            + ("hostssl" if self.tls else "host")
            + " all all 127.0.0.1/32 trust\n"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def _certificate(self, key: Path, cert: Path) -> None:
        pg = pwd.getpwnam("postgres")
        run_quiet(
            [
                "openssl",
                "req",
                "-x509",
                "-nodes",
                "-newkey",
                "rsa:2048",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ]
        )
        for path in (key, cert):
            os.chown(path, pg.pw_uid, pg.pw_gid)
            path.chmod(0o600)


class OwnMariaDB:
    """A MariaDB server of our own (``BENCH_MYSQL_URL=own``): exact global counters.

    The system server's global status counts every client's traffic; on a machine
    where others use that server, our own instance is the only one whose
    Connections/Questions are all ours. Datadir in /tmp, run as ``mysql``, no config
    file (``--no-defaults``) but the system server's notable settings: skip-name-resolve,
    utf8mb4, a 128 MiB buffer pool, one thread per connection.
    """

    def __init__(self, port: int = OWN_MYSQL_PORT) -> None:
        self.port = port
        self.dir = WORK / f"mariadb-{port}"
        self.socket = self.dir / "mysqld.sock"
        self.pidfile = self.dir / "mysqld.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def _pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def stop(self) -> None:
        pid = self._pid()
        if pid:
            log(f"stop our MariaDB server on port {self.port}")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                if self.proc is not None:
                    self.proc.poll()  # reap it
                time.sleep(0.1)
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def start(self) -> None:
        self.stop()  # leftovers of a crashed run
        mysql = pwd.getpwnam("mysql")
        WORK.mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(parents=True, mode=0o700)
        for path in (self.dir, self.dir / "data"):
            os.chown(path, mysql.pw_uid, mysql.pw_gid)
        log(f"install a MariaDB data directory in {self.dir} (port {self.port})")
        run_quiet(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
        )
        log_file = open(self.dir / "mariadbd.out", "ab")
        self.proc = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                f"--pid-file={self.pidfile}",
                f"--log-error={self.dir / 'error.log'}",
                "--user=mysql",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--innodb-buffer-pool-size=128M",
                "--max-connections=151",
            ],
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        log_file.close()
        import MySQLdb

        deadline = time.monotonic() + 60
        while True:
            try:
                # Over the socket as root (no password: a throwaway server), then
                # allow the same over TCP from 127.0.0.1.
                admin = MySQLdb.connect(unix_socket=str(self.socket), user="root")
                break
            except MySQLdb.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = (self.dir / "error.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"our MariaDB did not start:\n{tail}") from None
                time.sleep(0.2)
        cursor = admin.cursor()
        cursor.execute("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'")
        cursor.execute("GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
        admin.close()


class PgBouncer:
    """Our PgBouncer (scripts/ensure-pgbouncer: transaction pooling) on its own port."""

    def __init__(self, upstream: str) -> None:
        self.env = {
            **os.environ,
            "SAPOOL_PGBOUNCER_PORT": str(PGBOUNCER_PORT),
            "SAPOOL_PGBOUNCER_DIR": f"/tmp/sapool-bench-pgbouncer-{PGBOUNCER_PORT}",
            "SAPOOL_PG_URL": upstream,
        }
        self.version = ""

    def start(self) -> None:
        out = run_quiet([str(ROOT / "scripts" / "ensure-pgbouncer")], env=self.env)
        for line in out.stdout.splitlines():
            log(line)
        version = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True)
        self.version = version.stdout.split("\n")[0].replace("PgBouncer ", "").strip()

    def _admin(self, sql: str) -> str:
        # The admin console speaks the simple query protocol only: psql, as
        # scripts/ensure-pgbouncer uses it.
        return run_quiet(
            [
                "psql",
                *"-X -w -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d pgbouncer".split(),
                *("-p", str(PGBOUNCER_PORT), "-c", sql),
            ],
            env=self.env,
        ).stdout

    def pool_size(self) -> int:
        """PgBouncer's default_pool_size: server connections per (database, user)."""
        for line in self._admin("SHOW CONFIG").splitlines():
            fields = line.split("|")
            if fields[0] == "default_pool_size":
                return int(fields[1])
        raise RuntimeError("PgBouncer's SHOW CONFIG has no default_pool_size")

    def set_pool_size(self, size: int) -> None:
        """Change default_pool_size at run time (the admin console's SET; takes effect
        at once for every pool). The /io comparison caps it like the other pools."""
        if self.pool_size() != size:
            log(f"PgBouncer: default_pool_size = {size}")
            self._admin(f"SET default_pool_size = {int(size)}")
            if self.pool_size() != size:
                raise RuntimeError(f"PgBouncer did not take default_pool_size = {size}")

    def stop(self) -> None:
        subprocess.run([str(ROOT / "scripts" / "ensure-pgbouncer"), "--stop"], env=self.env)
        shutil.rmtree(self.env["SAPOOL_PGBOUNCER_DIR"], ignore_errors=True)


# -- the site under gunicorn and the load ----------------------------------------------

PIDFILE = WORK / "gunicorn.pid"


def python_bin() -> str:
    return sys.executable


def site_env(
    target: Target, contender: str, worker: Worker, server_env: dict[str, str]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_DB_")}
    env.update(server_env)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "benchsite.settings",
            "BENCH_CONTENDER": contender,
            "BENCH_VENDOR": target.vendor,
            "BENCH_DB_NAME": DBNAME,
            "BENCH_THREADS": str(worker.threads),
            "PYTHONPATH": str(SITE),
        }
    )
    env.pop("BENCH_POOL_CAP", None)
    if worker.pool_cap is not None:
        env["BENCH_POOL_CAP"] = str(worker.pool_cap)
    if contender == "pgbouncer":
        env["BENCH_DB_HOST"] = "127.0.0.1"
        env["BENCH_DB_PORT"] = str(PGBOUNCER_PORT)
    return env


def http_get(path: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}{path}", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Gunicorn:
    def __init__(self, env: dict[str, str], worker: Worker, logfile: Path) -> None:
        self.env, self.worker, self.logfile = env, worker, logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not port_free(HTTP_PORT):
            kill_leftover_gunicorn()
            if not port_free(HTTP_PORT):
                raise RuntimeError(f"127.0.0.1:{HTTP_PORT} is taken; set BENCH_HTTP_PORT")
        cmd = [
            python_bin(),
            "-m",
            "gunicorn",
            "-c",
            str(SITE / "gunicorn.conf.py"),
            "--chdir",
            str(SITE),
            "--bind",
            f"127.0.0.1:{HTTP_PORT}",
            "--pid",
            str(PIDFILE),
            "--workers",
            str(self.worker.workers),
            "--worker-class",
            self.worker.worker_class,
        ]
        if self.worker.worker_class == "gthread":
            # Each worker accepts at most its share of wrk's keep-alive connections:
            # without the cap, whichever worker accepted first kept most of them for
            # the whole run, and the cell's ratios ranged 0.46-1.89 whatever the
            # contender (the README table of 2026-12-06 07:18).
            share = -(-self.worker.connections // self.worker.workers)
            cmd += ["--threads", str(self.worker.threads), "--worker-connections", str(share)]
        cmd.append("benchsite.wsgi:application")
        out = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=out, stderr=out, start_new_session=True
        )
        out.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}): {self.tail()}")
            with contextlib.suppress(OSError):
                code = http_get("/one")
                if code == 200:
                    return
                raise RuntimeError(f"GET /one answered {code}: {self.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn not answering after 60 s: {self.tail()}")

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: worker_exit closes connections
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # any worker left behind
        self.proc = None
        deadline = time.monotonic() + 10
        while not port_free(HTTP_PORT) and time.monotonic() < deadline:
            time.sleep(0.05)


def kill_leftover_gunicorn() -> None:
    try:
        pid = int(PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"benchsite.wsgi" in cmdline:
            log(f"kill leftover gunicorn (pid {pid})")
            os.killpg(pid, signal.SIGKILL)
    PIDFILE.unlink(missing_ok=True)


def wrk(view: str, duration: float, worker: Worker) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{worker.connections}",
        f"-d{max(int(duration), 1)}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(BENCH / "wrk_report.lua"),
        f"http://127.0.0.1:{HTTP_PORT}/{view}",
    ]
    out = run_quiet(cmd).stdout
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line[len("WRK_JSON ") :]))
    raise RuntimeError(f"no WRK_JSON line in wrk's output:\n{out}")


# -- the run ---------------------------------------------------------------------------


@dataclass
class Options:
    duration: int
    warmup: int
    settle: float
    rounds: int
    filters: Filters
    out: Path
    quick: bool
    command: str


def rotated(items: tuple[str, ...], round_no: int, rounds: int) -> list[str]:
    """The contenders' order in a round: rotated so each visits other positions."""
    n = len(items)
    step = max(1, -(-n // max(rounds, 1)))  # ceil(n / rounds)
    k = (round_no * step) % n
    return list(items[k:] + items[:k])


def measure_slot(
    opts: Options,
    target: Target,
    worker: Worker,
    contender: str,
    views: list[str],
    server: PgServer | MysqlServer,
    round_no: int,
    position: int,
    setup: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One contender's turn: start its gunicorn, warm up, measure each view, stop.

    ``setup``: run first (PgBouncer's pool size); if it fails, so does the turn.
    """
    env = site_env(target, contender, worker, server.site_env())
    logfile = WORK / "logs" / f"{target.name}-{worker.name}-{contender}.log"
    site = Gunicorn(env, worker, logfile)
    base: dict[str, Any] = {
        "target": target.name,
        "worker": worker.name,
        "contender": contender,
        "round": round_no,
        "position": position,
    }
    if worker.pool_cap is not None:
        base["pool_cap"] = worker.pool_cap
        # The most server sessions this contender may hold (None: no pool, no cap).
        base["server_cap"] = server_cap(contender, worker.pool_cap, worker.workers)
    records: list[dict[str, Any]] = []
    try:
        if setup is not None:
            setup()
        site.start()
        for view in views:  # warm up: pools filled to the concurrency, code paths hot
            wrk(view, opts.warmup, worker)
        time.sleep(opts.settle)
        before = server.snapshot()
        for view in views:
            started = time.time()
            sampled: dict[str, Any] = {}
            if view in SAMPLED_VIEWS:
                with SessionSampler(server) as sampler:
                    load = wrk(view, opts.duration, worker)
                sampled = sampler.result()
            else:
                load = wrk(view, opts.duration, worker)
            time.sleep(opts.settle)  # requests in flight when wrk stopped finish
            after = server.snapshot()
            record = {**base, "view": view, "started": started, "wrk": load, **sampled}
            finish_record(record)
            record.update(
                counts(
                    server,
                    before,
                    after,
                    load["requests"],
                    observer_queries=sampled.get("sessions_samples", 0),
                )
            )
            if isinstance(server, MysqlServer):
                # Others' traffic on the global counters: a quiet moment right after.
                time.sleep(opts.settle)
                quiet = server.snapshot()
                record["background_per_s"] = (
                    (quiet["statements"] or 0) - (after["statements"] or 0) - server.own
                ) / opts.settle
                after = quiet
            record["loadavg"] = os.getloadavg()[0]
            records.append(record)
            before = after
            log(
                f"  {target.name:7} {worker.name:10} {view:5} {contender:13} "
                f"{record['rps']:8.1f} req/s  p50 {load['p50_us'] / 1000:6.2f} ms  "
                f"p99 {load['p99_us'] / 1000:6.2f} ms  "
                f"conn/1k {fmt(record['connections_per_1k'])}  "
                f"stmt/req {fmt(record['statements_per_request'])}"
                + (
                    f"  sessions peak {record['sessions_peak']}"
                    f" (cap {record.get('server_cap') or 'none'})"
                    if "sessions_peak" in record
                    else ""
                )
                + (
                    f"  SAMPLER ERROR {record['sessions_error']}"
                    if "sessions_error" in record
                    else ""
                )
                + (f"  ERRORS {record['errors']}" if record["errors"] else "")
            )
    except Exception as exc:
        log(f"  {target.name} {worker.name} {contender}: FAILED: {exc}")
        done = {r["view"] for r in records}
        records += [{**base, "view": v, "failed": str(exc)[-2000:]} for v in views if v not in done]
    finally:
        site.stop()
    return records


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def counts(
    server: PgServer | MysqlServer,
    before: dict[str, Any],
    after: dict[str, Any],
    requests: int,
    observer_queries: int = 0,
) -> dict[str, Any]:
    """Requests/s and the server's counters per request, from two snapshots.

    ``observer_queries``: the session samples taken in between (MariaDB counts each as a
    Question; PostgreSQL's observer is in another database, so nothing to subtract).
    """
    n = max(requests, 1)
    connections = after["connections"] - before["connections"]
    statements = None
    if after["statements"] is not None and before["statements"] is not None:
        own = server.own + observer_queries if isinstance(server, MysqlServer) else 0
        statements = after["statements"] - before["statements"] - own
    result: dict[str, Any] = {
        "requests": requests,
        "connections": connections,
        "statements": statements,
        "connections_per_1k": 1000.0 * connections / n,
        "statements_per_request": None if statements is None else statements / n,
    }
    if "pings" in after:
        result["pings_per_request"] = (after["pings"] - before["pings"]) / n
    if after.get("dealloc") is not None and before.get("dealloc") is not None:
        result["statements_evicted"] = after["dealloc"] != before["dealloc"]
    return result


def finish_record(record: dict[str, Any]) -> None:
    load = record.get("wrk")
    if load:
        seconds = load["duration_us"] / 1e6
        record["rps"] = load["requests"] / seconds if seconds else 0.0
        record["errors"] = {k: v for k, v in load["errors"].items() if v}


def versions(
    pg: PgServer | None, tls: PgServer | None, mysql: MysqlServer | None, bouncer: PgBouncer | None
) -> dict[str, str]:
    from importlib import metadata

    found: dict[str, str] = {"python": platform.python_version()}
    for dist in (
        "Django",
        "SQLAlchemy",
        "psycopg",
        "psycopg-pool",
        "mysqlclient",
        "gunicorn",
        "django-db-connection-pool",
        "django-pg-real-pool",
        "django-sapool",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    if pg:
        found["PostgreSQL"] = pg.version
    if tls:
        found["PostgreSQL (TLS cluster)"] = tls.version
    if mysql:
        found["MariaDB"] = mysql.version
    if bouncer and bouncer.version:
        found["PgBouncer"] = bouncer.version
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    found["wrk"] = (wrk_version.stdout or wrk_version.stderr).split()[1]
    return found


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip()

    return {
        "commit": git("rev-parse", "--short=12", "HEAD"),
        # The library is what is measured: uncommitted changes to it are worth knowing.
        "django_sapool_uncommitted": git("status", "--porcelain", "--", "django_sapool"),
    }


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    os_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "hostname": socket.gethostname(),
        "os": os_name,
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": mem,
    }


def plan(opts: Options) -> list[tuple[Target, Worker, list[str], list[str]]]:
    """(target, worker, contenders, views) groups that pass the filters, in run order."""
    groups = []
    f = opts.filters
    for target in TARGETS.values():
        if not f.ok("target", target.name):
            continue
        for wname in target.workers:
            if not f.ok("worker", wname):
                continue
            target_contenders, target_views = target.group(WORKERS[wname])
            contenders = [c for c in target_contenders if f.ok("contender", c)]
            views = [v for v in target_views if f.ok("view", v)]
            if contenders and views:
                groups.append((target, WORKERS[wname], contenders, views))
    return groups


def settings_summary(worker: Worker = WORKERS["gthread"]) -> dict[str, Any]:
    """The DATABASES entry of each contender (PostgreSQL, that worker's sizing), for the report."""
    out = {}
    names = IO_CONTENDERS if worker.pool_cap is not None else BASE_CONTENDERS
    for contender in names:
        db = database(
            contender,
            "postgresql",
            name=DBNAME,
            host="HOST",
            port="PORT",
            user="USER",
            threads=worker.threads,
            pool_cap=worker.pool_cap,
        )
        db.pop("PASSWORD", None)
        out[contender] = db
    return out


def run(opts: Options) -> dict[str, Any]:
    groups = plan(opts)
    if not groups:
        raise SystemExit("nothing to run: --only filters exclude everything")
    targets = {g[0].name for g in groups}
    contenders = {c for g in groups for c in g[2]}
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "logs").mkdir(exist_ok=True)
    for old in (WORK / "logs").glob("*.log"):
        old.unlink()
    started = datetime.datetime.now(datetime.UTC)
    servers: dict[str, PgServer | MysqlServer] = {}
    where: dict[str, str] = {}
    bouncer: PgBouncer | None = None
    bouncer_pool_size = 0  # scripts/ensure-pgbouncer's default_pool_size
    records: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if "pg" in targets:
            pg_url = PG_URL
            if PG_URL == "own":
                own = OwnCluster(OWN_PG_PORT, tls=False)
                stack.callback(own.stop)
                own.start()
                pg_url = f"postgresql://postgres@127.0.0.1:{OWN_PG_PORT}/postgres"
            servers["pg"] = pg = PgServer(parse_url(pg_url, 5432, "postgres"))
            stack.callback(pg.close)
            where["pg"] = f"{pg.conn.host}:{pg.conn.port}" + (
                " (a cluster of the harness's own, BENCH_PG_URL=own)" if PG_URL == "own" else ""
            )
            if "pgbouncer" in contenders:
                bouncer = PgBouncer(pg_url)
                stack.callback(bouncer.stop)
                bouncer.start()
                bouncer_pool_size = bouncer.pool_size()
        if "mariadb" in targets:
            mysql_url = MYSQL_URL
            if MYSQL_URL == "own":
                own_mariadb = OwnMariaDB()
                stack.callback(own_mariadb.stop)
                own_mariadb.start()
                mysql_url = f"mysql://root@127.0.0.1:{OWN_MYSQL_PORT}/"
            servers["mariadb"] = my = MysqlServer(parse_url(mysql_url, 3306, "root"))
            stack.callback(my.close)
            where["mariadb"] = f"{my.conn.host}:{my.conn.port}" + (
                " (a server of the harness's own, BENCH_MYSQL_URL=own)"
                if MYSQL_URL == "own"
                else ""
            )
        if "pg-tls" in targets:
            tls_cluster = OwnCluster(TLS_PORT, tls=True)
            stack.callback(tls_cluster.stop)
            tls_cluster.start()
            servers["pg-tls"] = tls = PgServer(
                Conn("127.0.0.1", TLS_PORT, "postgres", ""), sslmode="require"
            )
            stack.callback(tls.close)
            if not tls.ssl:
                raise RuntimeError("the TLS cluster's observer connection is not encrypted")
            where["pg-tls"] = f"127.0.0.1:{TLS_PORT} (a cluster of the harness's own, TLS only)"
        for name, server in servers.items():
            server.create_database()
            stack.callback(server.drop_database)
            prepare(TARGETS[name], server)
        meta = {
            "versions": versions(
                servers.get("pg"),
                servers.get("pg-tls"),
                servers.get("mariadb"),
                bouncer,  # type: ignore[arg-type]
            ),
            "servers": where,
            "statements_errors": {
                n: s.statements_error for n, s in servers.items() if s.statements_error
            },
        }
        total = sum(len(g[2]) for g in groups) * opts.rounds
        slot = 0
        for round_no in range(opts.rounds):
            log(f"round {round_no + 1}/{opts.rounds}")
            for target, worker, group_contenders, views in groups:
                order = rotated(tuple(group_contenders), round_no, opts.rounds)
                for position, contender in enumerate(order):
                    slot += 1
                    log(f"[{slot}/{total}] {target.name} {worker.name} {contender}")
                    setup = None
                    if contender == "pgbouncer" and bouncer is not None:
                        # One PgBouncer serves every worker: the /io comparison caps
                        # it at the pools' cap times the workers; otherwise as
                        # scripts/ensure-pgbouncer configured it.
                        setup = functools.partial(
                            bouncer.set_pool_size,
                            worker.pool_cap * worker.workers
                            if worker.pool_cap is not None
                            else bouncer_pool_size,
                        )
                    for record in measure_slot(
                        opts,
                        target,
                        worker,
                        contender,
                        views,
                        servers[target.name],
                        round_no,
                        position,
                        setup,
                    ):
                        records.append(record)
    finished = datetime.datetime.now(datetime.UTC)
    return {
        "command": opts.command,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "quick": opts.quick,
        "complete": not opts.filters.wanted and not opts.quick,
        "parameters": {
            "duration_s": opts.duration,
            "warmup_s_per_view": opts.warmup,
            "rounds": opts.rounds,
            "only": {k: sorted(v) for k, v in opts.filters.wanted.items()},
            "workers": {w.name: vars(w) for w in WORKERS.values()},
            "pool_size": POOL_SIZE,
            "max_overflow": MAX_OVERFLOW,
            "pgbouncer_default_pool_size": bouncer_pool_size or None,
            "io_pool_cap": IO_POOL_CAP,
            "session_sample_interval_s": SAMPLE_INTERVAL,
        },
        "targets": {
            name: {
                "title": t.title,
                "vendor": t.vendor,
                "contenders": list(t.contenders),
                "workers": list(t.workers),
                "views": list(t.views),
                "io_contenders": list(t.io_contenders),
                "notes": list(t.notes),
            }
            for name, t in TARGETS.items()
            if name in targets
        },
        "contender_settings": settings_summary(),
        "contender_settings_io": settings_summary(WORKERS["gthread-io"]),
        "machine": machine(),
        "git": git_state(),
        **meta,
        "runs": records,
    }


def prepare(target: Target, server: PgServer | MysqlServer) -> None:
    env = site_env(target, "default", WORKERS["sync"], server.site_env())
    out = run_quiet([python_bin(), "-m", "benchsite.prepare"], env=env, cwd=SITE)
    log(out.stdout.strip() + f" ({target.name})")


def cleanup() -> None:
    """Stop and drop what a (crashed) run left: gunicorn, own clusters, PgBouncer, databases."""
    kill_leftover_gunicorn()
    for cluster in (OwnCluster(TLS_PORT, tls=True), OwnCluster(OWN_PG_PORT, tls=False)):
        with contextlib.suppress(RuntimeError):
            cluster.stop()
    PgBouncer(PG_URL).stop()
    if PG_URL != "own":
        with contextlib.suppress(Exception):
            pg = PgServer(parse_url(PG_URL, 5432, "postgres"))
            pg.drop_database()
            pg.close()
    OwnMariaDB().stop()
    if MYSQL_URL != "own":
        with contextlib.suppress(Exception):
            my = MysqlServer(parse_url(MYSQL_URL, 3306, "root"))
            my.drop_database()
            my.close()


def command_line() -> str:
    """The command that made these results, with the BENCH_* settings it ran under."""
    command = os.environ.get("BENCH_COMMAND") or "python benchmarks/harness.py " + " ".join(
        sys.argv[1:]
    )
    settings = []
    for name in sorted(os.environ):
        if not name.startswith("BENCH_") or name in ("BENCH_COMMAND", "BENCH_DB_PASSWORD"):
            continue
        value = os.environ[name]
        if name.endswith("_URL") and "://" in value:
            u = urlsplit(value)
            if u.password:  # never record a password
                value = value.replace(f":{u.password}@", ":***@", 1)
        settings.append(f"{name}={value}")
    return " ".join([*settings, command])


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 s runs, 1 round, results in benchmarks/results/quick/",
    )
    parser.add_argument(
        "--duration", type=int, help="seconds of load per measured run (default 5; --quick 1)"
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds of every contender (default 3; --quick 1)"
    )
    parser.add_argument(
        "--warmup", type=int, help="seconds of warm-up load per view after each start (default 1)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="run a subset; KEY is target (pg, mariadb, pg-tls), worker (sync, gthread, "
        "gthread-io), view (one, ten, write, io) or contender; repeat for several keys; "
        "--only view=io is the /io comparison (issue 15) alone",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results directory (default benchmarks/results, --quick: benchmarks/results/quick)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild RESULTS.md, the plot and README's table from results.json",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="do not update README.md's benchmark section"
    )
    parser.add_argument(
        "--cleanup", action="store_true", help="stop and drop whatever a crashed run left behind"
    )
    args = parser.parse_args(argv)

    import report

    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    if args.cleanup:
        cleanup()
        return
    if args.report_only:
        data = json.loads((out / "results.json").read_text())
        # README's table only ever shows a complete default run.
        report.write_all(data, out, update_readme=data["complete"] and not args.no_readme)
        return
    if args.rounds is not None and args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    opts = Options(
        duration=args.duration or (1 if args.quick else 5),
        warmup=args.warmup or 1,
        settle=0.3,
        rounds=args.rounds or (1 if args.quick else 3),
        filters=Filters.parse(args.only),
        out=out,
        quick=args.quick,
        command=command_line(),
    )
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    data = run(opts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    log(f"wrote {out / 'results.json'}")
    report.write_all(
        data, out, update_readme=data["complete"] and not args.no_readme and out == RESULTS
    )


if __name__ == "__main__":
    main()
