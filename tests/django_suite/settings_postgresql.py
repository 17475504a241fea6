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
import sys

from suite_common import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, RUN_ID, ...
from suite_common import server_database

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENGINE = "django_sapool.backends.postgresql"

if os.environ.get("SAPOOL_PG_DRIVER") == "psycopg2":
    # Django imports psycopg 3 when it can. Hiding it here, in the settings that
    # every worker process imports before Django's postgresql backend, makes
    # the choice hold in spawned test processes too (run.py does it as well).
    sys.modules["psycopg"] = None  # type: ignore[assignment]


def databases(engine: str) -> dict[str, dict[str, object]]:
    url = os.environ.get("SAPOOL_PG_URL") or DEFAULT_URL
    return {
        alias: server_database(url, engine, alias, default_name="postgres")
        for alias in ("default", "other")
    }


DATABASES = databases(ENGINE)
