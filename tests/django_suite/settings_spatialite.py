"""Settings for Django's runtests.py: SpatiaLite through django_sapool (file databases).

The SQLite settings with the GIS engine. SpatiaLite is an SQLite extension:
where Python's sqlite3 cannot load extensions, pysqlite3 stands in for it
(suite_common.sqlite_with_extensions), before Django imports its backend.
"""

from __future__ import annotations

from settings_sqlite import *  # noqa: F403 - everything but the engine
from settings_sqlite import databases
from suite_common import sqlite_with_extensions

#: "sqlite3" or "pysqlite3"; sapool_runner.py prints it.
SAPOOL_SQLITE_MODULE = sqlite_with_extensions()

ENGINE = "django_sapool.backends.spatialite"
DATABASES = databases(ENGINE)
