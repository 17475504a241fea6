"""The GIS backends (postgis, spatialite, mysql_gis) with a geometry model, pooled.

Each test makes its own database, runs tests/integration/gis_child.py in a
fresh Django process (settings are per process) and drops the database. The
child creates a table with a PointField, inserts through the ORM over several
request cycles, and runs spatial queries; here we check the answers and that
one server connection served every cycle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, MySQLServer, PgServer, unavailable
from .test_django_suite import require_gis_libraries, require_spatialite

CYCLES = 8


def run_gis_child(databases: dict[str, Any], driver: str = "", timeout: float = 300) -> Any:
    """Run the child on these DATABASES; return its facts."""
    config = {"databases": databases, "driver": driver, "cycles": CYCLES}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.gis_child"],
        cwd=ROOT,
        env={**os.environ, "SAPOOL_GIS_CHILD": json.dumps(config)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SAPOOL-RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"gis_child failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-5000:]}"
        )
    return json.loads(lines[-1].removeprefix("SAPOOL-RESULT "))


def check_facts(facts: dict[str, Any], vendor: str) -> None:
    assert facts["vendor"] == vendor
    # The spatial answers: points p0..p7 at x = 0, 1000, ..., 7000 (metres).
    assert facts["count"] == CYCLES
    assert facts["within"] == ["p0", "p1", "p2"]
    assert facts["intersects"] == ["p3"]
    assert facts["nearest"] == [["p3", 400.0], ["p2", 600.0], ["p4", 1400.0]]
    assert facts["distance_lte"] == ["p2", "p3", "p4"]
    # One server connection for the table creation and all cycles, back in the pool.
    assert len(set(facts["sessions"])) == 1, facts["sessions"]
    assert facts["connection_is_none"] is True
    (pool,) = facts["pools"]
    assert pool["connections_opened"] == 1, pool
    assert (pool["checked_out"], pool["idle"], pool["connections_invalidated"]) == (0, 1, 0)


# -- PostGIS -------------------------------------------------------------------


@pytest.fixture
def postgis_database(pg: PgServer) -> Iterator[str]:
    import psycopg

    require_gis_libraries()
    name = f"sapool_gis_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.conninfo(pg.admin_db), autocommit=True) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
        ).fetchone()
        if not available:
            unavailable(f"PostGIS is not installed on {pg.host}:{pg.port} (scripts/ensure-gis)")
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(pg.conninfo(pg.admin_db), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgresql
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgis(driver: str, pg: PgServer, postgis_database: str) -> None:
    pytest.importorskip(driver)
    db = pg.settings(postgis_database, "sapool-gis", ENGINE="django_sapool.backends.postgis")
    facts = run_gis_child({"default": db}, driver=driver)
    assert facts["driver"] == driver
    check_facts(facts, "postgresql")


# -- SpatiaLite ----------------------------------------------------------------


def test_spatialite(tmp_path: Path) -> None:
    require_spatialite()
    db = {"ENGINE": "django_sapool.backends.spatialite", "NAME": str(tmp_path / "gis.sqlite3")}
    facts = run_gis_child({"default": db})
    # pysqlite3 where the interpreter's sqlite3 cannot load extensions (bootstrap).
    assert facts["driver"] in ("sqlite3", "pysqlite3")
    check_facts(facts, "sqlite")


# -- MySQL/MariaDB spatial -----------------------------------------------------


@pytest.mark.mysql
def test_mysql_gis(mysql: MySQLServer, mysql_database: str) -> None:
    # mysql and mysql_database (conftest.py): a database of its own, dropped after.
    require_gis_libraries()
    db = mysql.settings(mysql_database, ENGINE="django_sapool.backends.mysql_gis")
    facts = run_gis_child({"default": db})
    assert facts["driver"] == "MySQLdb"
    check_facts(facts, "mysql")
