"""The test runner for Django's own tests (settings.TEST_RUNNER).

A DiscoverRunner that marks the tests of expected_failures.py before they run
(the expected failures of the vendor under test), and prints which backend
and driver each alias really uses.
"""

from __future__ import annotations

import importlib.util
import sys
import unittest
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.test.runner import DiscoverRunner
from django.test.utils import iter_test_cases
from expected_failures import ENVIRONMENT_SKIPS, REQUIRES_MODULE, expected_failures


class _Skip:
    """Stands in for a test method; a module-level class, so parallel runs can pickle it."""

    __unittest_skip__ = True

    def __init__(self, why: str) -> None:
        self.__unittest_skip_why__ = why

    def __call__(self) -> None:
        raise unittest.SkipTest(self.__unittest_skip_why__)


def _skip(test: unittest.TestCase, why: str) -> None:
    setattr(test, test._testMethodName, _Skip(why))


def mark_tests(suite: unittest.TestSuite, vendor: str) -> tuple[int, int]:
    """Mark expected failures and skip tests missing a package; return both counts."""
    expected = skipped = 0
    failures = expected_failures(vendor)
    for test in iter_test_cases(suite):
        test_id = test.id()
        module = REQUIRES_MODULE.get(test_id)
        if module and importlib.util.find_spec(module) is None:
            _skip(test, f"needs {module}, which is not installed")
            skipped += 1
        elif test_id in ENVIRONMENT_SKIPS:
            _skip(test, ENVIRONMENT_SKIPS[test_id])
            skipped += 1
        elif test_id in failures:
            # What @unittest.expectedFailure sets, here on the instance only:
            # the test must fail, and a pass is an unexpected success (a failure).
            test.__unittest_expecting_failure__ = True  # type: ignore[attr-defined]
            expected += 1
    return expected, skipped


class SapoolTestRunner(DiscoverRunner):
    def build_suite(self, *args: Any, **kwargs: Any) -> unittest.TestSuite:
        suite = super().build_suite(*args, **kwargs)
        vendor = connections[DEFAULT_DB_ALIAS].vendor
        expected, skipped = mark_tests(suite, vendor)
        print(
            f"django_sapool: {expected} test(s) marked as expected failures ({vendor}), "
            f"{skipped} skipped for a missing package or this machine's GIS libraries "
            "(see expected_failures.py)",
            file=sys.stderr,
        )
        return suite

    def setup_databases(self, **kwargs: Any) -> Any:
        describe_backends()
        return super().setup_databases(**kwargs)


def describe_backends() -> None:
    """Print which engine and driver each alias really uses (not what was asked for)."""
    for alias in connections:
        conn = connections[alias]
        line = f"django_sapool: alias {alias!r}: {conn.settings_dict['ENGINE']}"
        if conn.vendor == "postgresql":
            from django.db.backends.postgresql.psycopg_any import is_psycopg3

            driver = conn.Database
            line += f", driver {driver.__name__} {driver.__version__}, is_psycopg3={is_psycopg3}"
        elif conn.vendor == "mysql":
            version = ".".join(map(str, conn.Database.version_info[:3]))
            # The client library matters: drivers/native.py reads libmariadb status flags.
            client = conn.Database._mysql.get_client_info()
            line += f", driver mysqlclient {version}, client library {client}"
        elif conn.vendor == "sqlite":
            # pysqlite3 where Python's sqlite3 cannot load SpatiaLite (suite_common.py).
            module = conn.Database.__name__.split(".")[0]
            line += f", driver {module} (SQLite {conn.Database.sqlite_version})"
        print(line, file=sys.stderr)
