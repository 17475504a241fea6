"""django-health-check's endpoint on real servers: healthy, exhausted, unreachable, silent.

Each driver runs one Django process (health_child.py) with
``django_sapool.contrib.health_check`` installed and the endpoint mounted as the
README shows, and asks it, in JSON, through Django's test Client:

- healthy: 200, five probes on one server session, nothing left checked out;
- exhausted (3 threads hold POOL_SIZE 2 + MAX_OVERFLOW 1; then a 4th waits): 500
  naming the limits, in well under TIMEOUT (5 s), and the pool's checkouts,
  checkout_waits, waiting and timeouts, and the server's sessions, unchanged:
  the probe never checked a connection out nor joined the queue;
- healthy again once the connections are returned (one checkout more);
- a closed port: 500 "server unreachable ... refused" within 3 s, no password;
- an idle connection black-holed behind a fault proxy: 500 within PING_TIMEOUT
  (1 s) + margin (the probe's ping has a deadline; without it the ping would
  wait forever, the proxy's kernel acknowledges every byte); then the connect
  through the black hole ends by CONNECT_TIMEOUT (1 s); after the heal, healthy
  on a new connection.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from .conftest import MySQLServer, PgServer, run_child, unavailable

KEY = "PooledDatabase(alias='{}')"
PASSWORD = "Zebra-4711-do-not-leak"
#: Slack for a loaded CI machine on top of what a phase may take.
MARGIN = 1.5


@pytest.fixture(autouse=True)
def _django_health_check() -> None:
    try:
        import health_check  # noqa: F401
    except ImportError as exc:
        unavailable(f"django-health-check is not installed (the test extra has it): {exc}")


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run(vendor: str, driver: str, default: dict[str, Any], **config: Any) -> dict[str, Any]:
    return run_child(
        {
            "vendor": vendor,
            "driver": driver,
            "default": default,
            "closed_port": closed_port(),
            "down_password": PASSWORD,
            **config,
        },
        timeout=120,
        module="tests.integration.health_child",
        env_var="SAPOOL_HEALTH_CHILD",
    )


def verdict(response: dict[str, Any], alias: str) -> str:
    """The one check's result text ("OK", or the error) of a per-alias endpoint."""
    body = response["body"]
    assert list(body) == [KEY.format(alias)], body
    text: str = body[KEY.format(alias)]
    return text


UNCHANGED = ("checkouts", "checkout_waits", "waiting", "timeouts", "checked_out", "size")


