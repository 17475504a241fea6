"""What the in-process benchmarks share: this machine's servers, the version under test, rounds.

``instructions.py``, ``contention.py`` and ``lend_io.py`` take the server from
SAPOOL_PG_URL or SAPOOL_MYSQL_URL (default: this machine's); the first two import
django_sapool from ``--src DIR`` (passed on to their child processes as
SAPOOL_SRC) to compare versions. ``contention.py`` and ``lend_io.py`` run each
round in a child process of their own (``run_child()``).
"""

from __future__ import annotations

import json
import os
import subprocess
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


def run_child(command: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """Run a benchmark's child process; return the JSON object it printed last.

    ``what`` names the round in the error raised when the child fails.
    """
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"round failed for {what}:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
