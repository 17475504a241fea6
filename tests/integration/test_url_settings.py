"""Settings from a database URL, on real servers: ours, dj-database-url's and django-environ's.

Each case runs in a child Django process (tests/integration/url_child.py) that reads
DATABASE_URL the way a project's settings do, builds DATABASES with one recipe,
and runs one of child.py's scenarios through Django's WSGI handler: the pool
options must show in the live pool (pool_status, its options) and in what the
server sees (sessions in pg_stat_activity or MariaDB's processlist).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from django_sapool.backends import GENERIC

from .conftest import MySQLServer, PgServer, run_child

PG_ENGINE = "django_sapool.backends.postgresql"
MYSQL_ENGINE = "django_sapool.backends.mysql"
# Trust authentication ignores it, but it travels through every recipe: it must
# never appear in the child's output.
URL_PASSWORD = "url-pw-7Hq2"
POOL = {"POOL_SIZE": 2, "MAX_OVERFLOW": 0, "TIMEOUT": 5}
POOL_QUERY = "pool_size=2&max_overflow=0&timeout=5"
THREADS, CYCLES = 8, 25


def run_url(
    recipe: str, url: str, scenario: str, child: dict[str, Any], **params: Any
) -> dict[str, Any]:
    engine = PG_ENGINE if url.startswith("postgres") else MYSQL_ENGINE
    if url.startswith("sqlite"):
        engine = "django_sapool.backends.sqlite3"
    facts = run_child(
        {
            "recipe": recipe,
            "url": url,
            "engine": engine,
            "pool_options": POOL if recipe != "ours" else {},
            "scenario": scenario,
            "params": params,
            "child": child,
        },
        timeout=120,
        module="tests.integration.url_child",
        env_var="SAPOOL_URL_CHILD",
    )
    return facts


def server_url(
    scheme: str, server: PgServer | MySQLServer, password: str, dbname: str, *params: str
) -> str:
    """The URL of `dbname` on `server`, user and password quoted; the non-empty `params`
    (a recipe's own, then the test's) joined into its query."""
    auth = quote(server.user) + (f":{quote(password)}" if password else "")
    query = "&".join(p for p in params if p)
    return f"{scheme}://{auth}@{server.host}:{server.port}/{dbname}?{query}"


def assert_capped(facts: dict[str, Any], size: int, timeout: float = 5.0) -> None:
    """All requests served, by at most `size` server sessions, with the URL's options live."""
    assert (facts["ok"], facts["failed"]) == (THREADS * CYCLES, 0)
    assert 1 <= facts["distinct"] <= size
    assert [(p["pool_size"], p["max_overflow"]) for p in facts["pools"]] == [(size, 0)]
    assert [o["TIMEOUT"] for o in facts["live_options"]] == [timeout]


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture(params=["psycopg", "psycopg2"])
def pg_url(request: pytest.FixtureRequest, pg: PgServer, pg_database: str) -> Any:
    """Run a URL recipe against PostgreSQL with one driver; sessions found by app name."""
    driver: str = request.param
    pytest.importorskip(driver)

    def run(recipe: str, query: str, scenario: str = "threads", **params: Any) -> Any:
        app_name = f"sapool-url-{uuid.uuid4().hex[:10]}"
        url = server_url(
            "postgres", pg, URL_PASSWORD, pg_database, f"application_name={app_name}", query
        )
        child = {
            "driver": driver,
            "app_name": app_name,
            "dbname": pg_database,
            "admin_conninfo": pg.conninfo(pg.admin_db),
            "test_conninfo": pg.conninfo(pg_database),
        }
        facts = run_url(recipe, url, scenario, child, **params)
        assert URL_PASSWORD not in facts["stderr"]
        assert facts["driver"] == driver
        return facts

    return run


@pytest.mark.postgresql
@pytest.mark.parametrize("recipe", ["ours", "dj_database_url", "environ"])
def test_postgresql_from_url(pg_url: Any, recipe: str) -> None:
    facts = pg_url(recipe, POOL_QUERY if recipe == "ours" else "", "threads", **_threads())
    assert facts["handler_settings"]["ENGINE"] == PG_ENGINE
    # application_name reached libpq through OPTIONS: the observer found the sessions by it.
    assert facts["handler_settings"]["OPTIONS"]["application_name"].startswith("sapool-url-")
    assert facts["handler_settings"]["POOL_OPTIONS"] == POOL
    assert_capped(facts, 2)
    assert 1 <= facts["peak_server_sessions"] <= 2


