"""Pooled PostgreSQL against a real server, with psycopg 3 and with psycopg2."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.postgresql


def test_sequential_requests_share_one_server_connection(pg_run: Any) -> None:
    facts = pg_run("sequential", params={"n": 200})
    assert facts["failures"] == 0
    assert facts["distinct"] == 1, facts["server_pids"]
    assert facts["server_sessions"] == 1
    (pool,) = facts["pools"]
    assert (pool["connections_opened"], pool["checked_out"], pool["idle"]) == (1, 0, 1)


def test_threads_never_exceed_pool_size(pg_run: Any) -> None:
    facts = pg_run(
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


def test_exhaustion_raises_operational_error_after_timeout(pg_run: Any) -> None:
    facts = pg_run(
        "exhaustion",
        params={"hold_seconds": 2.0},
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "TIMEOUT": 0.5},
    )
    error = facts["error"]
    assert error["mro"][:2] == [
        "django_sapool.errors.PoolExhausted",
        "django.db.utils.OperationalError",
    ]
    assert "alias 'default'" in error["message"]
    assert "TIMEOUT=0.5s" in error["message"]
    assert "POOL_SIZE=1 + MAX_OVERFLOW=0" in error["message"]
    assert "settings.DATABASES['default']['POOL_OPTIONS']" in error["message"]
    # Waits TIMEOUT, not the holder's 2 s, and not forever.
    assert 0.45 <= facts["elapsed"] < 1.5
    assert facts["after_code"] == 200
    (pool,) = facts["pools"]
    assert (pool["timeouts"], pool["checked_out"]) == (1, 0)


def test_no_transaction_survives_a_request(pg_run: Any) -> None:
    facts = pg_run("transactions", POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0})
    for route in ("/fail-atomic", "/leave-open", "/raw-begin"):
        outcome = facts[route]
        assert outcome["idle_in_transaction"] == 0, route
        assert outcome["rows"] == 0, f"{route} committed a row it never committed"
    assert facts["/fail-atomic"]["code"] == 500
    assert facts["/leave-open"]["code"] == 200
    assert facts["/raw-begin"]["code"] == 200
    # The rolled-back connection was reused, not thrown away.
    assert facts["same_backend"] is True
    (pool,) = facts["pools"]
    assert pool["connections_opened"] == 1


def test_one_query_request_costs_one_statement(pg_run: Any) -> None:
    facts = pg_run("statements", params={"n": 100})
    assert facts["ok"] == 100
    assert facts["per_request"] == 1.0
    (pool,) = facts["pools"]
    assert pool["pings"] == 0  # a busy connection is not pinged


def test_statement_counts_of_djangos_modes(pg_run: Any) -> None:
    """Django's own modes, for comparison (reported, and sanity-checked)."""
    default = pg_run("statements", engine="django.db.backends.postgresql", params={"n": 100})
    persistent = pg_run(
        "statements",
        engine="django.db.backends.postgresql",
        params={"n": 100},
        CONN_MAX_AGE=None,
        CONN_HEALTH_CHECKS=True,
    )
    print(
        f"\nstatements per one-query request ({default['driver']}): "
        f"default={default['per_request']} persistent+health-checks={persistent['per_request']}"
    )
    # The health check pays a SELECT 1 on every request after the first.
    assert persistent["per_request"] == 2.0
    assert default["per_request"] >= 1.0


@pytest.mark.parametrize("interval", [0.5, 3600.0])
def test_killed_idle_connection_is_replaced(pg_run: Any, interval: float) -> None:
    # With a huge PRE_PING_INTERVAL only the zero-cost socket check can notice.
    facts = pg_run(
        "dead_connection",
        params={"wait": 0.1},
        POOL_OPTIONS={"PRE_PING_INTERVAL": interval},
    )
    assert facts["gone"]
    assert facts["code"] == 200
    assert facts["second"] != facts["first"]
    (pool,) = facts["pools"]
    assert pool["connections_invalidated"] == 1
    assert pool["connections_opened"] == 2


def test_idle_connection_is_pinged_busy_one_is_not(pg_run: Any) -> None:
    # Two requests back to back (well within the interval, even on a loaded
    # machine), then one after an idle time longer than the interval.
    facts = pg_run("idle_ping", params={"idle": 1.3}, POOL_OPTIONS={"PRE_PING_INTERVAL": 1.0})
    assert facts["busy_pings"] == 0
    (pool,) = facts["pools"]
    assert (pool["pings"], pool["pings_failed"]) == (1, 0)
    assert len(set(facts["pids"])) == 1


def test_recycle_replaces_old_connections(pg_run: Any) -> None:
    facts = pg_run("recycle", params={"wait": 1.3}, POOL_OPTIONS={"RECYCLE": 1})
    assert facts["second"] != facts["first"]
    assert facts["first_alive"] == 0  # the old session was closed, not leaked


def test_discard_all_clears_session_state(pg_run: Any) -> None:
    facts = pg_run(
        "session_state",
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "RESET_ON_RETURN": "DISCARD ALL"},
    )
    assert facts["pid"] == facts["dirty_pid"]  # same server session, reused
    assert facts["search_path"] == '"$user", public'
    assert facts["temp_table"] is False
    assert facts["time_zone"] == "UTC"  # Django's session setup redone after the reset


def test_rollback_reset_keeps_session_state_like_persistent_connections(pg_run: Any) -> None:
    facts = pg_run("session_state", POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0})
    assert facts["pid"] == facts["dirty_pid"]
    assert facts["search_path"] == "dirty, public"
    assert facts["temp_table"] is True


def test_forked_children_never_touch_the_parents_sessions(pg_run: Any) -> None:
    facts = pg_run("fork", params={"children": 8})
    parent = {facts["parent_pid"], facts["idle_pid"]}
    # The parent's checked-out session still answers, as the same backend.
    assert facts["parent_pid_after"] == facts["parent_pid"]
    assert facts["committed"] == 2  # the parent's transaction was not touched
    # Its idle pooled session survived the children's exits and is reused.
    assert facts["idle_pid_after"] == facts["idle_pid"]
    assert None not in facts["child_pids"]
    assert not parent & set(facts["child_pids"])
    (pool,) = facts["pools"]
    assert pool["connections_invalidated"] == 0
