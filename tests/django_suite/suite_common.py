"""What the settings modules of Django's test suite share.

Imported by every ``settings_*.py`` (in runtests.py's process and in each
``--parallel`` worker), so it must stay import-light: no Django imports.
"""

from __future__ import annotations

import os
import secrets
import sys
from urllib.parse import unquote, urlsplit

# One id per run, shared with worker processes through the environment: two
# concurrent runs (two drivers, two checkouts, two machines on one server) must
# not create, clone or drop each other's test databases. A spawned worker
# re-imports the settings, hence setdefault.
RUN_ID = os.environ.setdefault("SAPOOL_SUITE_RUN_ID", f"{os.getpid()}_{secrets.token_hex(2)}")

#: Every test database of this run starts with this (run.py drops leftovers by it).
TEST_DB_PREFIX = f"test_sapool_{RUN_ID}_"

# -- Settings every suite uses (``from suite_common import *``), as in Django's CI.

#: Marks the tests in expected_failures.py and reports the driver in use.
TEST_RUNNER = "sapool_runner.SapoolTestRunner"
SECRET_KEY = "django_tests_secret_key"
#: Use a fast hasher to speed up tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False

__all__ = [
    "DEFAULT_AUTO_FIELD",
    "PASSWORD_HASHERS",
    "RUN_ID",
    "SECRET_KEY",
    "TEST_RUNNER",
    "USE_TZ",
]


def server_database(
    url: str, engine: str, alias: str, default_name: str = "", test: dict[str, str] | None = None
) -> dict[str, object]:
    """Return a DATABASES entry for a server named by ``scheme://user:pw@host:port/db``.

    ``test`` adds to the entry's TEST settings (the test database's NAME is ours).
    """
    parts = urlsplit(url)
    return {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")) or default_name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "TEST": {**(test or {}), "NAME": f"{TEST_DB_PREFIX}{alias}"},
    }


def sqlite_with_extensions() -> str:
    """Make ``import sqlite3`` give a module that can load SpatiaLite; return its name.

    SpatiaLite is an SQLite extension, loaded with ``enable_load_extension()``,
    which CPython only has when built with ``--enable-loadable-sqlite-extensions``
    (Debian's python3 is; pyenv's default build is not). Then pysqlite3-binary,
    which scripts/bootstrap installs in that case, stands in for sqlite3: the same
    DB-API module, with its own SQLite. Call it before Django imports its sqlite3
    backend (the settings module is early enough).
    """
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return "sqlite3"
    try:
        import pysqlite3
        import pysqlite3.dbapi2
    except ImportError:
        # Django then fails with its own clear "SpatiaLite requires SQLite to be
        # configured to allow extension loading" at the first connection.
        return "sqlite3"
    sys.modules["sqlite3"] = pysqlite3
    sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2
    return "pysqlite3"
