"""The start of every child Django process of the tests: its config, its driver, its settings.

Django settings are global, and Django picks psycopg 3 or psycopg2 (and
mysqlclient or PyMySQL as MySQLdb) once per process, so each scenario runs in a
child process (tests/integration/*child.py, tests/faults/child.py) that starts
the same way: :func:`read_config`, :func:`use_driver` before Django is imported,
then :func:`setup_django`. Importing this module imports no Django.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def read_config(env_var: str) -> dict[str, Any]:
    """The JSON config the parent passed in ``env_var`` (empty if unset)."""
    config: dict[str, Any] = json.loads(os.environ.get(env_var, "{}"))
    return config


def use_driver(*drivers: str | None) -> None:
    """Make Django connect with ``drivers``; call it before Django is imported.

    ``psycopg2``: psycopg 3 is hidden, so Django falls back to psycopg2;
    ``pymysql``: PyMySQL is installed as MySQLdb. psycopg, mysqlclient (and
    None) are what Django picks by itself.
    """
    if "psycopg2" in drivers:
        sys.modules["psycopg"] = None  # type: ignore[assignment]  # Django falls back to psycopg2
    if "pymysql" in drivers:
        import pymysql

        pymysql.install_as_MySQLdb()


def setup_django(**settings: Any) -> None:
    """``settings.configure()`` with what every child runs with, then ``django.setup()``.

    ``settings`` (DATABASES, ROOT_URLCONF, ...) add to or override these: DEBUG
    off, any host, no middleware and no app, USE_TZ, and Django's logging left
    unconfigured (a child's stderr is the test's log).
    """
    import django
    from django.conf import settings as django_settings

    django_settings.configure(
        **{
            "DEBUG": False,
            "SECRET_KEY": "not-secret",
            "ALLOWED_HOSTS": ["*"],
            "MIDDLEWARE": [],
            "INSTALLED_APPS": [],
            "USE_TZ": True,
            "LOGGING_CONFIG": None,
            **settings,
        }
    )
    django.setup()
