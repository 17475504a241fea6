"""Settings for Django's runtests.py: MySQL/MariaDB (mysqlclient) through django_sapool.

    SAPOOL_MYSQL_URL=mysql://user:pass@host:port/   (default below)

Two aliases, "default" and "other", like Django's own CI settings. The test
databases are created with utf8mb4 whatever the server's default character
set (latin1 on some MySQL installs): Django's tests store full Unicode.
"""

from __future__ import annotations

import os

from suite_common import *  # noqa: F403 - TEST_RUNNER, SECRET_KEY, ...
from suite_common import server_database

DEFAULT_URL = "mysql://root@127.0.0.1:3306/"
ENGINE = "django_sapool.backends.mysql"


def databases(engine: str) -> dict[str, dict[str, object]]:
    url = os.environ.get("SAPOOL_MYSQL_URL") or DEFAULT_URL
    return {
        alias: server_database(url, engine, alias, test={"CHARSET": "utf8mb4"})
        for alias in ("default", "other")
    }


DATABASES = databases(ENGINE)
