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
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import IN_CI, unavailable

SUITE_DIR = Path(__file__).resolve().parents[1] / "django_suite"
TIMEOUT = 900  # seconds per run; a run takes well under a minute
# Per-run state that run.py and the settings pass to their own children through
# the environment; a value inherited from elsewhere would make two runs share it.
RUN_STATE = ("SAPOOL_SUITE_RUN_ID", "SAPOOL_PG_DRIVER", "SAPOOL_SQLITE_DIR")


def _tail(output: str, limit: int = 20_000) -> str:
    return output if len(output) <= limit else "[...]\n" + output[-limit:]


def _env() -> dict[str, str]:
    drop = {*RUN_STATE, "DJANGO_SETTINGS_MODULE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(script: str, *args: str, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Run a script of tests/django_suite; return its exit status and output."""
    # A session of its own, so that a timeout kills runtests.py's workers too.
    proc = subprocess.Popen(
        [sys.executable, str(SUITE_DIR / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{script} {' '.join(args)} timed out after {timeout}s:\n{_tail(output)}")
    return proc.returncode, output


@pytest.fixture(scope="session")
def django_tests() -> None:
    """Download and extract Django's tests once (a no-op when already there)."""
    code, output = _run("fetch.py", timeout=600)
    if code != 0:
        reason = f"could not fetch Django's test suite (exit {code}):\n{_tail(output, 5000)}"
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def run_suite(*args: str) -> str:
    """Run Django's tests through run.py; fail with the end of its output if any failed."""
    start = time.monotonic()
    code, output = _run("run.py", *args)
    elapsed = time.monotonic() - start
    print(f"run.py {' '.join(args)}: exit {code} in {elapsed:.1f}s")
    assert code == 0, f"Django's test suite failed (run.py {' '.join(args)}, exit {code}):\n" + (
        _tail(output)
    )
    ran = re.search(r"^Ran (\d+) tests? in ", output, re.MULTILINE)
    assert ran and int(ran.group(1)) > 0, f"no test ran:\n{_tail(output)}"
    return output


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
