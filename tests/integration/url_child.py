"""A Django process whose DATABASES come from a URL; ``python -m tests.integration.url_child``.

The parent passes a JSON config in SAPOOL_URL_CHILD::

    {"recipe": "ours" | "dj_database_url" | "environ", "url": "postgres://...",
     "engine": "...", "pool_options": {...},          # the two libraries' recipes
     "scenario": "threads" | "exhaustion" | "connect", "params": {...},
     "child": {...}}                                  # tests/integration/child.py's config

The URL is put in DATABASE_URL, where a project's settings would read it, and the
recipe builds ``DATABASES["default"]`` from it: ``django_sapool.settings_from_url()``,
``dj_database_url.config(engine=...)`` or django-environ's ``Env().db_url(engine=...)``,
the last two with POOL_OPTIONS added. Those settings become child.py's DATABASES
(``settings.configure``, then Django's ConnectionHandler), and child.py's scenarios
run on them. Facts come back as child.py's do, plus the settings (without the
password) and the options of the live pools.
"""

from __future__ import annotations

import json
import os
from typing import Any

CONFIG: dict[str, Any] = json.loads(os.environ["SAPOOL_URL_CHILD"])
os.environ["DATABASE_URL"] = CONFIG["url"]


def build() -> dict[str, Any]:
    """DATABASES['default'] as the recipe makes it from DATABASE_URL."""
    recipe = CONFIG["recipe"]
    if recipe == "ours":
        import django_sapool

        return django_sapool.settings_from_url(os.environ["DATABASE_URL"])
    if recipe == "dj_database_url":
        import dj_database_url

        db: dict[str, Any] = dict(dj_database_url.config(engine=CONFIG["engine"]))
    else:
        import environ

        db = environ.Env().db_url(engine=CONFIG["engine"])
    return {**db, "POOL_OPTIONS": CONFIG["pool_options"]}


DATABASE = build()
# child.py configures Django from its own config at import (and picks the driver).
os.environ["SAPOOL_CHILD"] = json.dumps({**CONFIG["child"], "databases": {"default": DATABASE}})

from django.db import connection  # noqa: E402

from django_sapool import registry  # noqa: E402
from tests.integration import child  # noqa: E402


def connect() -> dict[str, Any]:
    """Connect once; report the error instead of failing (plain URLs with pool options)."""
    try:
        connection.ensure_connection()
    except Exception as exc:  # the point: what the driver says
        return {"error": f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"}
    return {"error": None}


def main() -> None:
    if CONFIG["scenario"] == "connect":
        facts = connect()
    else:
        child.setup_table()
        facts = child.SCENARIOS[CONFIG["scenario"]](**CONFIG.get("params", {}))
    facts["driver"] = connection.Database.__name__
    facts["settings"] = {key: value for key, value in DATABASE.items() if key != "PASSWORD"}
    facts["handler_settings"] = {
        key: connection.settings_dict.get(key) for key in ("ENGINE", "OPTIONS", "POOL_OPTIONS")
    }
    facts["live_options"] = [pool.options.as_settings() for pool in registry.pools()]
    print("SAPOOL-RESULT " + json.dumps(facts, default=str))


if __name__ == "__main__":
    main()
