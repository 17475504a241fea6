"""Idle connections give back server resources; leaks are reported; RECYCLE has jitter.

Each scenario runs in its own Django process (tests/integration/child.py)
against the real servers, and every figure comes from the server itself:
PostgreSQL's ``pg_stat_activity`` and MariaDB's ``information_schema.processlist``.
"""

from __future__ import annotations

from typing import Any

import pytest

BURST = 6
SHRINK = {
    "POOL_SIZE": BURST,
    "MAX_OVERFLOW": 0,
    "IDLE_TIMEOUT": 2,
    "MIN_IDLE": 2,
}


def _check_shrink(facts: dict[str, Any], idle_timeout: float, min_idle: int) -> None:
    assert facts["peak"] == BURST
    # Right after the burst every connection is still open: none idled long enough.
    assert facts["after_burst"] == BURST
    # While only a trickle of requests comes (one thread, LIFO: it reuses one
    # connection), the server sees our sessions fall to MIN_IDLE, never below,
    # and not before IDLE_TIMEOUT.
    assert facts["after_quiet"] == min_idle, facts["samples"]
    early = [count for at, count in facts["samples"] if at < idle_timeout * 0.5]
    assert early and min(early) == BURST, facts["samples"]
    assert min(count for _, count in facts["samples"]) == min_idle
    (pool,) = facts["pools"]
    assert pool["connections_idle_closed"] == BURST - min_idle
    assert pool["connections_invalidated"] == 0
    # The app still works, on one of the connections kept open.
    assert facts["request_after"] == 200
    assert facts["sessions_after_request"] == min_idle


@pytest.mark.postgresql
def test_postgresql_idle_connections_close_down_to_min_idle(pg_run: Any) -> None:
    facts = pg_run(
        "idle_shrink",
        params={"burst": BURST, "hold": 0.5, "wait": 5.0, "trickle": 0.5},
        POOL_OPTIONS=SHRINK,
    )
    _check_shrink(facts, idle_timeout=2, min_idle=2)


@pytest.mark.postgresql
@pytest.mark.parametrize("after_fork", [False, True], ids=["", "after_fork-called-unforked"])
def test_postgresql_unused_pool_gives_every_session_back(pg_run: Any, after_fork: bool) -> None:
    """No request at all for longer than IDLE_TIMEOUT: the housekeeper disposes of the pool.

    MIN_IDLE keeps connections warm for traffic that keeps coming, not for a
    pool nobody uses; the next request builds a new pool. The same after
    ``after_fork()`` was called in this process, which forked nothing (a
    worker hook run after the app queried): this process's pools are still
    housekept (they were forgotten, and their sessions stayed open).
    """
    facts = pg_run(
        "idle_shrink",
        params={"burst": BURST, "hold": 0.5, "wait": 5.0, "after_fork": after_fork},
        POOL_OPTIONS=SHRINK,
    )
    assert (facts["peak"], facts["after_burst"], facts["after_quiet"]) == (BURST, BURST, 0)
    early = [count for at, count in facts["samples"] if at < 1.0]
    assert early and min(early) == BURST, facts["samples"]
    assert facts["request_after"] == 200
    assert facts["sessions_after_request"] == 1
    (pool,) = facts["pools"]  # the new pool
    assert (pool["connections_opened"], pool["checkouts"]) == (1, 1)


@pytest.mark.postgresql
def test_postgresql_without_idle_timeout_the_burst_stays_open(pg_run: Any) -> None:
    """The control: with IDLE_TIMEOUT=None the same quiet period closes nothing."""
    facts = pg_run(
        "idle_shrink",
        params={"burst": BURST, "hold": 0.5, "wait": 3.0},
        POOL_OPTIONS={**SHRINK, "IDLE_TIMEOUT": None},
    )
    assert (facts["peak"], facts["after_quiet"]) == (BURST, BURST)
    assert facts["pools"][0]["connections_idle_closed"] == 0


