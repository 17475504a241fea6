"""Settings for Django's runtests.py: PostgreSQL through django_sapool.

    SAPOOL_PG_URL=postgresql://user:pass@host:port/dbname   (default below)
    SAPOOL_PG_DRIVER=psycopg2                               (force psycopg2)

Modelled on the settings Django's own CI uses for PostgreSQL (two aliases,
"default" and "other", a fast password hasher). run.py is the usual way in;
``runtests.py --settings=settings_postgresql`` works too with this directory on
PYTHONPATH.
"""

from __future__ import annotations

import os
import secrets
import sys
from urllib.parse import unquote, urlsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

if os.environ.get("SAPOOL_PG_DRIVER") == "psycopg2":
    # Django imports psycopg 3 when it can. Hiding it here, in the settings that
    # every worker process imports before Django's postgresql backend, makes
    # the choice hold in spawned test processes too (run.py does it as well).
    sys.modules["psycopg"] = None  # type: ignore[assignment]

_url = urlsplit(os.environ.get("SAPOOL_PG_URL") or DEFAULT_URL)

# One id per run, shared with worker processes through the environment: two
# concurrent runs (two drivers, two checkouts, two machines on one server) must
# not create, clone or drop each other's test databases. A spawned worker
# re-imports this module, hence setdefault.
RUN_ID = os.environ.setdefault("SAPOOL_SUITE_RUN_ID", f"{os.getpid()}_{secrets.token_hex(2)}")


def _database(alias: str) -> dict[str, object]:
    return {
        "ENGINE": "django_sapool.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")) or "postgres",
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        "TEST": {"NAME": f"test_sapool_{RUN_ID}_{alias}"},
    }


DATABASES = {alias: _database(alias) for alias in ("default", "other")}

# Marks the tests in expected_failures.py and reports the driver in use.
TEST_RUNNER = "sapool_runner.SapoolTestRunner"

SECRET_KEY = "django_tests_secret_key"

# Use a fast hasher to speed up tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = False
