"""django-prometheus' database backend, pooled: its counters still count, the pool still caps.

Two ways, both in the README ("Pooling another backend"): a module of the
project's own (``tests/integration/prometheus_db/base.py``:
``DatabaseWrapper = django_sapool.pooled_wrapper(
"django_prometheus.db.backends.postgresql")``) and the generic ENGINE with
``POOL_OPTIONS["BACKEND"]``. Each run is a fresh Django process
(prometheus_child.py): 8 threads x 25 requests of 3 queries on POOL_SIZE=2,
then 10 requests whose query fails, with django-prometheus' middleware.

What the counters mean on a pool: ``django_db_execute_total`` and the query
histogram count every statement, as before; ``django_db_new_connections_total``
now counts server connections the pool opened, not checkouts (our mixin calls
the wrapped ``get_new_connection()`` only when the pool needs one).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from .conftest import MySQLServer, PgServer, run_child, unavailable

THREADS, REQUESTS, QUERIES, ERRORS = 8, 25, 3, 10
POOL = {"POOL_SIZE": 2, "MAX_OVERFLOW": 0}
GENERIC = "django_sapool.backends.pooled"


@pytest.fixture(autouse=True)
def _django_prometheus() -> None:
    try:
        import django_prometheus  # noqa: F401
    except ImportError as exc:
        unavailable(f"django-prometheus is not installed (the test extra has it): {exc}")


def run(config: dict[str, Any]) -> dict[str, Any]:
    return run_child(
        {**config, "threads": THREADS, "requests": REQUESTS, "queries": QUERIES, "errors": ERRORS},
        timeout=120,
        module="tests.integration.prometheus_child",
        env_var="SAPOOL_PROMETHEUS_CHILD",
    )


def check(facts: dict[str, Any], vendor: str) -> None:
    start, warm, end = facts["start"], facts["warm"], facts["end"]
    (pool,) = facts["pools"]
    results, errors = facts["results"], facts["errors"]
    assert [r["code"] for r in results] == [200] * (THREADS * REQUESTS)
    assert all(e["code"] == 200 and e["body"]["error"] == "ProgrammingError" for e in errors)

    # The pool's cap and reuse: two server sessions, opened by the warm-up,
    # served all 210 requests.
    pids = {r["body"]["pid"] for r in results} | {e["body"]["pid"] for e in errors}
    assert len(pids) == 2, pids
    assert facts["peak_sessions"] <= 2
    assert (pool["connections_opened"], pool["checked_out"], pool["timeouts"]) == (2, 0, 0)
    assert pool["checkouts"] >= THREADS * REQUESTS + ERRORS
    assert pool["checkout_waits"] > 0  # 8 threads really contended for 2 connections

    # django-prometheus' counters: every statement of the requests counted,
    # each timed, each failure counted; new connections = server sessions opened.
    executed = THREADS * REQUESTS * QUERIES + ERRORS * 2
    assert end["django_db_execute_total"] - warm["django_db_execute_total"] == executed
    timed = (
        end["django_db_query_duration_seconds_count"]
        - warm["django_db_query_duration_seconds_count"]
    )
    assert timed == executed
    assert end["django_db_errors_total"] - warm["django_db_errors_total"] == ERRORS
    opened = end["django_db_new_connections_total"] - start["django_db_new_connections_total"]
    assert opened == pool["connections_opened"] == 2
    assert end["django_db_new_connection_errors_total"] == 0
    assert pool["vendor"] == vendor


# -- PostgreSQL --------------------------------------------------------------------


@pytest.fixture
def pg_config(pg: PgServer, pg_database: str) -> Any:
    def config(driver: str, **db_settings: Any) -> dict[str, Any]:
        pytest.importorskip(driver)
        app_name = f"sapool-prom-{uuid.uuid4().hex[:10]}"
        return {
            "driver": driver,
            "vendor": "postgresql",
            "databases": {"default": pg.settings(pg_database, app_name, **db_settings)},
            "app_name": app_name,
            "dbname": pg_database,
            "admin_conninfo": pg.conninfo(pg.admin_db),
        }

    return config


@pytest.mark.postgresql
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql_module_with_pooled_wrapper(pg_config: Any, driver: str) -> None:
    facts = run(pg_config(driver, ENGINE="tests.integration.prometheus_db", POOL_OPTIONS=POOL))
    assert facts["driver"] == driver
    assert facts["wrapper"] == (
        "django_sapool.wrapping.pooled_wrapper('django_prometheus.db.backends.postgresql')"
        ".DatabaseWrapper"
    )
    check(facts, "postgresql")


@pytest.mark.postgresql
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql_generic_engine(pg_config: Any, driver: str) -> None:
    options = {**POOL, "BACKEND": "django_prometheus.db.backends.postgresql"}
    facts = run(pg_config(driver, ENGINE=GENERIC, POOL_OPTIONS=options))
    assert facts["driver"] == driver
    assert "django_prometheus.db.backends.postgresql" in facts["wrapper"]
    check(facts, "postgresql")


# -- MySQL -------------------------------------------------------------------------


@pytest.mark.mysql
@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_mysql_generic_engine(mysql: MySQLServer, mysql_database: str, driver: str) -> None:
    pytest.importorskip("MySQLdb" if driver == "mysqlclient" else driver)
    options = {**POOL, "BACKEND": "django_prometheus.db.backends.mysql"}
    facts = run(
        {
            "driver": driver,
            "vendor": "mysql",
            "databases": {
                "default": mysql.settings(mysql_database, ENGINE=GENERIC, POOL_OPTIONS=options)
            },
            "dbname": mysql_database,
            "admin_conninfo": mysql.conninfo(),
        }
    )
    assert facts["driver"] == ("MySQLdb" if driver == "mysqlclient" else "pymysql")
    assert "django_prometheus.db.backends.mysql" in facts["wrapper"]
    check(facts, "mysql")
