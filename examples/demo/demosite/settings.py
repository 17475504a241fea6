"""Settings of the demo site.

The database is not written here: ``run.py`` starts one server process per
contender and hands it ``DATABASES["default"]`` as JSON in the ``DEMO_DATABASE``
environment variable (an environment variable rather than a command-line
argument, so that a PostgreSQL password never shows up in ``ps``). Everything
else is the same for both contenders.
"""

from __future__ import annotations

import json
import os

from django.core.exceptions import ImproperlyConfigured

try:
    _database = json.loads(os.environ["DEMO_DATABASE"])
except KeyError:
    raise ImproperlyConfigured(
        "DEMO_DATABASE is not set: start the demo with `python examples/demo/run.py`."
    ) from None

DATABASES = {"default": _database}

SECRET_KEY = "django-sapool-demo-only-not-a-secret"
# DEBUG would record every query in memory; a benchmark runs like production.
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["demosite.apps.DemoSiteConfig"]
# No sessions, auth or CSRF: every request costs just its database work.
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "demosite.urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
