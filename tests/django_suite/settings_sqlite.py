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

from suite_common import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, ...

ENGINE = "django_sapool.backends.sqlite3"

RUN_DIR = os.environ.get("SAPOOL_SQLITE_DIR", "")
if not RUN_DIR:
    # Only the process that made the directory removes it (workers inherit it).
    RUN_DIR = os.environ["SAPOOL_SQLITE_DIR"] = tempfile.mkdtemp(prefix="sapool-django-suite-")
    atexit.register(shutil.rmtree, RUN_DIR, ignore_errors=True)


def databases(engine: str) -> dict[str, dict[str, object]]:
    return {
        alias: {
            "ENGINE": engine,
            "NAME": os.path.join(RUN_DIR, f"{alias}.sqlite3"),
            "TEST": {"NAME": os.path.join(RUN_DIR, f"test_{alias}.sqlite3")},
        }
        for alias in ("default", "other")
    }


DATABASES = databases(ENGINE)
