"""A small Django site for lifecycle tests: real servers and worker models load it.

Databases come as JSON in SAPOOL_SITE_DATABASES (the test builds them, with its
own database names); DJANGO_SETTINGS_MODULE=tests.integration.lifecycle.lifesite.settings.
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "lifecycle-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.integration.lifecycle.lifesite.urls"
INSTALLED_APPS = ["tests.integration.lifecycle.lifesite"]
MIDDLEWARE: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = json.loads(
    os.environ.get(
        "SAPOOL_SITE_DATABASES",
        '{"default": {"ENGINE": "django_sapool.backends.sqlite3", "NAME": "lifesite.sqlite3"}}',
    )
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_sapool": {"handlers": ["stderr"], "level": "WARNING"}},
}
