"""Pooled MySQL/MariaDB (mysqlclient) against a real server."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.mysql


def test_sequential_requests_share_one_server_connection(mysql_run: Any) -> None:
    facts = mysql_run("sequential", params={"n": 200})
    assert facts["failures"] == 0
    assert facts["distinct"] == 1  # one CONNECTION_ID() for all 200 requests
    assert facts["server_sessions"] == 1
    (pool,) = facts["pools"]
    assert (pool["connections_opened"], pool["checked_out"], pool["idle"]) == (1, 0, 1)


def test_threads_never_exceed_pool_size(mysql_run: Any) -> None:
    facts = mysql_run(
        "threads",
        params={"n_threads": 32, "cycles": 50},
        POOL_OPTIONS={"POOL_SIZE": 4, "MAX_OVERFLOW": 0, "TIMEOUT": 60},
    )
    assert (facts["ok"], facts["failed"]) == (32 * 50, 0)
    assert 1 <= facts["peak_server_sessions"] <= 4
    assert facts["distinct"] <= 4
    (pool,) = facts["pools"]
    assert pool["connections_opened"] <= 4
    assert pool["checked_out"] == 0


def test_exhaustion_raises_operational_error_after_timeout(mysql_run: Any) -> None:
    facts = mysql_run(
        "exhaustion",
        params={"hold_seconds": 2.0},
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "TIMEOUT": 0.5},
    )
    assert facts["error"]["mro"][:2] == [
        "django_sapool.errors.PoolExhausted",
        "django.db.utils.OperationalError",
    ]
    assert "POOL_SIZE=1 + MAX_OVERFLOW=0" in facts["error"]["message"]
    assert 0.45 <= facts["elapsed"] < 1.5
    assert facts["after_code"] == 200


def test_no_transaction_survives_a_request(mysql_run: Any) -> None:
    facts = mysql_run("transactions", POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0})
    for route in ("/fail-atomic", "/leave-open", "/raw-begin"):
        outcome = facts[route]
        assert outcome["idle_in_transaction"] == 0, route  # innodb_trx is empty for us
        assert outcome["rows"] == 0, f"{route} committed a row it never committed"
    assert facts["same_backend"] is True
    (pool,) = facts["pools"]
    assert pool["connections_opened"] == 1


def test_one_query_request_costs_one_statement_and_no_ping(mysql_run: Any) -> None:
    facts = mysql_run("statements", params={"n": 100, "scope": "session"})
    assert facts["ok"] == 100
    assert facts["per_request"] == 1.0
    assert facts["pings_per_request"] == 0.0


def test_statement_counts_of_djangos_modes(mysql_run: Any) -> None:
    """Django's own modes, for comparison (reported, and sanity-checked)."""
    engine = "django.db.backends.mysql"
    default = mysql_run("statements", engine=engine, params={"n": 100})
    persistent = mysql_run(
        "statements", engine=engine, params={"n": 100, "scope": "session"}, CONN_MAX_AGE=None
    )
    print(
        f"\nMySQL statements per one-query request: default={default['per_request']} "
        f"persistent={persistent['per_request']}"
    )
    assert persistent["per_request"] == 1.0
    assert default["per_request"] > 1.0


@pytest.mark.parametrize("interval", [0.5, 3600.0])
def test_killed_idle_connection_is_replaced(mysql_run: Any, interval: float) -> None:
    facts = mysql_run(
        "dead_connection", params={"wait": 0.1}, POOL_OPTIONS={"PRE_PING_INTERVAL": interval}
    )
    assert facts["gone"]
    assert facts["code"] == 200
    assert facts["second"] != facts["first"]
    (pool,) = facts["pools"]
    assert pool["connections_invalidated"] == 1


def test_server_gone_away_after_wait_timeout_is_invisible(mysql_run: Any) -> None:
    # The server drops our idle sessions after 1 s ("MySQL server has gone away").
    facts = mysql_run(
        "recycle",
        params={"wait": 2.5},
        OPTIONS={"init_command": "SET SESSION wait_timeout = 1"},
    )
    assert facts["second"] != facts["first"]
    assert not facts["first_alive"]


def test_strict_reset_clears_session_state(mysql_run: Any) -> None:
    facts = mysql_run(
        "session_state",
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "RESET_ON_RETURN": "reset"},
    )
    assert facts["pid"] == facts["dirty_pid"]  # same server session (COM_RESET_CONNECTION)
    assert facts["user_variable"] is None
    assert facts["temp_table"] is False
    # Django's session setup is redone after the reset.
    assert facts["sql_auto_is_null"] == 0
    assert facts["isolation"] == "READ-COMMITTED"


def test_rollback_reset_keeps_session_state_like_persistent_connections(
    mysql_run: Any,
) -> None:
    facts = mysql_run("session_state", POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0})
    assert facts["pid"] == facts["dirty_pid"]
    assert facts["user_variable"] == 42
    assert facts["temp_table"] is True


def test_forked_children_never_touch_the_parents_sessions(mysql_run: Any) -> None:
    facts = mysql_run("fork", params={"children": 8})
    assert facts["parent_pid_after"] == facts["parent_pid"]
    assert facts["committed"] == 2
    assert facts["idle_pid_after"] == facts["idle_pid"]
    assert not {facts["parent_pid"], facts["idle_pid"]} & set(facts["child_pids"])
