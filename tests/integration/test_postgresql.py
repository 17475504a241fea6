"""Pooled PostgreSQL against a real server, with psycopg 3 and with psycopg2."""

from __future__ import annotations

from typing import Any

import pytest

from .server_scenarios import (  # noqa: F401  # collected here, on server_run
    test_a_checkout_moved_to_a_new_pool_still_fails_within_timeout,
    test_a_checkout_waiting_behind_a_failed_connect_opens_its_own_at_once,
    test_a_connection_its_borrower_closed_is_never_lent_again,
    test_a_forked_gevent_child_of_a_process_that_queried_is_not_frozen,
    test_a_greenlet_that_ends_without_closing_gives_its_connection_back,
    test_a_pool_disposed_while_checkouts_wait_opens_nothing_more,
    test_an_iterators_cursor_kept_past_its_request_leaves_the_next_borrower_alone,
    test_connections_of_threads_that_ended_without_closing_are_taken_back,
    test_exhaustion_raises_operational_error_after_timeout,
    test_forked_children_never_touch_the_parents_sessions,
    test_killed_idle_connection_is_replaced,
    test_no_transaction_survives_a_request,
    test_sequential_requests_share_one_server_connection,
    test_threads_never_exceed_pool_size,
    test_threads_that_end_while_others_wait_give_their_connections_to_the_waiters,
)

pytestmark = pytest.mark.postgresql


@pytest.fixture
def server_run(pg_run: Any) -> Any:
    """server_scenarios.py's tests run on this vendor's drivers."""
    return pg_run


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


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_flags_follow_a_real_session_as_the_driver_reports_it(
    pg: Any, pg_database: str, driver: str
) -> None:
    """What the pool reads at every checkout and return (``ConnState.flags``).

    psycopg 3's are read from the connection's ``pgconn``; psycopg2's through
    the driver's methods. Through a transaction, an SQL error, a backend the
    server terminated and a close, they answer as the driver itself does.
    """
    from .conftest import _admin

    if driver == "psycopg":
        import psycopg as module

        from django_sapool.drivers import Psycopg3Ops
        from django_sapool.drivers.postgresql import PgconnFlags

        ops: Any = Psycopg3Ops()
        conn = module.connect(pg.conninfo(pg_database), autocommit=True)
        pid = conn.info.backend_pid
    else:
        import psycopg2 as module

        from django_sapool.drivers import Psycopg2Ops

        ops = Psycopg2Ops()
        conn = module.connect(pg.conninfo(pg_database))
        conn.autocommit = True
        pid = conn.get_backend_pid()
    flags = ops.flags(conn)
    if driver == "psycopg":
        assert isinstance(flags, PgconnFlags)

    def agree() -> bool:
        # psycopg 3 says broken apart from closed; psycopg2's closed is 2 then.
        closed = bool(conn.closed or getattr(conn, "broken", False))
        assert flags.is_closed() is ops.is_closed(conn) is closed
        assert flags.clean() is ops.clean(conn)
        return flags.clean()

    def run(sql: str) -> None:
        cursor = conn.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    try:
        assert agree()
        run("BEGIN")
        assert not agree()  # a transaction is open
        run("ROLLBACK")
        assert agree()
        with pytest.raises(module.Error):
            run("SELEC 1")
        assert agree()  # an SQL error leaves it open and clean
        with _admin(pg) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(module.OperationalError):
            run("SELECT 1")
        assert flags.is_closed()
        assert not agree()
    finally:
        conn.close()
    assert flags.is_closed()
    assert not flags.clean()


@pytest.mark.parametrize("pg_run", ["psycopg"], indirect=True)
def test_psycopg_prepared_statements_survive_a_session_reset(pg_run: Any) -> None:
    """server_side_binding with prepare_threshold 1: psycopg prepares Django's statements.

    RESET_ON_RETURN "reset" (DISCARD ALL) drops them on the server; psycopg
    noticed only the first DISCARD ALL, so from the second reset on each
    checkout failed in Django's session setup ('prepared statement "_pg3_0"
    does not exist'), and its connection was discarded.
    """
    facts = pg_run(
        "sequential",
        params={"n": 20},
        OPTIONS={"server_side_binding": True, "prepare_threshold": 1},
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "RESET_ON_RETURN": "reset"},
    )
    assert facts["failures"] == 0
    assert facts["distinct"] == 1  # one session, reset 20 times
    (pool,) = facts["pools"]
    assert (pool["connections_opened"], pool["connections_invalidated"]) == (1, 0)


def test_writes_on_an_alias_read_only_by_its_own_options_keep_the_pool(pg_run: Any) -> None:
    """OPTIONS["options"] = "-c default_transaction_read_only=on": a read-only alias on purpose.

    A write on it fails with SQLSTATE 25006 while the session reports
    default_transaction_read_only on, which the pool took for a demoted
    primary: each attempt retired the whole pool (its sessions closed, new
    ones opened). Now the alias's own choice retires nothing.
    """
    facts = pg_run(
        "read_only_alias_write",
        params={"attempts": 3},
        OPTIONS={"options": "-c default_transaction_read_only=on"},
        POOL_OPTIONS={"POOL_SIZE": 2, "MAX_OVERFLOW": 0},
    )
    assert facts["errors"] == ["25006"] * 3
    assert set(facts["after"]) <= set(facts["before"])  # the same sessions serve on
    assert facts["server_sessions"] == 2
    (pool,) = facts["pools"]
    assert (pool["evictions"], pool["connections_opened"], pool["connections_closed"]) == (0, 2, 0)
