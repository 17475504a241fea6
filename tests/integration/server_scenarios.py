"""The pool's rules that hold on every server, written once for PostgreSQL and MySQL/MariaDB.

test_postgresql.py and test_mysql.py import these tests, so each runs in both
modules, on the module's ``server_run`` fixture (conftest's ``pg_run``: psycopg 3
and psycopg2; ``mysql_run``: mysqlclient and PyMySQL). What differs by vendor
(session state, statement counts, the server's own timeouts) stays in the vendor's
module. This module's name does not start with ``test_``: pytest collects its tests
only where they are imported.
"""

from __future__ import annotations

from typing import Any

import pytest


def test_sequential_requests_share_one_server_connection(server_run: Any) -> None:
    facts = server_run("sequential", params={"n": 200})
    assert facts["failures"] == 0
    # One backend pid / CONNECTION_ID() for all 200 requests.
    assert facts["distinct"] == 1, facts["server_pids"]
    assert facts["server_sessions"] == 1
    (pool,) = facts["pools"]
    assert (pool["connections_opened"], pool["checked_out"], pool["idle"]) == (1, 0, 1)


def test_threads_never_exceed_pool_size(server_run: Any) -> None:
    facts = server_run(
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


def test_exhaustion_raises_operational_error_after_timeout(server_run: Any) -> None:
    facts = server_run(
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


def test_no_transaction_survives_a_request(server_run: Any) -> None:
    facts = server_run("transactions", POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0})
    for route in ("/fail-atomic", "/close-in-atomic", "/leave-open", "/raw-begin"):
        outcome = facts[route]
        # pg_stat_activity's "idle in transaction", or MySQL's innodb_trx, is empty for us.
        assert outcome["idle_in_transaction"] == 0, route
        assert outcome["rows"] == 0, f"{route} committed a row it never committed"
    assert facts["/fail-atomic"]["code"] == 500
    assert facts["/close-in-atomic"]["code"] == 500  # refused, on Django 4.2 too
    assert facts["/leave-open"]["code"] == 200
    assert facts["/raw-begin"]["code"] == 200
    # The rolled-back connection was reused, not thrown away.
    assert facts["same_backend"] is True
    (pool,) = facts["pools"]
    assert pool["connections_opened"] == 1


@pytest.mark.parametrize("interval", [0.5, 3600.0])
def test_killed_idle_connection_is_replaced(server_run: Any, interval: float) -> None:
    # With a huge PRE_PING_INTERVAL only the zero-cost socket check can notice.
    facts = server_run(
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


def test_a_connection_its_borrower_closed_is_never_lent_again(server_run: Any) -> None:
    # The raw connection closed by the view: the request's end gives it back
    # as it is; the next checkout finds it closed (is_closed() is asked before
    # any connection is lent) and opens another, instead of failing.
    facts = server_run("closed_raw")
    assert facts["code"] == 200
    assert facts["second"] != facts["first"]
    (pool,) = facts["pools"]
    assert pool["connections_invalidated"] == 1
    assert (pool["connections_opened"], pool["idle"], pool["checked_out"]) == (2, 1, 0)


def test_threads_that_end_while_others_wait_give_their_connections_to_the_waiters(
    server_run: Any,
) -> None:
    """2 threads hold POOL_SIZE 2 for 0.5 s and end without closing; 6 wait meanwhile.

    The collector was asked only when a checkout began to wait, before the
    holders ended: every waiter got PoolExhausted at TIMEOUT (3 s) with both
    connections there for the taking. A wait now looks every 0.5 s.
    """
    facts = server_run(
        "threads_end_while_others_wait",
        params={"holders": 2, "waiters": 6, "hold": 0.5},
        POOL_OPTIONS={"POOL_SIZE": 2, "MAX_OVERFLOW": 0, "TIMEOUT": 3},
    )
    assert [outcome for outcome, _ in facts["outcomes"]] == ["ok"] * 6
    assert max(seconds for _, seconds in facts["outcomes"]) < 2.0  # none waited TIMEOUT
    (pool,) = facts["pools"]
    assert (pool["checked_out"], pool["timeouts"], pool["connections_opened"]) == (0, 0, 2)


def test_a_greenlet_that_ends_without_closing_gives_its_connection_back(
    server_run: Any,
) -> None:
    """gevent: a greenlet's thread is a dummy one, alive for ever by is_alive().

    The next checkout on POOL_SIZE 1 waited TIMEOUT and got PoolExhausted.
    """
    facts = server_run(
        "greenlets_that_never_close",
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "TIMEOUT": 2},
    )
    assert facts["child_status"] == 0
    assert facts["outcome"] == "ok"
    assert facts["seconds"] < 1.5
    (pool,) = facts["pools"]
    assert (pool["checked_out"], pool["connections_opened"]) == (0, 1)


def test_a_pool_disposed_while_checkouts_wait_opens_nothing_more(server_run: Any) -> None:
    """dispose() while 6 of 8 requests wait in POOL_SIZE 2.

    The connections returned to the disposed pool were closed and their empty
    records went back to its queue, where the waiters took them and connected
    again: one throwaway login each (14 in the helper's run), and more sessions
    than POOL_SIZE. Now they move to the alias's new pool.
    """
    facts = server_run(
        "dispose_while_others_wait",
        params={"threads": 8, "hold": 0.4},
        POOL_OPTIONS={"POOL_SIZE": 2, "MAX_OVERFLOW": 0, "TIMEOUT": 10},
    )
    assert facts["codes"] == [200] * 8
    assert facts["opened_after_dispose"] == 0
    (pool,) = facts["pools"]  # the new one
    assert pool["checked_out"] == 0
    assert pool["connections_opened"] <= 2


def test_forked_children_never_touch_the_parents_sessions(server_run: Any) -> None:
    facts = server_run("fork", params={"children": 8})
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


def test_connections_of_threads_that_ended_without_closing_are_taken_back(
    server_run: Any,
) -> None:
    """5 threads in turn on POOL_SIZE 2; each runs a query and ends without closing.

    Their wrappers die in reference cycles, freed only by the cycle collector
    (off here); the third thread waited TIMEOUT and got PoolExhausted while
    both connections were there for the taking. A checkout about to wait now
    collects first when a lent connection's thread has ended.
    """
    facts = server_run(
        "threads_that_never_close",
        params={"n": 5},
        POOL_OPTIONS={"POOL_SIZE": 2, "MAX_OVERFLOW": 0, "TIMEOUT": 3},
    )
    assert [outcome for outcome, _ in facts["outcomes"]] == ["ok"] * 5
    assert max(seconds for _, seconds in facts["outcomes"]) < 1.5  # none waited TIMEOUT
    assert facts["server_sessions"] <= 2
    (pool,) = facts["pools"]
    assert (pool["timeouts"], pool["connections_opened"]) == (0, 2)


def test_a_forked_gevent_child_of_a_process_that_queried_is_not_frozen(
    server_run: Any,
) -> None:
    """gunicorn -k gevent --preload with an app that queried at import: the worker hung.

    The housekeeper's lock and event were made before gevent patched threading:
    its thread, started while holding the lock, ran at once as a greenlet and
    blocked the worker's only thread on that lock; and its wait on an unpatched
    event would block the hub for an interval at each sweep. Now they are made
    (again) when the thread starts, which happens outside the lock.
    """
    facts = server_run(
        "gevent_after_fork",
        params={"sleeps": 30},
        POOL_OPTIONS={"IDLE_TIMEOUT": 0.4, "MIN_IDLE": 0},
    )
    assert facts["child_status"] == 0
    assert facts["longest_sleep"] < 0.5  # the hub is never blocked for a sweep interval
    (pool,) = facts["pools"]
    assert (pool["checkouts"], pool["idle"]) == (1, 0)  # housekept after IDLE_TIMEOUT


def test_a_checkout_waiting_behind_a_failed_connect_opens_its_own_at_once(
    server_run: Any,
) -> None:
    """POOL_SIZE 1: A's new connection fails after 1 s while B waits in the queue.

    SQLAlchemy freed A's slot without waking B, which waited TIMEOUT (6 s)
    before opening a connection itself. Now the slot goes to B as an empty
    record, which B connects at once.
    """
    facts = server_run(
        "connect_fails_while_another_waits",
        POOL_OPTIONS={
            "POOL_SIZE": 1,
            "MAX_OVERFLOW": 0,
            "TIMEOUT": 6,
            "PASSWORD_PROVIDER": "tests.integration.flaky_password.fails_once_when_armed",
        },
    )
    outcome_a, seconds_a = facts["a"]
    outcome_b, seconds_b = facts["b"]
    assert outcome_a != "ok" and 0.9 <= seconds_a < 2.5
    assert outcome_b == "ok"
    assert seconds_b < 2.5  # not TIMEOUT
    (pool,) = facts["pools"]
    assert (pool["timeouts"], pool["connections_opened"], pool["checked_out"]) == (0, 1, 0)


def test_a_checkout_moved_to_a_new_pool_still_fails_within_timeout(server_run: Any) -> None:
    """dispose() after 2 s of a 3 s TIMEOUT; in the new pool (POOL_SIZE 1) one waiter wins.

    The others waited a second TIMEOUT there: PoolExhausted after 5 s of a
    3 s TIMEOUT. A checkout now blocks at most TIMEOUT however often its pool
    is replaced.
    """
    facts = server_run(
        "dispose_while_waiting_for_a_full_pool",
        params={"waiters": 3, "dispose_after": 2.0, "hold": 4.0},
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "TIMEOUT": 3},
    )
    print(f"\n{facts['driver']}: {facts['outcomes']}")
    exhausted = [seconds for outcome, seconds in facts["outcomes"] if outcome == "PoolExhausted"]
    assert [outcome for outcome, _ in facts["outcomes"]].count("ok") == 1, facts["outcomes"]
    assert len(exhausted) == 2, facts["outcomes"]
    assert all(2.9 <= seconds < 4.0 for seconds in exhausted), facts["outcomes"]


