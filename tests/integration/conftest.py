"""Real servers for integration tests: URLs from the environment, databases of our own.

SAPOOL_PG_URL names an admin connection (default: this machine's trust-auth
postgres). Each test session creates its own database and drops it at the end.
Under CI=true a missing server fails the run instead of skipping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("SAPOOL_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Fail under CI (a missing server is a broken run), skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing server fails the run)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    admin_db: str

    def conninfo(self, dbname: str) -> str:
        parts = [f"host={self.host}", f"port={self.port}", f"user={self.user}", f"dbname={dbname}"]
        if self.password:
            parts.append(f"password={self.password}")
        return " ".join(parts)

    def settings(self, dbname: str, app_name: str, **extra: Any) -> dict[str, Any]:
        # application_name is how a test finds its own server sessions: kept
        # whatever OPTIONS the test adds.
        options = {"application_name": app_name, **extra.pop("OPTIONS", {})}
        return {
            "ENGINE": "django_sapool.backends.postgresql",
            "NAME": dbname,
            "USER": self.user,
            "PASSWORD": self.password,
            "HOST": self.host,
            "PORT": self.port,
            "OPTIONS": options,
            **extra,
        }


@pytest.fixture(scope="session")
def pg() -> PgServer:
    url = urlsplit(PG_URL)
    server = PgServer(
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        user=unquote(url.username or "postgres"),
        password=unquote(url.password or ""),
        admin_db=url.path.lstrip("/") or "postgres",
    )
    import psycopg

    try:
        psycopg.connect(server.conninfo(server.admin_db), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {server.host}:{server.port} is unreachable: {exc}")
    return server


def _admin(pg: PgServer, dbname: str | None = None) -> Any:
    """An autocommit psycopg connection as the admin user (to ``dbname``, or the admin db)."""
    import psycopg

    return psycopg.connect(pg.conninfo(dbname or pg.admin_db), autocommit=True)


@contextmanager
def own_pg_database(pg: PgServer, prefix: str) -> Iterator[str]:
    """Create a database of our own; drop it at the end.

    pg_stat_statements, the statement counter, is created in it and in the
    admin database (the scenarios read it from either); it must be preloaded
    (scripts/ensure-postgres does it).
    """
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin(pg) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    with _admin(pg, name) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    try:
        yield name
    finally:
        with _admin(pg) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [name],
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def pg_database(pg: PgServer) -> Iterator[str]:
    """A database of our own for the whole session, dropped at the end."""
    with own_pg_database(pg, "sapool_it") as name:
        yield name


def run_child(
    config: dict[str, Any],
    timeout: float = 300,
    module: str = "tests.integration.child",
    env_var: str = "SAPOOL_CHILD",
) -> dict[str, Any]:
    """Run one scenario in a fresh Django process and return its facts.

    The child module reads its JSON config from ``env_var`` and prints its facts
    as JSON on a line starting with ``SAPOOL-RESULT``.
    """
    env = {**os.environ, env_var: json.dumps(config)}
    proc = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SAPOOL-RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"scenario {config.get('scenario')} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    facts: dict[str, Any] = json.loads(lines[-1].removeprefix("SAPOOL-RESULT "))
    facts["stderr"] = proc.stderr
    return facts


@pytest.fixture(scope="session")
def django_tests() -> None:
    """Django's own tests, fetched once into .django-tests/ (suite_runs.py runs them)."""
    from .suite_runs import fetch

    fetch()


@pytest.fixture(params=["psycopg", "psycopg2"])
def pg_run(request: pytest.FixtureRequest, pg: PgServer, pg_database: str) -> Any:
    """Run a scenario against PostgreSQL with psycopg 3, then with psycopg2."""
    driver: str = request.param
    pytest.importorskip(driver)

    def run(
        scenario: str,
        engine: str = "django_sapool.backends.postgresql",
        params: dict[str, Any] | None = None,
        **db_settings: Any,
    ) -> dict[str, Any]:
        app_name = f"sapool-{uuid.uuid4().hex[:12]}"
        db = pg.settings(pg_database, app_name, ENGINE=engine, **db_settings)
        facts = run_child(
            {
                "driver": driver,
                "scenario": scenario,
                "params": params or {},
                "databases": {"default": db},
                "app_name": app_name,
                "dbname": pg_database,
                "admin_conninfo": pg.conninfo(pg.admin_db),
                "test_conninfo": pg.conninfo(pg_database),
            }
        )
        assert facts["driver"] == driver
        return facts

    return run


