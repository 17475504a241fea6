"""In-process tests share one Django configuration; server tests use subprocesses."""

from __future__ import annotations

import tempfile

import django
import pytest
from django.conf import settings

# Helpers that assert for tests in other modules: their failures show the values
# too, as a test module's do (pytest rewrites only the modules it is told of first).
pytest.register_assert_rewrite(
    "tests.faults.harness", "tests.integration.server_scenarios", "tests.unit.pools"
)

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
