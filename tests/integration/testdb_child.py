"""Django's test runner's databases on pooled aliases, in a process of their own.

Run as ``python -m tests.integration.testdb_child``; the parent passes a JSON
config in SAPOOL_TESTDB_CHILD (``scenario``, ``databases``, ``admin_conninfo``)
and gets the facts back as JSON on a line starting with ``SAPOOL-RESULT``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.child_setup import read_config, setup_django

CONFIG = read_config("SAPOOL_TESTDB_CHILD")


def _databases() -> dict[str, Any]:
    databases: dict[str, Any] = CONFIG["databases"]
    if CONFIG.get("path_names"):  # NAME and TEST["NAME"] as pathlib.Path (SQLite)
        for db in databases.values():
            db["NAME"] = Path(db["NAME"])
            db["TEST"]["NAME"] = Path(db["TEST"]["NAME"])
    return databases


setup_django(INSTALLED_APPS=["django.contrib.contenttypes"], DATABASES=_databases())

from django.db import connection  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402


def template() -> dict[str, Any]:
    """TEST["TEMPLATE"] is the alias's own database, used (and closed) before the run."""
    import psycopg

    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()  # a request, a check, close_old_connections(): before the run
    with psycopg.connect(CONFIG["admin_conninfo"], autocommit=True) as admin:
        sessions = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
        ).fetchone()
    try:
        config = setup_databases(verbosity=0, interactive=False)
    except BaseException as exc:  # Django's creation exits (SystemExit) on a failed CREATE
        return {"sessions_on_template": sessions[0], "error": f"{type(exc).__name__}: {exc}"}
    created = connection.settings_dict["NAME"]
    teardown_databases(config, verbosity=0)
    return {"sessions_on_template": sessions[0], "created": created, "error": ""}


def _deleted_files_open(path: str) -> int:
    """How many descriptors of this process point at ``path``, deleted."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == f"{path} (deleted)":
            count += 1
    return count


def sqlite_twice() -> dict[str, Any]:
    """The test database created, used and destroyed twice in one process."""
    test_name = str(connection.settings_dict["TEST"]["NAME"])
    runs = []
    for _ in range(2):
        config = setup_databases(verbosity=0, interactive=False)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'marker'")
            marker_seen = cursor.fetchone()[0]
            cursor.execute("CREATE TABLE marker (x int)")
        try:
            teardown_databases(config, verbosity=0)
            error = ""
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        runs.append(
            {
                "marker_seen": marker_seen,
                "file_left": os.path.exists(test_name),
                "deleted_files_open": _deleted_files_open(test_name),
                "error": error,
            }
        )
    return {"runs": runs}


def main() -> None:
    facts = {"template": template, "sqlite_twice": sqlite_twice}[CONFIG["scenario"]]()
    print("SAPOOL-RESULT " + json.dumps(facts), flush=True)


if __name__ == "__main__":
    main()
