"""Django's own test modules (backends, transactions, transaction_hooks) on our backends.

Each run is a subprocess: tests/django_suite/run.py fetches the installed
Django's test suite (once, into .django-tests/) and runs it with runtests.py.
Tests that fail by design are listed in tests/django_suite/expected_failures.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SUITE_DIR = Path(__file__).resolve().parents[1] / "django_suite"
TIMEOUT = 900  # seconds per run; a run takes well under a minute
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
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
