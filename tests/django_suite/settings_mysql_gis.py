"""Settings for Django's runtests.py: MySQL/MariaDB spatial through django_sapool.

The MySQL settings with the GIS engine (Django's MySQL GIS backend needs no
server extension: spatial types are built into MariaDB and MySQL).
"""

from __future__ import annotations

from settings_mysql import *  # noqa: F403 - everything but the engine
from settings_mysql import databases

ENGINE = "django_sapool.backends.mysql_gis"
DATABASES = databases(ENGINE)
