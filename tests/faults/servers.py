"""Throwaway database servers that the fault tests may stop, restart and kill.

The machine's own servers (5432, 3306) serve everybody's tests and are never
touched. Each instance here lives in a fresh directory under the temp dir
(``sapool-faults-<vendor>-*``), listens on 127.0.0.1 on a free port, and is
removed by :meth:`Instance.destroy`:

- :class:`PgInstance`: PostgreSQL 15 from ``initdb`` (trust auth), driven with
  ``pg_ctl start|stop|restart -m fast`` as the ``postgres`` user.
- :class:`MariaDBInstance`: MariaDB 10.11 from ``mariadb-install-db`` (root with
  an empty password), ``mariadbd`` run in the background and stopped by SIGTERM.

Both offer the same small admin API over short-lived connections of their own
(never pooled, never counted as the application's sessions): create/drop a
database, list/kill the sessions using a database, count open transactions.
Every directory records the pid of the process that made it; :func:`cleanup_stale`
stops the servers of directories whose owner died (a killed test run), after
checking that the process really is that directory's server.

``launch(vendor, namespace=ns)`` runs the server inside a
:class:`tests.faults.netns.Namespace` (its 127.0.0.1 is the namespace's, so
:meth:`Instance.settings` serves an application run there); the admin
connections then go over the server's UNIX socket, which the test process
outside reaches whatever the namespace's network does.
:meth:`PgInstance.make_standby` clones a running PostgreSQL into a streaming hot
standby, which :meth:`PgInstance.promote` turns into a primary.

``python -m tests.faults.servers postgresql|mysql`` starts one by hand and prints
its address (see scripts/fault-servers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .netns import Namespace

HOST = "127.0.0.1"
PREFIX = "sapool-faults-"
PG_BIN = Path(os.environ.get("SAPOOL_FAULT_PG_BIN", "/usr/lib/postgresql/15/bin"))
MARIADBD = os.environ.get("SAPOOL_FAULT_MARIADBD", "/usr/sbin/mariadbd")
#: Bound on every start, stop and restart (a healthy one takes a second or two).
SERVER_TIMEOUT = 60.0


class ServerError(RuntimeError):
    """A server could not be installed, started or stopped (the log tail included)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _run(cmd: Sequence[str], what: str, timeout: float = SERVER_TIMEOUT) -> str:
    try:
        proc = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"{what}: {exc}") from exc
    if proc.returncode != 0:
        raise ServerError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


class Instance:
    """What the tests need from a server they own."""

    vendor = ""
    user = ""

    def __init__(self, namespace: Namespace | None = None) -> None:
        self.namespace = namespace
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.vendor}-"))
        (self.root / "owner").write_text(str(os.getpid()))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def __repr__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"<{type(self).__name__} {HOST}:{self.port}{where} in {self.root}>"

    def prefix(self) -> list[str]:
        """The command prefix for the server's own processes (its namespace's, if any)."""
        return self.namespace.prefix() if self.namespace else []

    # -- lifecycle (per vendor) -------------------------------------------------

    def install(self) -> None:
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def connect(self, dbname: str | None = None, timeout: float = 5.0) -> Any:
        """Return a new autocommit admin connection (the caller closes it)."""
        raise NotImplementedError

    # -- lifecycle (common) -----------------------------------------------------

    def start(self) -> float:
        """Start the server; return the monotonic time it first accepted a connection."""
        self._start()
        return self.wait_accepting()

    def stop(self) -> float:
        """Stop the server (fast shutdown); return the monotonic time it was gone."""
        self._stop()
        return time.monotonic()

    def restart(self) -> tuple[float, float]:
        """Stop and start again; return (time the stop was issued, time it accepted again)."""
        down = time.monotonic()
        self._stop()
        self._start()
        return down, self.wait_accepting()

    def accepting(self) -> bool:
        try:
            self.connect(timeout=2).close()
        except Exception:
            return False
        return True

    def wait_accepting(self, timeout: float = SERVER_TIMEOUT) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepting():
                return time.monotonic()
            if not self.running():
                raise ServerError(f"{self} exited while starting:\n{_tail(self.log)}")
            time.sleep(0.05)
        raise ServerError(f"{self} did not accept connections in {timeout:g} s:\n{_tail(self.log)}")

    def destroy(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            if self.running():
                self._stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- admin SQL ---------------------------------------------------------------

    @contextlib.contextmanager
    def admin(self, dbname: str | None = None) -> Iterator[Any]:
        conn = self.connect(dbname)
        try:
            yield conn
        finally:
            conn.close()

    def query(self, sql: str, params: Sequence[Any] = (), dbname: str | None = None) -> list[Any]:
        with self.admin(dbname) as conn:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, params or None)
                return list(cursor.fetchall()) if cursor.description else []
            finally:
                cursor.close()

    def execute(self, sql: str, params: Sequence[Any] = (), dbname: str | None = None) -> None:
        self.query(sql, params, dbname)

    def scalar(self, sql: str, params: Sequence[Any] = (), dbname: str | None = None) -> Any:
        rows = self.query(sql, params, dbname)
        return rows[0][0] if rows else None

    def create_database(self, name: str) -> None:
        raise NotImplementedError

    def drop_database(self, name: str) -> None:
        raise NotImplementedError

    def sessions(self, dbname: str) -> list[int]:
        """Return the ids of the client sessions connected to ``dbname`` (not ours)."""
        raise NotImplementedError

    def kill_sessions(self, dbname: str) -> list[int]:
        """Have the server end every client session of ``dbname``; return their ids."""
        raise NotImplementedError

    def open_transactions(self, dbname: str) -> int:
        """Count the sessions of ``dbname`` that hold a transaction open."""
        raise NotImplementedError

    def settings(self, dbname: str, **extra: Any) -> dict[str, Any]:
        """Return a Django DATABASES entry for ``dbname`` on this server."""
        raise NotImplementedError