@pytest.mark.postgresql
def test_postgresql_url_timeout_bounds_the_wait(pg_url: Any) -> None:
    facts = pg_url("ours", "pool_size=1&max_overflow=0&timeout=0.5", "exhaustion", hold_seconds=1.2)
    assert "django_sapool.errors.PoolExhausted" in facts["error"]["mro"]
    assert 0.4 <= facts["elapsed"] < 1.5
    assert facts["after_code"] == 200


@pytest.mark.postgresql
def test_postgresql_url_names_a_backend_to_pool(pg_url: Any) -> None:
    """?backend= selects the generic ENGINE; the wrapped backend is capped the same."""
    query = f"{POOL_QUERY}&backend=django.db.backends.postgresql"
    facts = pg_url("ours", query, "threads", **_threads())
    assert facts["handler_settings"]["ENGINE"] == GENERIC
    assert_capped(facts, 2)
    assert 1 <= facts["peak_server_sessions"] <= 2


@pytest.mark.postgresql
@pytest.mark.parametrize("recipe", ["dj_database_url", "environ"])
def test_pool_options_in_a_plain_url_reach_the_driver(pg_url: Any, recipe: str) -> None:
    """Why the docs say so: the libraries hand unknown parameters to the driver."""
    facts = pg_url(recipe, "pool_size=2", "connect")
    assert facts["settings"]["OPTIONS"]["pool_size"] == 2
    assert facts["error"] and "pool_size" in facts["error"]
    assert "invalid" in facts["error"].lower()


def _threads() -> dict[str, Any]:
    return {"n_threads": THREADS, "cycles": CYCLES}


# -- MariaDB ---------------------------------------------------------------------------


@pytest.fixture(params=["mysqlclient", "pymysql"])
def mysql_url(request: pytest.FixtureRequest, mysql: MySQLServer, mysql_database: str) -> Any:
    """Run a URL recipe against MariaDB with one driver; sessions found by database."""
    driver: str = request.param
    pytest.importorskip("MySQLdb" if driver == "mysqlclient" else driver)

    def run(recipe: str, scheme: str, query: str) -> Any:
        url = server_url(scheme, mysql, mysql.password, mysql_database, "charset=utf8mb4", query)
        child = {
            "driver": driver,
            "dbname": mysql_database,
            "admin_conninfo": mysql.conninfo(),
            "test_conninfo": mysql.conninfo(mysql_database),
        }
        return run_url(recipe, url, "threads", child, **_threads())

    return run


@pytest.mark.mysql
@pytest.mark.parametrize(
    ("recipe", "scheme"),
    [("ours", "mysql"), ("ours", "mariadb"), ("dj_database_url", "mysql"), ("environ", "mysql")],
)
def test_mariadb_from_url(mysql_url: Any, recipe: str, scheme: str) -> None:
    facts = mysql_url(recipe, scheme, POOL_QUERY if recipe == "ours" else "")
    assert facts["handler_settings"]["ENGINE"] == MYSQL_ENGINE
    assert facts["handler_settings"]["OPTIONS"] == {"charset": "utf8mb4"}
    assert facts["handler_settings"]["POOL_OPTIONS"] == POOL
    assert_capped(facts, 2)
    assert 1 <= facts["peak_server_sessions"] <= 2


# -- SQLite ----------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["ours", "dj_database_url"])
def test_sqlite_from_url(tmp_path: Path, recipe: str) -> None:
    # timeout= in a SQLite URL is refused as ambiguous (sqlite3 has its own): not here.
    query = "?pool_size=2&max_overflow=0&recycle=600" if recipe == "ours" else ""
    facts = run_url(recipe, f"sqlite:///{tmp_path}/app.sqlite3{query}", "threads", {}, **_threads())
    assert facts["handler_settings"]["ENGINE"] == "django_sapool.backends.sqlite3"
    assert facts["settings"]["NAME"] == f"{tmp_path}/app.sqlite3"
    # distinct: raw sqlite3 connections that served requests, at most POOL_SIZE.
    assert_capped(facts, 2, timeout=30.0 if recipe == "ours" else 5.0)
    if recipe == "ours":
        assert [o["RECYCLE"] for o in facts["live_options"]] == [600.0]
