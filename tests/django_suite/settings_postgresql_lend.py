"""Settings for Django's runtests.py: PostgreSQL through django_sapool, LEND "transaction".

    SAPOOL_PG_URL=postgresql://user:pass@host:port/dbname   (default: settings_postgresql's)
    SAPOOL_PG_DRIVER=psycopg2                               (force psycopg2)

settings_postgresql with ``POOL_OPTIONS["LEND"] = "transaction"`` on both aliases:
each statement outside ``atomic()`` checks a connection out and returns it when
its cursor closes (``django_sapool/lend.py``, docs/lend.md). The expected
failures of this setup are ``VENDOR_EXPECTED_FAILURES["postgresql_lend"]`` in
expected_failures.py; ``TEST_RUNNER`` below marks those instead of the plain
PostgreSQL ones.
"""

from __future__ import annotations

from settings_postgresql import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, psycopg2 choice
from settings_postgresql import ENGINE, databases
from suite_lend import lent, runner_getattr

#: The key of expected_failures.VENDOR_EXPECTED_FAILURES this setup uses.
EXPECTED_FAILURES_KEY = "postgresql_lend"

DATABASES = lent(databases(ENGINE))

TEST_RUNNER = "settings_postgresql_lend.LendTestRunner"

__getattr__ = runner_getattr(globals(), EXPECTED_FAILURES_KEY, "PostgreSQL")
