"""Settings for Django's runtests.py: SQLite through django_sapool.

File databases: django_sapool deliberately does not pool in-memory SQLite (the
database would die with its one connection), so Django's usual in-memory test
settings would test nothing of ours. The files go to a temporary directory
that is unique per run (and shared with worker processes through the
environment).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

RUN_DIR = os.environ.get("SAPOOL_SQLITE_DIR", "")
if not RUN_DIR:
    # Only the process that made the directory removes it (workers inherit it).
    RUN_DIR = os.environ["SAPOOL_SQLITE_DIR"] = tempfile.mkdtemp(prefix="sapool-django-suite-")
    atexit.register(shutil.rmtree, RUN_DIR, ignore_errors=True)


def _database(alias: str) -> dict[str, object]:
    return {
        "ENGINE": "django_sapool.backends.sqlite3",
        "NAME": os.path.join(RUN_DIR, f"{alias}.sqlite3"),
        "TEST": {"NAME": os.path.join(RUN_DIR, f"test_{alias}.sqlite3")},
    }


DATABASES = {alias: _database(alias) for alias in ("default", "other")}

# Marks the tests in expected_failures.py and reports the backend in use.
TEST_RUNNER = "sapool_runner.SapoolTestRunner"

SECRET_KEY = "django_tests_secret_key"

# Use a fast hasher to speed up tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = False
