"""Settings for Django's runtests.py: PostgreSQL through PgBouncer (transaction pooling).

    SAPOOL_PGBOUNCER_URL=postgresql://postgres@127.0.0.1:6432/postgres   (default)
    SAPOOL_PG_DRIVER=psycopg2                                            (force psycopg2)

``scripts/ensure-pgbouncer`` starts that PgBouncer (``pool_mode = transaction``, a
``*`` database entry so that Django's test databases pass through by name). The
database settings are the ones docs/pgbouncer.md recommends:

- ``DISABLE_SERVER_SIDE_CURSORS``: ``QuerySet.iterator()`` outside a transaction
  declares a ``WITH HOLD`` cursor and fetches from it in later transactions, which
  PgBouncer may run on another server connection.
- No server-side prepared statements: psycopg 3's ``prepare_threshold`` is ``None``,
  which is already Django's default (it is spelt out below only to be visible);
  psycopg2 never prepares.
- ``RESET_ON_RETURN = "rollback"`` (the default, spelt out): only an open
  transaction is ended. ``"reset"`` (``DISCARD ALL``) would be wrong here: it runs
  on whichever server connection PgBouncer lends for that one statement, wiping
  session state other clients share, and makes the pool redo Django's session
  setup at the next checkout for nothing.

Test databases are created and dropped through PgBouncer too: ``CREATE DATABASE``
and ``DROP DATABASE`` run in autocommit on Django's ``_nodb_cursor()`` (database
"postgres"). ``DROP DATABASE`` succeeds because our PgBouncer closes idle server
connections after a second (``server_idle_timeout = 1``) and PostgreSQL waits up to
5 s for other sessions to leave a database it drops.

The expected failures of this setup are ``VENDOR_EXPECTED_FAILURES["pgbouncer"]``
in expected_failures.py; ``TEST_RUNNER`` below marks those instead of the plain
PostgreSQL ones.
"""

from __future__ import annotations

import os
from typing import Any

from settings_postgresql import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, psycopg2 choice
from suite_common import server_database

ENGINE = "django_sapool.backends.postgresql"
DEFAULT_URL = f"postgresql://postgres@127.0.0.1:{os.environ.get('SAPOOL_PGBOUNCER_PORT') or 6432}/"
PSYCOPG2 = os.environ.get("SAPOOL_PG_DRIVER") == "psycopg2"

#: The key of expected_failures.VENDOR_EXPECTED_FAILURES this setup uses.
EXPECTED_FAILURES_KEY = "pgbouncer"


def databases(engine: str) -> dict[str, dict[str, Any]]:
    url = os.environ.get("SAPOOL_PGBOUNCER_URL") or DEFAULT_URL
    result: dict[str, dict[str, Any]] = {}
    for alias in ("default", "other"):
        db = server_database(url, engine, alias, default_name="postgres")
        db["DISABLE_SERVER_SIDE_CURSORS"] = True
        db["POOL_OPTIONS"] = {"RESET_ON_RETURN": "rollback"}
        # psycopg2 would refuse prepare_threshold as an unknown connection option.
        db["OPTIONS"] = {} if PSYCOPG2 else {"prepare_threshold": None}
        result[alias] = db
    return result


DATABASES = databases(ENGINE)

TEST_RUNNER = "settings_pgbouncer.PgBouncerTestRunner"


def __getattr__(name: str) -> Any:
    # The runner subclasses sapool_runner's, which imports django.test and
    # django.db: importing those while Django is still loading this settings
    # module would read settings that are not set yet. Django resolves
    # TEST_RUNNER by name after setup, so the class is built on that first access.
    if name == "PgBouncerTestRunner":
        return _runner_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _runner_class() -> type:
    import sys
    import unittest

    from django.test.runner import DiscoverRunner
    from sapool_runner import SapoolTestRunner, mark_tests

    class PgBouncerTestRunner(SapoolTestRunner):
        """SapoolTestRunner, marking the expected failures of the "pgbouncer" key."""

        def build_suite(self, *args: Any, **kwargs: Any) -> unittest.TestSuite:
            suite = DiscoverRunner.build_suite(self, *args, **kwargs)
            expected, skipped = mark_tests(suite, EXPECTED_FAILURES_KEY)
            print(
                f"django_sapool: {expected} test(s) marked as expected failures "
                f"({EXPECTED_FAILURES_KEY}: PostgreSQL through PgBouncer, transaction "
                f"pooling), {skipped} skipped for a missing package (see expected_failures.py)",
                file=sys.stderr,
            )
            return suite

    globals()["PgBouncerTestRunner"] = PgBouncerTestRunner
    return PgBouncerTestRunner
