"""Django's test runner creates and drops databases that pools may hold connections to.

Each scenario runs in its own Django process (``testdb_child.py``) against the
real server; the figures come from the server (``pg_stat_activity``) and the
file system (``/proc/self/fd``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import PgServer, own_pg_database, run_child
from .logins import pg_drop


def _run(scenario: str, databases: dict[str, Any], **config: Any) -> dict[str, Any]:
    return run_child(
        {"scenario": scenario, "databases": databases, **config},
        module="tests.integration.testdb_child",
        env_var="SAPOOL_TESTDB_CHILD",
    )


@pytest.mark.postgresql
def test_a_test_database_is_created_from_the_aliases_own_database_as_template(
    pg: PgServer,
) -> None:
    """TEST["TEMPLATE"] = the alias's database, which the process used before the run.

    Its connection, closed, stays in the pool: CREATE DATABASE ... TEMPLATE
    failed ("source database ... is being accessed by other users"), where
    Django's own backend, whose close() ends the session, creates it.
    """
    with own_pg_database(pg, "sapool_tpl") as dbname:
        db = pg.settings(dbname, "sapool-template", TEST={"TEMPLATE": dbname})
        try:
            facts = _run("template", {"default": db}, admin_conninfo=pg.conninfo(pg.admin_db))
        finally:
            pg_drop(pg, f"test_{dbname}", [])
    assert facts["sessions_on_template"] == 1  # the pool's idle connection, before the run
    assert facts["error"] == ""
    assert facts["created"] == f"test_{dbname}"


def test_a_sqlite_test_database_named_by_a_path_is_created_afresh(tmp_path: Path) -> None:
    """NAME and TEST["NAME"] as pathlib.Path, the test database made twice in one process.

    The pools keep str(NAME): disposing by a Path matched none, so the pool
    kept the deleted file open, and the second run reused its connections to
    it (seeing the first run's table), then failed to remove the file.
    """
    db = {
        "ENGINE": "django_sapool.backends.sqlite3",
        "NAME": str(tmp_path / "app.sqlite3"),
        "TEST": {"NAME": str(tmp_path / "test_app.sqlite3")},
    }
    facts = _run("sqlite_twice", {"default": db}, path_names=True)
    for run in facts["runs"]:
        assert run == {
            "marker_seen": 0,
            "file_left": False,
            "deleted_files_open": 0,
            "error": "",
        }
