"""Settings for Django's runtests.py: SQLite files through django_sapool, LEND "transaction".

settings_sqlite with ``POOL_OPTIONS["LEND"] = "transaction"`` on both aliases
(docs/lend.md). The expected failures of this setup are
``VENDOR_EXPECTED_FAILURES["sqlite_lend"]`` in expected_failures.py.
"""

from __future__ import annotations

from typing import Any

from settings_sqlite import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, RUN_DIR...
from settings_sqlite import ENGINE, databases
from suite_lend import lent, runner_class

#: The key of expected_failures.VENDOR_EXPECTED_FAILURES this setup uses.
EXPECTED_FAILURES_KEY = "sqlite_lend"

DATABASES = lent(databases(ENGINE))

TEST_RUNNER = "settings_sqlite_lend.LendTestRunner"


def __getattr__(name: str) -> Any:
    # The runner class is built when Django first asks for it, after setup.
    if name == "LendTestRunner":
        runner = globals()["LendTestRunner"] = runner_class(EXPECTED_FAILURES_KEY, "SQLite")
        return runner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
