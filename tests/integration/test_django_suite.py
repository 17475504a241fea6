"""Django's own test modules on our backends.

``backends``, ``transactions`` and ``transaction_hooks`` on PostgreSQL (psycopg 3,
psycopg2, parallel), MySQL/MariaDB and SQLite; ``gis_tests`` on PostGIS,
SpatiaLite and MySQL/MariaDB spatial.

Each run is a subprocess: tests/django_suite/run.py fetches the installed
Django's test suite (once, into .django-tests/) and runs it with runtests.py.
Tests that fail by design are listed in tests/django_suite/expected_failures.py.
"""

from __future__ import annotations

import ctypes.util
from typing import Any

import pytest

from .conftest import unavailable
from .suite_runs import run_suite


@pytest.mark.postgresql
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_django_suite_postgresql(driver: str, pg: Any, django_tests: None) -> None:
    # pg (conftest.py) skips when PostgreSQL is unreachable, and fails under CI.
    pytest.importorskip(driver)
    output = run_suite("--driver", driver)
    # The driver Django really picked, as printed by sapool_runner.py.
    assert f"is_psycopg3={driver == 'psycopg'}" in output


@pytest.mark.postgresql
def test_django_suite_postgresql_parallel(pg: Any, django_tests: None) -> None:
    """Two worker processes: proves CREATE DATABASE ... TEMPLATE works with pools.

    Cloning fails if any connection to the template database is open, pooled or
    not. Note: a failing test in a parallel run is reported readably only with
    tblib installed; run.py without --parallel shows it plainly.
    """
    pytest.importorskip("psycopg")
    output = run_suite("--driver", "psycopg", "--parallel", "2")
    assert "Cloning test database for alias 'default'" in output


#: Django's modules run with LEND "transaction": the default ones, and the ORM's
#: queries, select_for_update (threads, locks, atomic()) and basic.
LEND_MODULES = (
    "backends",
    "transactions",
    "transaction_hooks",
    "queries",
    "select_for_update",
    "basic",
)


@pytest.mark.postgresql
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_django_suite_postgresql_lend_transaction(driver: str, pg: Any, django_tests: None) -> None:
    """POOL_OPTIONS["LEND"] = "transaction" (docs/lend.md), psycopg 3 and psycopg2.

    The expected failures (``VENDOR_EXPECTED_FAILURES["postgresql_lend"]``) read
    ``wrapper.connection`` after the cursor that used it was closed. With
    psycopg 3 in two worker processes, as ``--parallel`` test runs do: the test
    database is cloned (``CREATE DATABASE ... TEMPLATE`` fails while any
    connection to it is open, lent per statement or not).
    """
    pytest.importorskip(driver)
    parallel = ("--parallel", "2") if driver == "psycopg" else ()
    output = run_suite(
        "--driver", driver, *parallel, "--settings", "settings_postgresql_lend", *LEND_MODULES
    )
    assert "(postgresql_lend: PostgreSQL, LEND 'transaction')" in output
    assert f"is_psycopg3={driver == 'psycopg'}" in output
    if parallel:
        assert "Cloning test database for alias 'default'" in output


@pytest.mark.mysql
def test_django_suite_mysql_lend_transaction(mysql: Any, django_tests: None) -> None:
    """POOL_OPTIONS["LEND"] = "transaction" on MySQL/MariaDB, mysqlclient."""
    output = run_suite("--settings", "settings_mysql_lend", *LEND_MODULES)
    assert "(mysql_lend: MySQL/MariaDB, LEND 'transaction')" in output
    assert "django_sapool.backends.mysql, driver mysqlclient" in output


def test_django_suite_sqlite_lend_transaction(django_tests: None) -> None:
    """POOL_OPTIONS["LEND"] = "transaction" on SQLite files."""
    output = run_suite("--settings", "settings_sqlite_lend", *LEND_MODULES)
    assert "(sqlite_lend: SQLite, LEND 'transaction')" in output


def test_django_suite_sqlite(django_tests: None) -> None:
    """SQLite file databases (in-memory ones are not pooled, so not worth running)."""
    run_suite("--settings", "settings_sqlite")


@pytest.mark.mysql
def test_django_suite_mysql(mysql: Any, django_tests: None) -> None:
    """MySQL/MariaDB with mysqlclient."""
    # mysql (conftest.py) skips when the server is unreachable, and fails under CI.
    output = run_suite("--settings", "settings_mysql")
    assert "django_sapool.backends.mysql, driver mysqlclient" in output


@pytest.mark.mysql
def test_django_suite_mysql_parallel(mysql: Any, django_tests: None) -> None:
    """Two workers: the test database is cloned with mysqldump while pools exist."""
    output = run_suite("--settings", "settings_mysql", "--parallel", "2")
    assert "Cloning test database for alias 'default'" in output


# -- gis_tests: every GIS backend runs the whole of Django's gis_tests (~10 s each).


def require_gis_libraries() -> None:
    """GEOS and GDAL, which every Django GIS backend loads (scripts/ensure-gis)."""
    missing = [lib for lib in ("geos_c", "gdal") if ctypes.util.find_library(lib) is None]
    if missing:
        unavailable(f"GIS libraries missing: {', '.join(missing)} (run scripts/ensure-gis)")


def require_spatialite() -> None:
    """GEOS and GDAL, and an SQLite module that loads mod_spatialite (see suite_common.py)."""
    require_gis_libraries()
    import importlib
    import sqlite3

    sqlite: Any = sqlite3
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        try:
            # What the suite and gis_child use then.
            sqlite = importlib.import_module("pysqlite3.dbapi2")
        except ImportError:
            unavailable("this Python's sqlite3 cannot load extensions and pysqlite3 is missing")
    conn = sqlite.connect(":memory:")
    try:
        conn.enable_load_extension(True)
        conn.load_extension("mod_spatialite")
    except (AttributeError, sqlite.Error) as exc:
        unavailable(f"cannot load SpatiaLite ({exc!r}); run scripts/ensure-gis, scripts/bootstrap")
    finally:
        conn.close()


@pytest.mark.postgresql
def test_django_suite_postgis(pg: Any, django_tests: None) -> None:
    require_gis_libraries()
    import psycopg

    with psycopg.connect(pg.conninfo(pg.admin_db)) as conn:
        row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
        if row.fetchone() is None:
            unavailable(f"PostGIS is not installed on {pg.host}:{pg.port} (scripts/ensure-gis)")
    output = run_suite("--settings", "settings_postgis", "gis_tests")
    assert "django_sapool.backends.postgis, driver psycopg" in output


def test_django_suite_spatialite(django_tests: None) -> None:
    """SpatiaLite file databases; pysqlite3 stands in where sqlite3 cannot load extensions."""
    require_spatialite()
    output = run_suite("--settings", "settings_spatialite", "gis_tests")
    assert "django_sapool.backends.spatialite, driver " in output


@pytest.mark.mysql
def test_django_suite_mysql_gis(mysql: Any, django_tests: None) -> None:
    require_gis_libraries()
    output = run_suite("--settings", "settings_mysql_gis", "gis_tests")
    assert "django_sapool.backends.mysql_gis, driver mysqlclient" in output