def check(facts: dict[str, Any]) -> None:
    # 3.x has the plugin registry (health_check.urls at /legacy/), 4.x has none.
    assert facts["legacy"] == facts["version"].startswith("3."), facts["version"]
    # Healthy: five 200s, served by one pooled connection.
    for response in facts["healthy"]:
        assert response["code"] == 200 and verdict(response, "default") == "OK"
    healthy = facts["healthy_status"]
    assert (healthy["connections_opened"], healthy["checked_out"], healthy["checkouts"]) == (
        1,
        0,
        5,
    )
    assert facts["healthy_sessions"] == 1
    # The mounted pooled_checks(): one check per pooled alias, the unpooled one left out.
    assert sorted(facts["all"]["body"]) == sorted(
        KEY.format(a) for a in ("default", "down", "proxied")
    )
    assert facts["all"]["code"] == 500  # "down" is down

    # Exhausted: reported at once, nothing checked out, no wait in the queue.
    assert facts["holder_errors"] == []
    for phase, found in (
        ("held", "all 3 connections checked out"),
        ("waiting", "1 thread(s) waiting"),
    ):
        response, before, after = facts[phase], facts[f"{phase}_before"], facts[f"{phase}_after"]
        assert response["code"] == 500
        text = verdict(response, "default")
        assert "pool exhausted" in text and found in text, text
        assert "POOL_SIZE=2 + MAX_OVERFLOW=1" in text and "not probed" in text, text
        assert response["seconds"] < 0.5, response  # TIMEOUT is 5 s
        assert {k: after[k] for k in UNCHANGED} == {k: before[k] for k in UNCHANGED}
        assert before["checked_out"] == 3 and before["idle"] == 0
    assert facts["held_before"]["waiting"] == 0 and facts["waiting_before"]["waiting"] == 1
    assert facts["held_sessions_before"] == facts["held_sessions_after"] == 3

    # Returned: healthy again, with one checkout (the probe's) and no new session.
    assert facts["released"]["code"] == 200 and verdict(facts["released"], "default") == "OK"
    before, after = facts["released_before"], facts["released_after"]
    assert after["checkouts"] == before["checkouts"] + 1
    assert after["checked_out"] == 0 and after["connections_opened"] == before["connections_opened"]
    assert facts["released_sessions"] <= 3

    if facts["legacy"]:  # django-health-check 3.x: the registry our AppConfig filled
        legacy = facts["legacy_exhausted"]
        assert legacy["code"] == 500
        assert "pool exhausted" in legacy["body"][KEY.format("default")]
        assert facts["legacy_released"]["body"][KEY.format("default")] == "OK"

    # A closed port: unhealthy at once, with the driver's reason, without the password.
    down = facts["down"]
    assert down["code"] == 500 and down["seconds"] < 3, down
    text = verdict(down, "down")
    assert "alias 'down': server unreachable" in text, text
    # psycopg: "Connection refused"; MariaDB's clients: "Can't connect to server on ...".
    assert "refused" in text or "Can't connect" in text, text
    assert PASSWORD not in str(down["body"])
    assert facts["down_status"]["checked_out"] == 0

    # Silent: the probe's ping is bounded by PING_TIMEOUT, the connect by CONNECT_TIMEOUT.
    assert facts["proxied_ok"]["code"] == 200
    idle = facts["proxied_idle_blackholed"]
    assert idle["code"] == 500 and 1.0 <= idle["seconds"] <= 1.0 + MARGIN, idle
    text = verdict(idle, "proxied")
    assert "server unreachable" in text and "did not answer within PING_TIMEOUT=1s" in text, text
    after = facts["proxied_after_blackhole"]
    # The silent connection was discarded, not returned (SQLAlchemy keeps its
    # emptied record idle: the next checkout connects it again).
    assert (after["checked_out"], after["connections_invalidated"]) == (0, 1), after
    connect = facts["proxied_connect_blackholed"]
    assert connect["code"] == 500 and 1.0 <= connect["seconds"] <= 1.0 + MARGIN, connect
    assert "server unreachable" in verdict(connect, "proxied")
    healed = facts["proxied_healed"]
    assert healed["code"] == 200 and healed["seconds"] < 1.0, healed
    # Opened: the first and the healed one (the connect into the black hole failed).
    assert facts["proxied_healed_status"]["connections_opened"] == 2
    assert facts["proxied_healed_status"]["checked_out"] == 0


@pytest.mark.postgresql
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql(pg: PgServer, pg_database: str, driver: str) -> None:
    pytest.importorskip(driver)
    app_name = f"sapool-health-{uuid.uuid4().hex[:12]}"
    facts = run(
        "postgresql",
        driver,
        pg.settings(pg_database, app_name),
        admin=pg.conninfo(pg.admin_db),
        sessions_key=app_name,
    )
    assert facts["driver"] == driver
    check(facts)


@pytest.mark.mysql
@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_mariadb(mysql: MySQLServer, mysql_database: str, driver: str) -> None:
    pytest.importorskip("MySQLdb" if driver == "mysqlclient" else driver)
    facts = run(
        "mysql",
        driver,
        mysql.settings(mysql_database),
        admin=mysql.conninfo(),
        sessions_key=mysql_database,
    )
    assert facts["driver"] == driver
    check(facts)
