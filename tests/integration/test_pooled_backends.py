"""Pooling another backend, against real servers: the generic ENGINE and a project's module.

Both ways of pooling a backend that is not one of our six (README, "Pooling
another backend"), with Django's own backends as the wrapped ones:

- ``generic``: ``ENGINE = "django_sapool.backends.pooled"`` with
  ``POOL_OPTIONS["BACKEND"] = "django.db.backends.<vendor>"``;
- ``recipe``: ``ENGINE = "tests.integration.recipe.<vendor>"``, a module whose
  DatabaseWrapper is ``django_sapool.pooled_wrapper("django.db.backends.<vendor>")``.

Each runs in its own Django process (``child.py``) on PostgreSQL (psycopg 3 and
psycopg2), MariaDB (mysqlclient and PyMySQL) and SQLite. Pooling shows on the
server: sequential requests are served by one server session (the same backend
pid), and 16 threads never have more sessions open than POOL_SIZE.
"""

from __future__ import annotations

from typing import Any

import pytest

WAYS = ["generic", "recipe"]
POOL = {"POOL_SIZE": 3, "MAX_OVERFLOW": 0, "TIMEOUT": 60}


def engine(way: str, vendor: str, **pool_options: Any) -> dict[str, Any]:
    """ENGINE and POOL_OPTIONS settings that pool Django's ``vendor`` backend ``way``."""
    if way == "generic":
        pool_options["BACKEND"] = f"django.db.backends.{vendor}"
        return {"engine": "django_sapool.backends.pooled", "POOL_OPTIONS": pool_options}
    return {"engine": f"tests.integration.recipe.{vendor}", "POOL_OPTIONS": pool_options}


def sqlite_engine(way: str, **pool_options: Any) -> dict[str, Any]:
    settings = engine(way, "sqlite3", **pool_options)
    return {"ENGINE": settings.pop("engine"), **settings}


def one_pool(facts: dict[str, Any], vendor: str) -> dict[str, Any]:
    (pool,) = facts["pools"]
    assert (pool["alias"], pool["vendor"], pool["checked_out"]) == ("default", vendor, 0)
    return pool  # type: ignore[no-any-return]


def assert_sequential(facts: dict[str, Any], vendor: str) -> None:
    assert facts["failures"] == 0
    assert facts["distinct"] == 1, facts.get("server_pids")
    if vendor != "sqlite":
        assert facts["server_sessions"] == 1
    pool = one_pool(facts, vendor)
    # + 1: the child's setup (CREATE TABLE) checked out first.
    assert (pool["connections_opened"], pool["checkouts"], pool["idle"]) == (1, 100 + 1, 1)


def assert_threads(facts: dict[str, Any], vendor: str) -> None:
    assert (facts["ok"], facts["failed"]) == (16 * 20, 0)
    if vendor != "sqlite":
        assert 1 <= facts["peak_server_sessions"] <= POOL["POOL_SIZE"]
    assert 1 <= facts["distinct"] <= POOL["POOL_SIZE"]
    pool = one_pool(facts, vendor)
    assert pool["connections_opened"] <= POOL["POOL_SIZE"]
    assert pool["checkouts"] == 16 * 20 + 1


@pytest.mark.postgresql
@pytest.mark.parametrize("way", WAYS)
def test_postgresql(pg_run: Any, way: str) -> None:
    assert_sequential(
        pg_run("sequential", params={"n": 100}, **engine(way, "postgresql")), "postgresql"
    )
    facts = pg_run(
        "threads", params={"n_threads": 16, "cycles": 20}, **engine(way, "postgresql", **POOL)
    )
    assert_threads(facts, "postgresql")


@pytest.mark.mysql
@pytest.mark.parametrize("way", WAYS)
def test_mysql(mysql_run: Any, way: str) -> None:
    assert_sequential(mysql_run("sequential", params={"n": 100}, **engine(way, "mysql")), "mysql")
    facts = mysql_run(
        "threads", params={"n_threads": 16, "cycles": 20}, **engine(way, "mysql", **POOL)
    )
    assert_threads(facts, "mysql")


@pytest.mark.mysql
def test_mysql_session_setup_is_redone_after_a_reset(mysql_run: Any) -> None:
    """Vendor specifics come from the wrapped backend: Django's isolation level comes back."""
    facts = mysql_run(
        "session_state",
        **engine("generic", "mysql", POOL_SIZE=1, MAX_OVERFLOW=0, RESET_ON_RETURN="reset"),
    )
    assert facts["pid"] == facts["dirty_pid"]  # the same server session (COM_RESET_CONNECTION)
    assert (facts["user_variable"], facts["temp_table"]) == (None, False)
    assert (facts["sql_auto_is_null"], facts["isolation"]) == (0, "READ-COMMITTED")


@pytest.mark.parametrize("way", WAYS)
def test_sqlite(sqlite_run: Any, way: str) -> None:
    assert_sequential(sqlite_run("sequential", params={"n": 100}, **sqlite_engine(way)), "sqlite")
    facts = sqlite_run(
        "threads", params={"n_threads": 16, "cycles": 20}, **sqlite_engine(way, **POOL)
    )
    assert_threads(facts, "sqlite")
