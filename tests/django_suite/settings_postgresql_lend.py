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

from typing import Any

from settings_postgresql import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, psycopg2 choice
from settings_postgresql import ENGINE, databases
from suite_lend import lent, runner_class

#: The key of expected_failures.VENDOR_EXPECTED_FAILURES this setup uses.
EXPECTED_FAILURES_KEY = "postgresql_lend"

DATABASES = lent(databases(ENGINE))

TEST_RUNNER = "settings_postgresql_lend.LendTestRunner"


def __getattr__(name: str) -> Any:
    # As settings_pgbouncer: the runner class is built when Django first asks
    # for it, after setup (sapool_runner imports django.test and django.db).
    if name == "LendTestRunner":
        runner = globals()["LendTestRunner"] = runner_class(EXPECTED_FAILURES_KEY, "PostgreSQL")
        return runner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
