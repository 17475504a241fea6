"""In-process tests share one Django configuration; server tests use subprocesses."""

from __future__ import annotations

import tempfile

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django_sapool.backends.sqlite3",
                "NAME": f"{tempfile.mkdtemp(prefix='sapool-unit-')}/default.sqlite3",
            }
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
