"""Settings for Django's runtests.py: PostGIS through django_sapool.

The PostgreSQL settings with the GIS engine; runtests.py adds
django.contrib.gis to INSTALLED_APPS when ``connection.features.gis_enabled``.
The postgis extension is created in each test database by Django's PostGIS
backend (it needs scripts/ensure-gis to have installed PostGIS on the server).
"""

from __future__ import annotations

from settings_postgresql import *  # noqa: F403 - everything but the engine
from settings_postgresql import databases

ENGINE = "django_sapool.backends.postgis"
DATABASES = databases(ENGINE)
