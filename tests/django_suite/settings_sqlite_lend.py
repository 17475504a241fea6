"""Settings for Django's runtests.py: SQLite files through django_sapool, LEND "transaction".

settings_sqlite with ``POOL_OPTIONS["LEND"] = "transaction"`` on both aliases
(docs/lend.md). The expected failures of this setup are
``VENDOR_EXPECTED_FAILURES["sqlite_lend"]`` in expected_failures.py.
"""

from __future__ import annotations

from settings_sqlite import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, RUN_DIR...
from settings_sqlite import ENGINE, databases
from suite_lend import lent, runner_getattr

#: The key of expected_failures.VENDOR_EXPECTED_FAILURES this setup uses.
EXPECTED_FAILURES_KEY = "sqlite_lend"

DATABASES = lent(databases(ENGINE))

TEST_RUNNER = "settings_sqlite_lend.LendTestRunner"

__getattr__ = runner_getattr(globals(), EXPECTED_FAILURES_KEY, "SQLite")
