"""Fixtures of the fault tests: servers of our own, a database per test, child apps.

The servers are started once per session (only if a test needs them), on
127.0.0.1 and free ports, and destroyed at the end whatever happened; the
machine's shared servers are never touched. If one cannot be started,
``unavailable()`` skips its tests locally and fails them under CI.

``target`` is one (server, driver) combination with a fresh database; its
``child()`` starts a Django process configured for that database (see
``child.py``), and every child is ended and the database dropped at teardown.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import unavailable

from .harness import REPORTS, Child
from .servers import Instance, ServerError, cleanup_stale, launch

#: The pool every scenario uses unless it says otherwise.
POOL = {"POOL_SIZE": 4, "MAX_OVERFLOW": 2}

#: id -> (vendor, driver)
TARGETS = {
    "postgresql-psycopg": ("postgresql", "psycopg"),
    "postgresql-psycopg2": ("postgresql", "psycopg2"),
    "mysql-mysqlclient": ("mysql", "mysqlclient"),
    "mysql-pymysql": ("mysql", "pymysql"),
}

#: Django's own backends, for the stock baselines (CONN_MAX_AGE=0, connect_timeout).
STOCK_ENGINES = {
    "postgresql": "django.db.backends.postgresql",
    "mysql": "django.db.backends.mysql",
}


def target_param(name: str) -> Any:
    vendor, _ = TARGETS[name]
    return pytest.param(name, id=name, marks=getattr(pytest.mark, vendor))


#: PostgreSQL with psycopg 3 and MariaDB with mysqlclient: every scenario.
BOTH = [target_param("postgresql-psycopg"), target_param("mysql-mysqlclient")]
#: Plus PostgreSQL with psycopg2: the restart scenarios.
ALL_DRIVERS = [*BOTH, target_param("postgresql-psycopg2")]
#: All four drivers.
FOUR_DRIVERS = [*ALL_DRIVERS, target_param("mysql-pymysql")]


def _instance(vendor: str) -> Iterator[Instance]:
    cleanup_stale()
    try:
        instance = launch(vendor)
    except ServerError as exc:
        unavailable(f"could not start a {vendor} server of our own: {exc}")
    try:
        yield instance
    finally:
        instance.destroy()


@pytest.fixture(scope="session")
def pg_instance() -> Iterator[Instance]:
    """A PostgreSQL 15 of our own, for the whole session."""
    yield from _instance("postgresql")


@pytest.fixture(scope="session")
def mariadb_instance() -> Iterator[Instance]:
    """A MariaDB 10.11 of our own, for the whole session."""
    yield from _instance("mysql")


def ensure_up(server: Instance) -> None:
    """Start the server again if an earlier (failed) test left it stopped."""
    if not server.running():
        server.start()
    server.wait_accepting()


@dataclass
class Target:
    """One server and driver, a fresh database, and the child apps started on it."""

    server: Instance
    vendor: str
    driver: str
    dbname: str
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def child(
        self,
        pool_options: dict[str, Any] | None = None,
        connect_timeout: int | None = None,
        stock: bool = False,
        prefix: Sequence[str] = (),
        gevent: bool = False,
        **overrides: Any,
    ) -> Child:
        """Start a Django child on this target's database (POOL unless overridden).

        ``stock``: Django's own backend (CONN_MAX_AGE=0), the baseline.
        ``overrides``: settings such as HOST/PORT (a proxy's), USER, PASSWORD.
        ``prefix``: run the child under this command (a network namespace).
        ``gevent``: the child monkey-patches with gevent first.
        """
        options: dict[str, Any] = {}
        if connect_timeout is not None:
            options["connect_timeout"] = connect_timeout
        db = self.server.settings(
            self.dbname, OPTIONS=options, POOL_OPTIONS={**POOL, **(pool_options or {})}
        )
        db.update(overrides)
        if stock:
            db["ENGINE"] = STOCK_ENGINES[self.vendor]
            del db["POOL_OPTIONS"]
        log = self.log_dir / f"child-{len(self.children)}.log"
        config = {"driver": self.driver, "databases": {"default": db}, "gevent": gevent}
        child = Child(config, log, prefix=prefix)
        self.children.append(child)
        facts = child.call("setup")
        expected = {"mysqlclient": "MySQLdb"}.get(self.driver, self.driver)
        assert (facts["driver"], facts["gevent"]) == (expected, gevent), facts
        return child


@pytest.fixture(params=BOTH)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    vendor, driver = TARGETS[request.param]
    module = {
        "psycopg": "psycopg",
        "psycopg2": "psycopg2",
        "mysqlclient": "MySQLdb",
        "pymysql": "pymysql",
    }[driver]
    try:
        __import__(module)
    except ImportError as exc:
        unavailable(f"{driver} is not installed: {exc}")
    server: Instance = request.getfixturevalue(
        "pg_instance" if vendor == "postgresql" else "mariadb_instance"
    )
    ensure_up(server)
    dbname = f"fault_{uuid.uuid4().hex[:10]}"
    server.create_database(dbname)
    target = Target(server, vendor, driver, dbname, tmp_path)
    try:
        yield target
    finally:
        for child in target.children:
            child.close()
        ensure_up(server)
        server.drop_database(dbname)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show every FAULT-REPORT of the session at the end, even when output is captured."""
    if REPORTS:
        terminalreporter.section("fault-injection report")
        for entry in REPORTS:
            terminalreporter.write_line("FAULT-REPORT " + json.dumps(entry, default=str))
