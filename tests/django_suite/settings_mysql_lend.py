"""Settings for Django's runtests.py: MySQL/MariaDB through django_sapool, LEND "transaction".

    SAPOOL_MYSQL_URL=mysql://user:pass@host:port/   (default: settings_mysql's)

settings_mysql with ``POOL_OPTIONS["LEND"] = "transaction"`` on both aliases
(docs/lend.md). The expected failures of this setup are
``VENDOR_EXPECTED_FAILURES["mysql_lend"]`` in expected_failures.py.
"""

from __future__ import annotations

from settings_mysql import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, ...
from settings_mysql import ENGINE, databases
from suite_lend import lent, runner_getattr

#: The key of expected_failures.VENDOR_EXPECTED_FAILURES this setup uses.
EXPECTED_FAILURES_KEY = "mysql_lend"

DATABASES = lent(databases(ENGINE))

TEST_RUNNER = "settings_mysql_lend.LendTestRunner"

__getattr__ = runner_getattr(globals(), EXPECTED_FAILURES_KEY, "MySQL/MariaDB")