@pytest.mark.parametrize("in_atomic", [True, False], ids=["in-atomic", "holdable"])
@pytest.mark.parametrize("lend", ["request", "transaction"])
def test_an_iterators_cursor_kept_past_its_request_leaves_the_next_borrower_alone(
    server_run: Any, lend: str, in_atomic: bool
) -> None:
    """A ``QuerySet.iterator()`` kept past its request, closed while another request runs.

    PostgreSQL: inside atomic(), its cursor died with its transaction, and
    psycopg 3 sent ``CLOSE`` for it on the session, lent by then to a request
    in atomic(), whose transaction it aborted ("current transaction is
    aborted"): that request's rows were lost. Outside atomic(), the holdable
    cursor stayed open in the session the next request got. MySQL: the late
    close() read the session's pending results from its own thread while the
    next borrower's statement ran (mysqlclient: "This connection is already in
    use from another thread"; had it come first, the borrower's statement
    would have failed so). The pool now closes a checkout's iterator cursors
    when the connection goes back.
    """
    facts = server_run(
        "late_cursor_close",
        params={"in_atomic": in_atomic},
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "LEND": lend},
    )
    assert facts["a_read"] == 1
    assert facts["a_session"] == facts["b_session"]  # the same server session, lent twice
    assert facts.get("b_cursors", 0) == 0  # PostgreSQL's pg_cursors
    assert facts["b_outcome"] == "committed"
    assert facts["b_rows"] == 2
    if facts["driver"] != "psycopg2":  # refuses a cursor that died with its transaction
        assert facts["late_close"] == "ok"
    (pool,) = facts["pools"]
    assert pool["checked_out"] == 0