@pytest.mark.mysql
def test_mysql_idle_connections_close_down_to_min_idle(mysql_run: Any) -> None:
    facts = mysql_run(
        "idle_shrink",
        params={"burst": BURST, "hold": 0.5, "wait": 5.0, "trickle": 0.5},
        POOL_OPTIONS={**SHRINK, "MIN_IDLE": 1},
    )
    _check_shrink(facts, idle_timeout=2, min_idle=1)


@pytest.mark.postgresql
def test_leak_timeout_logs_where_the_connection_was_checked_out(pg_run: Any) -> None:
    facts = pg_run("leak", params={"hold": 2.0, "short": 0.1}, POOL_OPTIONS={"LEAK_TIMEOUT": 0.5})
    leaks = [m for m in facts["messages"] if "possible connection leak" in m]
    assert len(leaks) == 1, facts["messages"]
    (report,) = leaks
    # Which thread, for how long, and the stack of the checkout: the function
    # that checked the connection out, in this file.
    assert "thread 'leaky-thread'" in report
    assert "LEAK_TIMEOUT=0.5 s" in report
    assert "in leaky_worker" in report and "child.py" in report
    assert "conn.ensure_connection()" in report  # source lines are looked up
    assert "quick-thread" not in report
    returned = [m for m in facts["messages"] if "reported as a possible leak was returned" in m]
    assert len(returned) == 1 and "leaky-thread" in returned[0]
    (pool,) = facts["pools"]
    assert (pool["leaks"], pool["checked_out"]) == (1, 0)


@pytest.mark.postgresql
def test_no_leak_report_without_leak_timeout(pg_run: Any) -> None:
    facts = pg_run("leak", params={"hold": 1.0, "short": 0.1})
    assert not [m for m in facts["messages"] if "leak" in m], facts["messages"]
    assert facts["pools"][0]["leaks"] == 0


@pytest.mark.postgresql
def test_recycle_replaces_old_sessions_with_jitter(pg_run: Any) -> None:
    """No request is served by a session older than RECYCLE; replacements are spread out.

    Up to six connections open within the first moments; with RECYCLE=2 and
    RECYCLE_JITTER=0.5 each is replaced after 1-2 s of life, at its own time,
    so the first generation's lifetimes (backend start to last request) differ.
    """
    recycle, jitter = 2.0, 0.5
    facts = pg_run(
        "recycle_spread",
        params={"n": BURST, "duration": 6.0},
        POOL_OPTIONS={
            "POOL_SIZE": BURST,
            "MAX_OVERFLOW": 0,
            "RECYCLE": recycle,
            "RECYCLE_JITTER": jitter,
            # Round robin: every connection serves requests all the time, so a
            # session's last request marks its end (with LIFO one may sit idle).
            "USE_LIFO": False,
        },
    )
    seen = facts["seen"]
    assert not facts["failures"] and len(seen) > 100
    # Backend start times, from the server: no request ran on a session older
    # than RECYCLE (plus the time to run the request under a loaded machine).
    assert max(s["age"] for s in seen) < recycle + 0.5
    first_gen: dict[int, list[dict[str, Any]]] = {}
    for s in seen:
        if s["start"] < facts["started"] + 1.0:
            first_gen.setdefault(s["pid"], []).append(s)
    # Threads that find an idle connection don't open one: at least 4 of the 6.
    assert 4 <= len(first_gen) <= BURST
    lifetimes = sorted(max(x["at"] for x in xs) - xs[0]["start"] for xs in first_gen.values())
    # Each lived at most RECYCLE, and at least RECYCLE * (1 - jitter) minus the
    # gap between two requests on it.
    assert lifetimes[-1] < recycle + 0.5
    assert lifetimes[0] > recycle * (1 - jitter) - 0.5
    # Not all replaced together: the spread of lifetimes shows the jitter (all
    # of 4+ deadlines drawn from 1 s within 0.1 s of each other: < 0.5%).
    assert lifetimes[-1] - lifetimes[0] > 0.1, lifetimes
    (pool,) = facts["pools"]
    assert pool["connections_recycled"] >= len(first_gen)
    assert pool["connections_invalidated"] == 0
