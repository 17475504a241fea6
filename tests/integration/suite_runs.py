"""Django's own test suite in a subprocess: tests/django_suite's fetch.py and run.py.

For test_django_suite.py (every backend) and test_pgbouncer.py (through PgBouncer);
the ``django_tests`` fixture (conftest.py) fetches the suite once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from .conftest import ROOT, unavailable

SUITE_DIR = ROOT / "tests" / "django_suite"
TIMEOUT = 900  # seconds per run; a run takes well under a minute
# Per-run state that run.py and the settings pass to their own children through
# the environment; a value inherited from elsewhere would make two runs share it
# (test database names, for one).
RUN_STATE = ("SAPOOL_SUITE_RUN_ID", "SAPOOL_PG_DRIVER", "SAPOOL_SQLITE_DIR")


def tail(output: str, limit: int = 20_000) -> str:
    return output if len(output) <= limit else "[...]\n" + output[-limit:]


def run_script(
    script: str, *args: str, timeout: float = TIMEOUT, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a script of tests/django_suite; return its exit status and output.

    Its environment is ours without the per-run state, plus ``env``.
    """
    drop = {*RUN_STATE, "DJANGO_SETTINGS_MODULE"}
    environ = {k: v for k, v in os.environ.items() if k not in drop} | (env or {})
    # A session of its own, so that a timeout kills runtests.py's workers too.
    proc = subprocess.Popen(
        [sys.executable, str(SUITE_DIR / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=environ,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{script} {' '.join(args)} timed out after {timeout}s:\n{tail(output)}")
    return proc.returncode, output


def fetch() -> None:
    """Download and extract Django's tests (a no-op when already there)."""
    code, output = run_script("fetch.py", timeout=600)
    if code != 0:
        unavailable(f"could not fetch Django's test suite (exit {code}):\n{tail(output, 5000)}")


def run_suite(*args: str, timeout: float = TIMEOUT, env: dict[str, str] | None = None) -> str:
    """Run Django's tests through run.py; fail with the end of its output if any failed."""
    start = time.monotonic()
    code, output = run_script("run.py", *args, timeout=timeout, env=env)
    elapsed = time.monotonic() - start
    print(f"run.py {' '.join(args)}: exit {code} in {elapsed:.1f}s")
    assert code == 0, f"Django's test suite failed (run.py {' '.join(args)}, exit {code}):\n" + (
        tail(output)
    )
    ran = re.search(r"^Ran (\d+) tests? in ", output, re.MULTILINE)
    assert ran and int(ran.group(1)) > 0, f"no test ran:\n{tail(output)}"
    return output
