"""Server restarts under continuous load (scenarios 1 and 2).

Six threads serve requests without pause while the test restarts the server
(PostgreSQL: ``pg_ctl restart -m fast``; MariaDB: SIGTERM, wait, start). ``down``
is the moment the stop was issued, ``up`` the moment the server accepted a
connection again; the child's request times are on the same monotonic clock.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import ALL_DRIVERS, POOL, Target
from .harness import (
    Rec,
    Sampler,
    Timeline,
    assert_connection_errors,
    error_counts,
    pool_counters,
    report,
    stop_load,
    timeline,
)

THREADS = 6
#: Load before the restart, and after it (enough for every thread to come back).
WARM_SECONDS = 1.0
AFTER_SECONDS = 1.5
MAX_SESSIONS = POOL["POOL_SIZE"] + POOL["MAX_OVERFLOW"]


def restart_under_load(target: Target, pre_ping: bool) -> dict[str, Any]:
    child = target.child({"PRE_PING": pre_ping})
    child.call("start_load", threads=THREADS, plan="query", sleep=0.005, think=0.01)
    time.sleep(WARM_SECONDS)
    sessions_before = target.server.sessions(target.dbname)
    down, up = target.server.restart()
    with Sampler(target.server, target.dbname) as sampler:
        time.sleep(AFTER_SECONDS)
    sessions_after = target.server.sessions(target.dbname)
    load = stop_load(child)
    return {
        "recs": load.recs,
        "line": timeline(load.recs, down, up),
        "down": down,
        "up": up,
        "alive": load.alive,
        "pool": load.pool,
        "sessions_before": sessions_before,
        "sessions_after": sessions_after,
        "peak_sessions_after": sampler.peak,
    }


def common_facts(run: dict[str, Any]) -> dict[str, Any]:
    line: Timeline = run["line"]
    recs: list[Rec] = run["recs"]
    failed = Timeline.failed(recs)
    return {
        "threads": THREADS,
        "requests": len(recs),
        "failed": len(failed),
        "failed_before_down": len(Timeline.failed(line.before)),
        "failed_in_flight": len(Timeline.failed(line.in_flight)),
        "failed_while_down": len(Timeline.failed(line.while_down)),
        "failed_after_up": len(Timeline.failed(line.after)),
        "requests_after_up": len(line.after),
        "down_seconds": round(run["up"] - run["down"], 3),
        "server_sessions_before": len(run["sessions_before"]),
        "server_sessions_after": len(run["sessions_after"]),
        "server_sessions_peak_after": run["peak_sessions_after"],
        "distinct_sessions_before": len({r.pid for r in line.before if r.ok}),
        "distinct_sessions_after": len({r.pid for r in line.after if r.ok}),
        "errors": error_counts(recs),
        "pool": pool_counters(run["pool"]),
    }


def assert_common(run: dict[str, Any]) -> None:
    """What every restart run must show, pre-ping or not."""
    line: Timeline = run["line"]
    assert run["alive"] == [], "load threads did not finish"
    assert run["sessions_before"], "the load had no server session before the restart"
    # Nothing fails before the fault.
    assert Timeline.failed(line.before) == []
    assert_connection_errors(run["recs"])
    # The service came back by itself, in every thread.
    assert {r.thread for r in line.after if r.ok} == set(range(THREADS))
    # Never more sessions at once than the pool allows (overflow connections
    # are closed on return, so more distinct sessions than that is normal).
    assert 1 <= run["peak_sessions_after"] <= MAX_SESSIONS
    assert 1 <= len(run["sessions_after"]) <= MAX_SESSIONS
    assert run["pool"]["checked_out"] == 0


@pytest.mark.parametrize("target", ALL_DRIVERS, indirect=True)
def test_restart_under_load_with_pre_ping(target: Target) -> None:
    """PRE_PING on: only requests caught by the outage fail; none started after it.

    A request that was in flight when the server went down, or that started
    while it was down, may fail; every request started after the server
    accepted connections again succeeds, on a new session (no stale connection
    is handed out, and none is retried into an error).
    """
    run = restart_under_load(target, pre_ping=True)
    line: Timeline = run["line"]
    report("restart_pre_ping", target, **common_facts(run))
    assert Timeline.failed(line.after) == [], [r.brief() for r in Timeline.failed(line.after)]
    assert_common(run)


@pytest.mark.parametrize("target", ALL_DRIVERS, indirect=True)
def test_restart_under_load_without_pre_ping(target: Target) -> None:
    """PRE_PING off: the first broken connection retires all of its generation.

    Without a ping, a stale connection is only found out by using it. Rule: at
    most one failure per thread once the server is back, and once the server is
    back AND the first failed request has finished (returning its broken
    connection), no request fails at all. A pool that kept its other stale
    connections would fail once per pooled connection, or forever if it put a
    broken one back.
    """
    run = restart_under_load(target, pre_ping=False)
    line: Timeline = run["line"]
    failed = Timeline.failed(run["recs"])
    first_failure_end = min((r.end for r in failed), default=run["up"])
    cut = max(run["up"], first_failure_end)
    late = [r for r in failed if r.start >= cut]
    report(
        "restart_no_pre_ping",
        target,
        **common_facts(run),
        failed_after_first_failure_and_up=len(late),
        first_failure_to_up_seconds=round(first_failure_end - run["up"], 3),
    )
    assert len(Timeline.failed(line.after)) <= THREADS
    assert late == [], [r.brief() for r in late[:10]]
    assert_common(run)
