"""What the settings modules with ``POOL_OPTIONS["LEND"] = "transaction"`` share.

``settings_postgresql_lend`` and ``settings_mysql_lend`` are their vendor's
settings with every alias lending per transaction (docs/lend.md), and a runner
that marks the expected failures of their own key in expected_failures.py.
Import-light, like suite_common: no Django import until the runner is built.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def lent(databases: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return ``databases`` with LEND "transaction" in each alias's POOL_OPTIONS."""
    for db in databases.values():
        db["POOL_OPTIONS"] = {**(db.get("POOL_OPTIONS") or {}), "LEND": "transaction"}
    return databases


def runner_class(key: str, label: str) -> type:
    """SapoolTestRunner, marking the expected failures of ``key`` (built after Django's setup)."""
    import unittest

    from django.test.runner import DiscoverRunner
    from sapool_runner import SapoolTestRunner, mark_tests

    class LendTestRunner(SapoolTestRunner):
        def build_suite(self, *args: Any, **kwargs: Any) -> unittest.TestSuite:
            suite = DiscoverRunner.build_suite(self, *args, **kwargs)
            expected, skipped = mark_tests(suite, key)
            print(
                f"django_sapool: {expected} test(s) marked as expected failures "
                f"({key}: {label}, LEND 'transaction'), {skipped} skipped for a missing "
                f"package (see expected_failures.py)",
                file=sys.stderr,
            )
            return suite

    return LendTestRunner


def runner_getattr(namespace: dict[str, Any], key: str, label: str) -> Callable[[str], Any]:
    """Return a settings module's ``__getattr__`` that builds ``LendTestRunner`` on demand.

    Django asks for ``TEST_RUNNER`` after its setup; sapool_runner imports
    django.test and django.db, so the class cannot be built at import.
    """

    def __getattr__(name: str) -> Any:
        if name == "LendTestRunner":
            runner = namespace["LendTestRunner"] = runner_class(key, label)
            return runner
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    return __getattr__