class PgInstance(Instance):
    vendor = "postgresql"
    user = "postgres"

    def __init__(self, namespace: Namespace | None = None) -> None:
        super().__init__(namespace)
        shutil.chown(self.root, "postgres", "postgres")

    def _pg_ctl(self, *args: str, inside: bool = True) -> None:
        """Run pg_ctl as postgres; ``inside`` the namespace if it starts a postmaster."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses={HOST}"
        _run(
            [
                *(self.prefix() if inside else []),
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(SERVER_TIMEOUT)),
                *args,
            ],
            f"pg_ctl {' '.join(args)} ({self})",
            timeout=SERVER_TIMEOUT + 10,
        )

    def install(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise ServerError(f"{PG_BIN / 'initdb'} is not installed")
        _run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            f"initdb ({self})",
        )

    def _start(self) -> None:
        self._pg_ctl("start")

    def _stop(self) -> None:
        # Only signals the postmaster: no namespace needed, so a namespace that is
        # already gone cannot keep a server from stopping.
        self._pg_ctl("-m", "fast", "stop", inside=False)

    def restart(self) -> tuple[float, float]:
        down = time.monotonic()
        self._pg_ctl("-m", "fast", "restart")
        return down, self.wait_accepting()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def backend_pids(self, dbname: str) -> list[int]:
        """The postmaster's children serving ``dbname``, read from /proc (no session needed).

        Works while the postmaster is frozen, when no new session can be opened.
        """
        postmaster = self.postmaster_pid()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            # The process title: "postgres: USER DBNAME HOST(PORT) STATE"
            if ppid == postmaster and f" {dbname} " in title:
                found.append(int(entry.name))
        return sorted(found)

    def connect(self, dbname: str | None = None, timeout: float = 5.0) -> Any:
        import psycopg

        # In a namespace the server's 127.0.0.1 is not ours: use its UNIX socket.
        return psycopg.connect(
            host=str(self.root) if self.namespace else HOST,
            port=self.port,
            user=self.user,
            dbname=dbname or "postgres",
            connect_timeout=max(1, int(timeout)),
            autocommit=True,
        )

    # -- replication -------------------------------------------------------------

    def make_standby(self) -> PgInstance:
        """Clone this running primary (pg_basebackup -R) into a hot standby and start it.

        The standby gets its own directory and port, lives in the same namespace,
        and streams from the primary over the primary's UNIX socket, so a partition
        of 127.0.0.1 does not stop replication. Destroy it like any instance.
        """
        standby = PgInstance(self.namespace)
        try:
            _run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(PG_BIN / "pg_basebackup"),
                    "-h",
                    str(self.root),
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    "-D",
                    str(standby.data),
                    "-R",  # standby.signal + primary_conninfo
                    "-X",
                    "stream",
                    "-c",
                    "fast",  # checkpoint now, not at the next scheduled one
                    "--no-sync",
                ],
                f"pg_basebackup ({self} -> {standby})",
            )
            standby.start()
        except BaseException:
            standby.destroy()
            raise
        return standby

    def in_recovery(self) -> bool:
        """Whether the server is a standby (still replaying WAL)."""
        return bool(self.scalar("SELECT pg_is_in_recovery()"))

    def promote(self, timeout: float = SERVER_TIMEOUT) -> float:
        """Promote this standby; return the monotonic time it accepted writes."""
        self._pg_ctl("promote", inside=False)  # -w: waits for the end of recovery
        deadline = time.monotonic() + timeout
        while self.in_recovery():
            if time.monotonic() >= deadline:
                raise ServerError(f"{self} still in recovery {timeout:g} s after promote")
            time.sleep(0.05)
        return time.monotonic()

    # -- admin SQL (PostgreSQL) ----------------------------------------------------

    def create_database(self, name: str) -> None:
        self.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.kill_sessions(name)
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def sessions(self, dbname: str) -> list[int]:
        rows = self.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid() ORDER BY pid",
            [dbname],
        )
        return [int(r[0]) for r in rows]

    def kill_sessions(self, dbname: str) -> list[int]:
        # Two steps: in one WHERE clause the planner may call pg_terminate_backend()
        # before the filter that spares our own session.
        rows = self.query(
            "SELECT pid FROM unnest(%s::int[]) AS pid WHERE pg_terminate_backend(pid)",
            [self.sessions(dbname)],
        )
        return sorted(int(r[0]) for r in rows)

    def open_transactions(self, dbname: str) -> int:
        return int(
            self.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND (state LIKE 'idle in transaction%%' OR xact_start IS NOT NULL) "
                "AND pid <> pg_backend_pid()",
                [dbname],
            )
        )

    def settings(self, dbname: str, **extra: Any) -> dict[str, Any]:
        return {
            "ENGINE": "django_sapool.backends.postgresql",
            "NAME": dbname,
            "USER": self.user,
            "PASSWORD": "",
            "HOST": HOST,
            "PORT": self.port,
            **extra,
        }


class MariaDBInstance(Instance):
    vendor = "mysql"
    user = "root"

    def __init__(self, namespace: Namespace | None = None) -> None:
        super().__init__(namespace)
        shutil.chown(self.root, "mysql", "mysql")
        self.proc: subprocess.Popen[bytes] | None = None
        #: The self-signed certificate the server offers TLS with (clients that
        #: ask for it; others connect in plain), also their CA; None without
        #: openssl to make it.
        self.tls_ca: Path | None = None

    def install(self) -> None:
        installer = shutil.which("mariadb-install-db")
        if installer is None or not Path(MARIADBD).exists():
            raise ServerError("mariadb-install-db / mariadbd is not installed")
        _run(
            [
                installer,
                # The machine's /etc/mysql config belongs to the system server.
                "--no-defaults",
                f"--datadir={self.data}",
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            f"mariadb-install-db ({self})",
            timeout=SERVER_TIMEOUT * 2,
        )
        if shutil.which("openssl"):
            cert, key = self.root / "server.crt", self.root / "server.key"
            _run(
                [
                    *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                    *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={HOST}"),
                    *("-addext", f"subjectAltName=IP:{HOST}"),
                ],
                f"openssl req ({self})",
                timeout=SERVER_TIMEOUT,
            )
            for path in (cert, key):
                shutil.chown(path, "mysql", "mysql")
            self.tls_ca = cert

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [
                # nsenter execs mariadbd (no fork): self.proc is the server itself.
                *self.prefix(),
                MARIADBD,
                "--no-defaults",
                f"--datadir={self.data}",
                f"--port={self.port}",
                f"--bind-address={HOST}",
                f"--socket={self.socket}",
                f"--pid-file={self.root / 'mysqld.pid'}",
                "--user=mysql",
                "--skip-log-bin",
                f"--log-error={self.log}",
                "--innodb-buffer-pool-size=64M",
                *(
                    (f"--ssl-cert={self.tls_ca}", f"--ssl-key={self.root / 'server.key'}")
                    if self.tls_ca
                    else ()
                ),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(SERVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise ServerError(
                f"{self} ignored SIGTERM for {SERVER_TIMEOUT:g} s (killed):\n{_tail(self.log)}"
            ) from None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    def server_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def connect(self, dbname: str | None = None, timeout: float = 5.0) -> Any:
        import MySQLdb

        kwargs: dict[str, Any] = {"database": dbname} if dbname else {}
        if self.namespace:
            # In a namespace the server's 127.0.0.1 is not ours: use its UNIX socket.
            kwargs["unix_socket"] = str(self.socket)
        conn = MySQLdb.connect(
            host="localhost" if self.namespace else HOST,
            port=self.port,
            user=self.user,
            password="",
            connect_timeout=max(1, int(timeout)),
            **kwargs,
        )
        conn.autocommit(True)
        return conn

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE `{name}`")

    def drop_database(self, name: str) -> None:
        self.kill_sessions(name)
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def sessions(self, dbname: str) -> list[int]:
        rows = self.query(
            "SELECT id FROM information_schema.processlist WHERE db = %s "
            "AND id <> CONNECTION_ID() AND command <> 'Daemon' ORDER BY id",
            [dbname],
        )
        return [int(r[0]) for r in rows]

    def kill_sessions(self, dbname: str) -> list[int]:
        killed = []
        with self.admin() as conn:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s "
                "AND id <> CONNECTION_ID() AND command <> 'Daemon'",
                [dbname],
            )
            for (session,) in cursor.fetchall():
                try:
                    cursor.execute(f"KILL CONNECTION {int(session)}")
                except Exception as exc:  # gone in between: "Unknown thread id"
                    if "Unknown thread" not in str(exc):
                        raise
                    continue
                killed.append(int(session))
            cursor.close()
        return sorted(killed)

    def open_transactions(self, dbname: str) -> int:
        # Our own server: any InnoDB transaction at all is one too many, whatever
        # its session's current database.
        return int(self.scalar("SELECT count(*) FROM information_schema.innodb_trx"))

    def settings(self, dbname: str, **extra: Any) -> dict[str, Any]:
        return {
            "ENGINE": "django_sapool.backends.mysql",
            "NAME": dbname,
            "USER": self.user,
            "PASSWORD": "",
            "HOST": HOST,
            "PORT": self.port,
            **extra,
        }


INSTANCES: dict[str, type[Instance]] = {"postgresql": PgInstance, "mysql": MariaDBInstance}


def launch(vendor: str, namespace: Namespace | None = None) -> Instance:
    """Install and start a fresh instance; on failure remove it and raise ServerError.

    With a ``namespace``, the server runs (and listens on 127.0.0.1) inside it,
    and the admin connections of this module use its UNIX socket.
    """
    instance = INSTANCES[vendor](namespace)
    try:
        instance.install()
        instance.start()
    except BaseException:
        instance.destroy()
        raise
    return instance


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed run whose parent has not reaped it yet is a zombie: dead, for us.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def cleanup_stale(base: Path | None = None) -> list[Path]:
    """Stop and remove instances left behind by test runs that died; return their dirs.

    A server process is signalled only if its command line names that directory,
    so a recycled pid can never hit an unrelated process.
    """
    removed = []
    for root in sorted(Path(base or tempfile.gettempdir()).glob(f"{PREFIX}*")):
        try:
            owner = int((root / "owner").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        # PostgreSQL: SIGQUIT is the immediate shutdown (it ends the backends too).
        for pid_file, signum in (
            (root / "data" / "postmaster.pid", signal.SIGQUIT),
            (root / "mysqld.pid", signal.SIGKILL),
        ):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if str(root) in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


def main(argv: Sequence[str]) -> int:
    """Start one instance by hand, print where it is, remove it on Ctrl-C."""
    if len(argv) != 1 or argv[0] not in (*INSTANCES, "cleanup"):
        print("usage: python -m tests.faults.servers postgresql|mysql|cleanup")
        return 2
    if argv[0] == "cleanup":
        for root in cleanup_stale():
            print(f"removed {root}")
        return 0
    instance = launch(argv[0])
    print(f"{instance.vendor} at {HOST}:{instance.port} user {instance.user!r} (no password)")
    print(f"data and log in {instance.root}; Ctrl-C stops and removes it")
    try:
        while instance.running():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        instance.destroy()
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
