"""``manage.py sapool --check`` and ``pool_status()`` against real servers.

The command runs as ``python -m django sapool`` with a settings module written for
the test (django_sapool in INSTALLED_APPS, as a project would have it). Its numbers
are compared with what the server itself says. ``pool_status()`` is read in this
process (tests/conftest.py configures Django; each thread builds its own wrapper),
its sizes compared with the server's sessions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError

import django_sapool
from django_sapool import registry
from tests.unit.pools import filled

from .conftest import ROOT, MySQLServer, PgServer, mysql_admin_cursor

# Trust authentication ignores it; it must still never be shown.
PASSWORD = "Zebra-4711-do-not-leak"

DRIVER_SETUP = {
    "psycopg": "",
    "psycopg2": "import sys\nsys.modules['psycopg'] = None  # Django falls back to psycopg2\n",
    "mysqlclient": "",
    "pymysql": "import pymysql\npymysql.install_as_MySQLdb()\n",
}


def manage(tmp_path: Path, driver: str, databases: dict[str, Any], *args: str) -> Any:
    """Run ``manage.py sapool ARGS`` for these DATABASES; return the finished process."""
    module = f"sapool_settings_{driver}"
    (tmp_path / f"{module}.py").write_text(
        DRIVER_SETUP[driver]
        + textwrap.dedent(
            f"""
            SECRET_KEY = "not-secret"
            INSTALLED_APPS = ["django_sapool"]
            USE_TZ = True
            DATABASES = {databases!r}
            """
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": module,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "django", "sapool", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert PASSWORD not in proc.stdout + proc.stderr
    return proc


def row(text: str, label: str) -> list[str]:
    """Return the cells of the table row that starts with label."""
    for line in text.splitlines():
        if line.startswith(label + "  "):
            return line[len(label) :].split()
    raise AssertionError(f"no row {label!r} in:\n{text}")


def expected_verdict(total: int, max_connections: int) -> str:
    if total > max_connections:
        return "exceeds"
    return "tight" if total > 0.8 * max_connections else "ok"


@pytest.fixture(params=["psycopg", "psycopg2"])
def pg_driver(request: pytest.FixtureRequest) -> str:
    pytest.importorskip(request.param)
    return str(request.param)


def pg_settings(pg: PgServer, dbname: str, **pool_options: Any) -> dict[str, Any]:
    db = pg.settings(dbname, "sapool-observability", POOL_OPTIONS=pool_options)
    db["PASSWORD"] = PASSWORD
    return db


@pytest.mark.postgresql
def test_check_workers_on_postgresql(
    pg: PgServer, pg_database: str, pg_driver: str, tmp_path: Path
) -> None:
    import psycopg

    with psycopg.connect(pg.conninfo(pg.admin_db)) as admin:
        server_max = int(admin.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        version = admin.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    databases = {
        "default": pg_settings(pg, pg_database, POOL_SIZE=5, MAX_OVERFLOW=5),
        # Same server: its pool adds up with default's.
        "replica": pg_settings(pg, pg_database, POOL_SIZE=2, MAX_OVERFLOW=0),
    }
    proc = manage(tmp_path, pg_driver, databases, "--check", "--workers", "4")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert row(text, "result") == ["ok", "ok"]
    assert row(text, "max_connections") == [str(server_max)] * 2
    assert f"PostgreSQL {version}" in text
    in_use = [int(n) for n in row(text, "connections in use")]
    assert all(n >= 1 for n in in_use)  # at least the check's own session
    server = f"postgresql {pg.host}:{pg.port}"
    total = 4 * (5 + 5 + 2)
    capacity = row(text, server)
    assert capacity[:4] == ["default,", "replica", "12", str(total)]
    assert capacity[4] == str(server_max)
    verdict = expected_verdict(total, server_max)
    prefix = "OK: " if verdict == "ok" else "WARNING: "
    line = next(ln for ln in text.splitlines() if ln.startswith(prefix + server))
    assert f"at most 4 processes x (default 5+5 + replica 2+0) = {total} connections" in line
    assert f"max_connections={server_max}" in line
    # The pools the check itself used, in the command's own process.
    assert row(text, "vendor") == ["postgresql", "postgresql"]
    assert row(text, "checkouts") == ["1", "1"]

    as_json = manage(tmp_path, pg_driver, databases, "--check", "--workers", "4", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    (capacity_json,) = data["capacity"]["servers"]
    assert capacity_json["max_connections"] == server_max
    assert (capacity_json["per_process"], capacity_json["total"]) == (12, total)
    assert capacity_json["verdict"] == verdict
    assert [c["max_connections"] for c in data["checks"]] == [server_max, server_max]
    assert {d["user"] for d in data["databases"]} == {pg.user}


@pytest.mark.postgresql
def test_exceeding_max_connections_is_a_warning(
    pg: PgServer, pg_database: str, tmp_path: Path
) -> None:
    databases = {"default": pg_settings(pg, pg_database, POOL_SIZE=100, MAX_OVERFLOW=100)}
    proc = manage(tmp_path, "psycopg", databases, "--check", "--workers", "50", "--json")
    assert proc.returncode == 0, proc.stderr  # the check passed; the verdict warns
    (server,) = json.loads(proc.stdout)["capacity"]["servers"]
    assert server["verdict"] == "exceeds"
    assert server["total"] == 50 * 200
    assert server["message"].startswith("WARNING: ")


@pytest.mark.postgresql
def test_unreachable_server_fails_the_check(pg: PgServer, tmp_path: Path) -> None:
    db = pg_settings(pg, "postgres")
    db.update(PORT=1, OPTIONS={"connect_timeout": 2})
    proc = manage(tmp_path, "psycopg", {"default": db}, "--check")
    assert proc.returncode == 1
    assert row(proc.stdout, "result") == ["FAILED"]
    assert "CommandError: django_sapool: live check failed for alias 'default'" in proc.stderr
    plain = manage(tmp_path, "psycopg", {"default": db})
    assert plain.returncode == 0, plain.stderr  # without --check nothing connects


@pytest.fixture(params=["mysqlclient", "pymysql"])
def mysql_driver(request: pytest.FixtureRequest) -> str:
    pytest.importorskip("MySQLdb" if request.param == "mysqlclient" else str(request.param))
    return str(request.param)


@pytest.mark.mysql
def test_check_workers_on_mysql(
    mysql: MySQLServer, mysql_database: str, mysql_driver: str, tmp_path: Path
) -> None:
    with mysql_admin_cursor(mysql) as cursor:
        cursor.execute("SELECT @@max_connections, VERSION()")
        server_max, version = cursor.fetchone()
    databases = {"default": mysql.settings(mysql_database, POOL_OPTIONS={"POOL_SIZE": 3})}
    proc = manage(tmp_path, mysql_driver, databases, "--check", "--workers", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (check,) = data["checks"]
    assert check["ok"] is True
    assert check["max_connections"] == int(server_max)
    assert version in check["server_version"]
    assert check["connections_in_use"] >= 1
    (server,) = data["capacity"]["servers"]
    assert server["server"] == f"mysql {mysql.host}:{mysql.port}"
    assert (server["per_process"], server["total"]) == (13, 52)
    assert server["verdict"] == expected_verdict(52, int(server_max))
    text = manage(tmp_path, mysql_driver, databases, "--check", "--workers", "4").stdout
    assert row(text, "max_connections") == [str(server_max)]
    assert row(text, "vendor") == ["mysql"]


# -- pool_status() sizes against the server's own count, in this process ----------------


#: Seconds any single step may take before the test gives up on it.
STEP = 10.0


class PgHolder:
    """A thread that checks out a connection of its own wrapper and keeps it until released."""

    def __init__(self, settings_dict: dict[str, Any]) -> None:
        from django_sapool.backends.postgresql.base import DatabaseWrapper

        self.done = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            wrapper = DatabaseWrapper(settings_dict, "default")
            try:
                wrapper.ensure_connection()
            except BaseException as exc:
                self.error = exc
            self.done.set()
            self.release.wait(STEP)
            wrapper.close()

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.thread.join(STEP)


def pg_sessions(pg: PgServer, app_name: str) -> int:
    import psycopg

    with psycopg.connect(pg.conninfo(pg.admin_db)) as admin:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        return int(admin.execute(sql, [app_name]).fetchone()[0])  # type: ignore[index]


@pytest.fixture
def pools() -> Iterator[None]:
    """No pool of this process before the test, none after it."""
    registry.dispose()
    yield
    registry.dispose()


@pytest.mark.postgresql
@pytest.mark.usefixtures("pools")
def test_status_sizes_are_the_servers_sessions_after_evict(pg: PgServer, pg_database: str) -> None:
    """Overflow is the open connections beyond POOL_SIZE, not the records SQLAlchemy keeps."""
    app_name = f"sapool-status-{uuid.uuid4().hex[:10]}"
    settings_dict = filled(
        **pg.settings(pg_database, app_name, POOL_OPTIONS={"POOL_SIZE": 2, "MAX_OVERFLOW": 2})
    )
    holders = [PgHolder(settings_dict) for _ in range(4)]
    try:
        assert all(h.done.wait(STEP) and h.error is None for h in holders)
        (pool,) = registry.status()
        assert (pool.size, pool.checked_out, pool.overflow) == (4, 4, 2)
        assert pg_sessions(pg, app_name) == 4
        django_sapool.evict()
        for holder in holders[:2]:
            holder.stop()  # closed when returned
        (pool,) = registry.status()
        assert pg_sessions(pg, app_name) == 2
        assert (pool.size, pool.checked_out, pool.idle, pool.overflow) == (2, 2, 0, 0)
    finally:
        for holder in holders:
            holder.stop()
    (pool,) = registry.status()
    assert (pool.size, pool.overflow, pool.connections_closed) == (0, 0, 4)
    assert pg_sessions(pg, app_name) == 0
    # A request now connects one of the records evict() emptied: a new
    # connection, not a recycled one (RECYCLE never passed; evictions says why).
    fresh = PgHolder(settings_dict)
    try:
        assert fresh.done.wait(STEP) and fresh.error is None
    finally:
        fresh.stop()
    (pool,) = registry.status()
    assert (pool.connections_opened, pool.connections_recycled, pool.evictions) == (5, 0, 1)


@pytest.mark.postgresql
@pytest.mark.usefixtures("pools")
def test_status_lists_a_disposed_pool_while_its_connections_are_out(
    pg: PgServer, pg_database: str
) -> None:
    """dispose() while 2 threads hold connections; then a new checkout on the alias's new pool.

    The server had 3 sessions and pool_status() showed 1 (the new pool's):
    the disposed pool, whose 2 lent connections stay open until returned,
    was no longer listed, nor counted in Prometheus.
    """
    from prometheus_client import CollectorRegistry

    from django_sapool import prometheus

    app_name = f"sapool-disposed-{uuid.uuid4().hex[:10]}"
    settings_dict = filled(
        **pg.settings(pg_database, app_name, POOL_OPTIONS={"POOL_SIZE": 3, "MAX_OVERFLOW": 0})
    )
    metrics = CollectorRegistry()
    prometheus.register(metrics)
    holders = [PgHolder(settings_dict) for _ in range(2)]
    fresh: PgHolder | None = None
    try:
        assert all(h.done.wait(STEP) and h.error is None for h in holders)
        django_sapool.dispose()
        fresh = PgHolder(settings_dict)
        assert fresh.done.wait(STEP) and fresh.error is None
        assert pg_sessions(pg, app_name) == 3
        now, disposed = registry.status()
        assert (now.disposed, now.size, now.checked_out) == (False, 1, 1)
        assert (disposed.disposed, disposed.size, disposed.checked_out) == (True, 2, 2)
        labels = {"alias": "default", "vendor": "postgresql", "database": pg_database}
        assert metrics.get_sample_value("django_sapool_connections_open", labels) == 3
        assert metrics.get_sample_value("django_sapool_connections_checked_out", labels) == 3
        for holder in holders:
            holder.stop()  # returned to the disposed pool: closed
        assert pg_sessions(pg, app_name) == 1
        (only,) = registry.status()
        assert (only.disposed, only.size) == (False, 1)
        assert metrics.get_sample_value("django_sapool_connections_open", labels) == 1
    finally:
        for holder in [*holders, *([fresh] if fresh else [])]:
            holder.stop()


@pytest.mark.postgresql
@pytest.mark.usefixtures("pools")
def test_a_disposed_pools_connection_whose_wrapper_died_is_closed(
    pg: PgServer, pg_database: str
) -> None:
    """A wrapper is dropped without close() holding a connection of a pool disposed meanwhile.

    Only the live pools were asked to take back a dead wrapper's connections:
    the disposed pool's stayed open, its server session for the process's life.
    """
    import gc

    from django_sapool.backends.postgresql.base import DatabaseWrapper

    app_name = f"sapool-dead-{uuid.uuid4().hex[:10]}"
    settings_dict = filled(**pg.settings(pg_database, app_name))
    wrapper = DatabaseWrapper(settings_dict, "default")
    wrapper.ensure_connection()
    django_sapool.dispose()
    assert [(s.disposed, s.checked_out) for s in registry.status()] == [(True, 1)]
    assert pg_sessions(pg, app_name) == 1
    del wrapper
    gc.collect()
    assert pg_sessions(pg, app_name) == 0
    assert registry.status() == []


@pytest.mark.postgresql
@pytest.mark.usefixtures("pools")
def test_status_while_the_server_is_silent_counts_no_connection(pg: PgServer) -> None:
    """Checkouts waiting on a server that never answers (up to CONNECT_TIMEOUT) are connecting."""
    pytest.importorskip("psycopg")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts TCP connections, never answers them
    settings_dict = filled(
        **pg.settings(
            "sapool_silent",
            "sapool-silent",
            PORT=silent.getsockname()[1],
            POOL_OPTIONS={"POOL_SIZE": 2, "MAX_OVERFLOW": 2, "CONNECT_TIMEOUT": 5},
        )
    )
    holders = [PgHolder(settings_dict) for _ in range(3)]
    try:
        deadline = time.monotonic() + STEP
        while time.monotonic() < deadline and [p.connecting for p in registry.status()] != [3]:
            time.sleep(0.01)
        (pool,) = registry.status()
        assert pool.connecting == 3
        assert (pool.size, pool.checked_out, pool.idle, pool.overflow) == (0, 0, 0, 0)
        assert pool.connections_opened == 0
    finally:
        silent.close()  # the waiting connects are reset: they fail at once
        for holder in holders:
            holder.stop()
    assert all(isinstance(h.error, OperationalError) for h in holders)
    (pool,) = registry.status()
    assert (pool.size, pool.checked_out, pool.connecting) == (0, 0, 0)
