"""What the in-process benchmarks share: this machine's servers, and the version under test.

``instructions.py`` and ``contention.py`` take the server from SAPOOL_PG_URL or
SAPOOL_MYSQL_URL (default: this machine's) and import django_sapool from
``--src DIR`` (passed on to their child processes as SAPOOL_SRC) to compare
versions.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

#: Per vendor: the server's URL variable, its default, and the default database.
SERVERS = {
    "postgresql": ("SAPOOL_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres", "postgres"),
    "mysql": ("SAPOOL_MYSQL_URL", "mysql://root@127.0.0.1:3306/", "test"),
}


def connection_settings(vendor: str) -> dict[str, Any]:
    """Return NAME, USER, PASSWORD, HOST and PORT of the vendor's server, for DATABASES."""
    variable, default_url, default_name = SERVERS[vendor]
    url = urlsplit(os.environ.get(variable, default_url))
    return {
        "NAME": url.path.lstrip("/") or default_name,
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": url.hostname or "127.0.0.1",
        "PORT": url.port or "",
    }


def import_version_under_test() -> None:
    """Make ``import django_sapool`` take SAPOOL_SRC's copy, if one is set."""
    src = os.environ.get("SAPOOL_SRC")
    if src:  # an editable install's finder would win over sys.path: drop it
        sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, src)
