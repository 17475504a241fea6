"""Fresh databases with the lifesite schema, as settings for a server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..conftest import ROOT, MySQLServer, PgServer, _admin, _mysql_admin
from ._load import VENDORS, Site, site_for

SETTINGS = "tests.integration.lifecycle.lifesite.settings"
SiteFactory = Callable[..., dict[str, str]]


def site_env(databases: dict[str, Any], **extra: str) -> dict[str, str]:
    """The environment a server/worker process needs to load the lifesite."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "SAPOOL_SITE_DATABASES": json.dumps(databases),
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )


@pytest.fixture
def pg_site(pg: PgServer) -> Iterator[SiteFactory]:
    """make(engine=..., **settings) -> env for a lifesite on a fresh PostgreSQL database.

    Sessions are tagged with application_name = the returned env's SAPOOL_SITE_TAG.
    """
    name = f"sapool_life_{uuid.uuid4().hex[:10]}"
    with _admin(pg) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def make(engine: str = "django_sapool.backends.postgresql", **db: Any) -> dict[str, str]:
        tag = f"sapool-{uuid.uuid4().hex[:10]}"
        settings = pg.settings(name, tag, ENGINE=engine, **db)
        env = site_env({"default": settings}, SAPOOL_SITE_TAG=tag, SAPOOL_SITE_DBNAME=name)
        migrate(env)
        return env

    try:
        yield make
    finally:
        with _admin(pg) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [name],
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def mysql_site(mysql: MySQLServer) -> Iterator[SiteFactory]:
    """make(engine=..., **settings) -> env for a lifesite on a fresh MySQL database.

    Our sessions are the ones whose processlist db is SAPOOL_SITE_DBNAME.
    """
    name = f"sapool_life_{uuid.uuid4().hex[:10]}"
    conn = _mysql_admin(mysql)
    conn.cursor().execute(f"CREATE DATABASE `{name}`")

    def make(engine: str = "django_sapool.backends.mysql", **db: Any) -> dict[str, str]:
        settings = mysql.settings(name, ENGINE=engine, **db)
        env = site_env({"default": settings}, SAPOOL_SITE_DBNAME=name)
        migrate(env)
        return env

    try:
        yield make
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(params=VENDORS)
def site(request: pytest.FixtureRequest) -> Site:
    """The lifesite on PostgreSQL, then on MySQL (the load tests' Site)."""
    return site_for(request)
