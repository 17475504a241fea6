"""The DiscoverRunner used for Django's own tests: marks our expected failures."""

from __future__ import annotations

import sys
import unittest
from typing import Any

from django.db import connections
from django.test.runner import DiscoverRunner
from django.test.utils import iter_test_cases
from expected_failures import EXPECTED_FAILURES


def mark_expected_failures(suite: unittest.TestSuite) -> list[str]:
    """Flag each listed test as an expected failure; return the ids found."""
    found = []
    for test in iter_test_cases(suite):
        if test.id() in EXPECTED_FAILURES:
            # What @unittest.expectedFailure sets, on the instance only: the
            # test must fail, and passing is reported as an unexpected success.
            test.__unittest_expecting_failure__ = True  # type: ignore[attr-defined]
            found.append(test.id())
    return found


class SapoolTestRunner(DiscoverRunner):
    def build_suite(self, *args: Any, **kwargs: Any) -> unittest.TestSuite:
        suite = super().build_suite(*args, **kwargs)
        found = mark_expected_failures(suite)
        print(f"django_sapool: {len(found)} test(s) marked as expected failures", file=sys.stderr)
        return suite

    def setup_databases(self, **kwargs: Any) -> Any:
        describe_backends()
        return super().setup_databases(**kwargs)


def describe_backends() -> None:
    """Print which engine and driver each alias really uses (not what we asked for)."""
    for alias in connections:
        conn = connections[alias]
        line = f"django_sapool: alias {alias!r}: {conn.settings_dict['ENGINE']}"
        if conn.vendor == "postgresql":
            from django.db.backends.postgresql.psycopg_any import is_psycopg3

            driver = conn.Database
            line += f", driver {driver.__name__} {driver.__version__}, is_psycopg3={is_psycopg3}"
        print(line, file=sys.stderr)
