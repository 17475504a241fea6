"""The one table of backends, and the vendor SQL each backend asks its server."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from django_sapool.backends import (
    BACKENDS,
    GENERIC,
    PREFIX,
    Backend,
    ServerFacts,
    backend_for,
    ours_for,
)
from django_sapool.wrapper import PooledDatabaseWrapperMixin
from tests.unit.pools import write_backend
from tests.unit.test_hot_path import _statements

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "django_sapool" / "backends"


def test_the_table_lists_every_backend_package_once() -> None:
    # The generic ENGINE is no vendor's: backend_for() asks its settings.
    packages = {p.parent.name for p in PACKAGE.glob("*/base.py")} - {GENERIC.removeprefix(PREFIX)}
    assert sorted(b.engine.removeprefix(PREFIX) for b in BACKENDS) == sorted(packages)
    assert len({b.extends for b in BACKENDS}) == len(BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.engine.removeprefix(PREFIX))
def test_each_backend_is_what_the_table_says(backend: Backend) -> None:
    ours = import_module(f"{backend.engine}.base").DatabaseWrapper
    django = import_module(f"{backend.extends}.base").DatabaseWrapper
    assert issubclass(ours, django) and issubclass(ours, PooledDatabaseWrapperMixin)
    assert ours.vendor == backend.vendor
    assert backend.is_sqlite == (backend.default_port is None)
    assert callable(ours.sapool_server_facts)
    assert backend_for(backend.engine) is backend
    assert ours_for(backend.extends) is backend


def test_the_readme_and_the_migration_guide_list_the_same_backends() -> None:
    table = {(b.engine, b.extends) for b in BACKENDS}
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(django_sapool\.backends\.\w+)` \| `([\w.]+)` \|", readme, re.M)
    assert set(rows) == table
    guide = (ROOT / "docs" / "migration.md").read_text()
    section = guide[guide.index("<!-- doc-test: mapping -->") :]
    section = section[: section.index("\n\n")]
    mapped = re.findall(r"^\| `([\w.]+)` \| `(django_sapool\.backends\.\w+)`", section, re.M)
    assert {(ours, django) for django, ours in mapped} == table


@pytest.mark.parametrize(
    "engine",
    ["", None, 3, "django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"]
    + ["django_sapool.backends.oracle", "no_such_module", "django.contrib.auth"],
)
def test_not_ours(engine: object) -> None:
    assert backend_for(engine) is None


def test_ours_for_djangos_own_only() -> None:
    assert ours_for("django.contrib.gis.db.backends.mysql") == backend_for(
        "django_sapool.backends.mysql_gis"
    )
    assert ours_for("django.db.backends.oracle") is None
    assert ours_for(None) is None


def test_a_projects_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    subclass = write_backend(
        tmp_path,
        "project_spatial",
        "from django_sapool.backends.spatialite.base import DatabaseWrapper as Base\n"
        "class DatabaseWrapper(Base):\n    pass\n",
    )
    assert backend_for(subclass) is backend_for("django_sapool.backends.spatialite")
    mixin_only = write_backend(
        tmp_path,
        "project_mixin",
        "from django.db.backends.mysql import base\n"
        "from django_sapool.wrapper import PooledDatabaseWrapperMixin\n"
        "class DatabaseWrapper(PooledDatabaseWrapperMixin, base.DatabaseWrapper):\n    pass\n",
    )
    assert backend_for(mixin_only) == Backend("project_mixin", "mysql", "", (), 3306)
    plain = write_backend(
        tmp_path,
        "project_plain",
        "from django.db.backends.sqlite3.base import DatabaseWrapper\n",
    )
    assert backend_for(plain) is None


class FakeCursor:
    """Answers each statement with the next scripted row; remembers the statements."""

    def __init__(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.rows = list(rows)
        self.statements: list[str] = []

    def execute(self, sql: str) -> None:
        self.statements.append(sql)

    def fetchone(self) -> tuple[Any, ...]:
        return self.rows.pop(0)


def test_postgresql_facts() -> None:
    from django_sapool.backends.postgresql.base import PostgresPoolMixin

    cursor = FakeCursor([("17.2",), ("100",), (7,)])
    facts = PostgresPoolMixin.sapool_server_facts(None, cursor)  # type: ignore[arg-type]
    assert facts == ServerFacts("PostgreSQL 17.2", 100, 7)
    assert cursor.statements == [
        "SHOW server_version",
        "SHOW max_connections",
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
    ]


@pytest.mark.parametrize(
    ("version", "shown"),
    [("10.11.6-MariaDB-0+deb12u1", "10.11.6-MariaDB-0+deb12u1"), ("8.4.3", "MySQL 8.4.3")],
)
def test_mysql_facts(version: str, shown: str) -> None:
    from django_sapool.backends.mysql.base import MySQLPoolMixin

    cursor = FakeCursor([(version, 151), ("Threads_connected", "4")])
    facts = MySQLPoolMixin.sapool_server_facts(None, cursor)  # type: ignore[arg-type]
    assert facts == ServerFacts(shown, 151, 4)
    assert cursor.statements == [
        "SELECT VERSION(), @@max_connections",
        "SHOW GLOBAL STATUS LIKE 'Threads_connected'",
    ]


def test_sqlite_facts() -> None:
    wrapper = connections["default"]
    with wrapper.cursor() as cursor:
        facts = wrapper.sapool_server_facts(cursor)  # type: ignore[attr-defined]
    assert facts == ServerFacts(f"SQLite {sqlite3.sqlite_version}", None, None)
    wrapper.close()


def test_djangos_mysql_get_new_connection_is_the_one_the_pool_repeats() -> None:
    """MySQLPoolMixin.sapool_new_connection() opens mysqlclient connections itself.

    It repeats what Django's get_new_connection() does after Database.connect()
    (4.2 to 5.2: drop the bytes encoder; 6.x: nothing). A Django release that
    adds a step fails here instead of the pool skipping it.
    """
    django_mysql = import_module("django.db.backends.mysql.base")
    statements = _statements(django_mysql.DatabaseWrapper.get_new_connection.__wrapped__)
    assert statements in (
        [
            "connection = Database.connect(**conn_params)",
            "if connection.encoders.get(bytes) is bytes:\n    connection.encoders.pop(bytes)",
            "return connection",
        ],
        ["connection = Database.connect(**conn_params)", "return connection"],
    ), (
        "Django's MySQL get_new_connection() changed: bring "
        "django_sapool.backends.mysql.base.MySQLPoolMixin.sapool_new_connection() in line."
    )


def test_mysqlclient_asks_get_server_info_between_the_login_and_its_statements() -> None:
    """The deadline on mysqlclient's own setup is armed by get_server_info() (drivers/mysql.py).

    Its Connection.__init__ logs in (``super().__init__``), asks the server
    version (local), then sends SET NAMES (``set_character_set``) and the
    autocommit mode: a mysqlclient release that reorders them fails here.
    """
    connections_module = pytest.importorskip("MySQLdb.connections")
    statements = _statements(connections_module.Connection.__init__)

    def first(text: str) -> int:
        return next(i for i, statement in enumerate(statements) if text in statement)

    login = first("super().__init__(")
    assert login < first("self.get_server_info()") < first("self.set_character_set(")
    assert first("self.set_character_set(") < first("self.autocommit(")