MYSQL_URL = os.environ.get("SAPOOL_MYSQL_URL", "mysql://root@127.0.0.1:3306/")


@dataclass(frozen=True)
class MySQLServer:
    host: str
    port: int
    user: str
    password: str

    def conninfo(self, dbname: str | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        if dbname:
            info["database"] = dbname
        return info

    def settings(self, dbname: str, **extra: Any) -> dict[str, Any]:
        return {
            "ENGINE": "django_sapool.backends.mysql",
            "NAME": dbname,
            "USER": self.user,
            "PASSWORD": self.password,
            "HOST": self.host,
            "PORT": self.port,
            **extra,
        }


@pytest.fixture(scope="session")
def mysql() -> MySQLServer:
    url = urlsplit(MYSQL_URL)
    server = MySQLServer(
        host=url.hostname or "127.0.0.1",
        port=url.port or 3306,
        user=unquote(url.username or "root"),
        password=unquote(url.password or ""),
    )
    try:
        import MySQLdb
    except ImportError as exc:
        unavailable(f"mysqlclient is not installed: {exc}")
    try:
        MySQLdb.connect(**server.conninfo(), connect_timeout=5).close()
    except MySQLdb.OperationalError as exc:
        unavailable(f"MySQL/MariaDB at {server.host}:{server.port} is unreachable: {exc}")
    return server


def _mysql_admin(mysql: MySQLServer) -> Any:
    import MySQLdb

    conn = MySQLdb.connect(**mysql.conninfo())
    conn.autocommit(True)
    return conn


@contextmanager
def mysql_admin_cursor(mysql: MySQLServer) -> Iterator[Any]:
    """A cursor on an autocommit admin connection (mysqlclient), closed at the end."""
    conn = _mysql_admin(mysql)
    try:
        yield conn.cursor()
    finally:
        conn.close()


@pytest.fixture
def mysql_database(mysql: MySQLServer) -> Iterator[str]:
    """A fresh database per test: our sessions are found by database name."""
    name = f"sapool_it_{uuid.uuid4().hex[:10]}"
    conn = _mysql_admin(mysql)
    try:
        conn.cursor().execute(f"CREATE DATABASE `{name}`")
        yield name
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(params=["mysqlclient", "pymysql"])
def mysql_run(request: pytest.FixtureRequest, mysql: MySQLServer, mysql_database: str) -> Any:
    """Run a scenario against MySQL with mysqlclient, then PyMySQL installed as MySQLdb."""
    driver: str = request.param
    pytest.importorskip("MySQLdb" if driver == "mysqlclient" else driver)

    def run(
        scenario: str,
        engine: str = "django_sapool.backends.mysql",
        params: dict[str, Any] | None = None,
        **db_settings: Any,
    ) -> dict[str, Any]:
        db = mysql.settings(mysql_database, ENGINE=engine, **db_settings)
        return run_child(
            {
                "driver": driver,
                "scenario": scenario,
                "params": params or {},
                "databases": {"default": db},
                "dbname": mysql_database,
                "admin_conninfo": mysql.conninfo(),
                "test_conninfo": mysql.conninfo(mysql_database),
            }
        )

    return run


@pytest.fixture
def sqlite_run(tmp_path: Path) -> Any:
    def run(scenario: str, params: dict[str, Any] | None = None, **db_settings: Any) -> Any:
        db = {
            "ENGINE": "django_sapool.backends.sqlite3",
            "NAME": str(tmp_path / "db.sqlite3"),
            **db_settings,
        }
        return run_child(
            {"scenario": scenario, "params": params or {}, "databases": {"default": db}}
        )

    return run
