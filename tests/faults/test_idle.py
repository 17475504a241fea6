"""Pooled connections closed by the server while idle (scenarios 3 and 4).

Between bursts of requests the server ends every idle pooled session: killed
by an administrator (``pg_terminate_backend`` / ``KILL``), or closed by the
server's own idle timeout (PostgreSQL ``idle_session_timeout``, MariaDB
``wait_timeout``). The next burst must not see a single error: the pool finds
the dead connections before handing them out and replaces them.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import Target
from .harness import Child, Timeline, error_counts, pool_counters, records, report, wait_until

THREADS = 6
REQUESTS = 10  # per thread and burst
CYCLES = 3


def burst(child: Child) -> tuple[list[Any], dict[str, Any]]:
    result = child.call("burst", threads=THREADS, url="/q?sleep=0.002", requests=REQUESTS)
    assert result["alive"] == 0
    (pool,) = result["pools"]
    return records(result["records"]), pool


@pytest.mark.parametrize("interval", [0.5, 3600.0], ids=["interval-0.5s", "interval-1h"])
def test_sessions_killed_while_idle(target: Target, interval: float) -> None:
    """Idle pooled sessions killed by the server: the next burst has no error.

    With the default PRE_PING_INTERVAL the idle connections get a real ping
    (the burst comes 0.6 s after the kill); with a one-hour interval only the
    zero-cost socket check can tell, and must. The server's session list must
    equal the pool's open connections before each kill (nothing leaked), and
    the next burst must run on new sessions only.
    """
    child = target.child({"PRE_PING_INTERVAL": interval})
    recs, pool = burst(child)
    all_recs = list(recs)
    killed_total = 0
    cycles = []
    for _ in range(CYCLES):
        open_before = pool["size"]
        killed = target.server.kill_sessions(target.dbname)
        gone = wait_until(lambda: not target.server.sessions(target.dbname), timeout=15)
        time.sleep(0.6)  # idle for longer than the default PRE_PING_INTERVAL
        recs, pool = burst(child)
        all_recs += recs
        killed_total += len(killed)
        cycles.append(
            {
                "pool_open_before_kill": open_before,
                "killed": len(killed),
                "gone": gone,
                "failed_after": len(Timeline.failed(recs)),
                "reused_killed_session": sorted({r.pid for r in recs} & set(killed)),
            }
        )
    failed = Timeline.failed(all_recs)
    report(
        "killed_while_idle",
        target,
        pre_ping_interval=interval,
        threads=THREADS,
        requests=len(all_recs),
        failed=len(failed),
        sessions_killed=killed_total,
        cycles=cycles,
        errors=error_counts(all_recs),
        pool=pool_counters(pool),
    )
    assert failed == [], [r.brief() for r in failed[:10]]
    for cycle in cycles:
        assert cycle["killed"] >= 1
        # The server saw exactly the pool's open connections: none leaked.
        assert cycle["killed"] == cycle["pool_open_before_kill"], cycle
        assert cycle["gone"], cycle
        assert cycle["reused_killed_session"] == [], cycle
    assert pool["connections_invalidated"] >= CYCLES
    assert pool["checked_out"] == 0
    if interval == 3600.0:
        assert pool["pings"] == pool["pings_failed"]  # a ping only where the socket said so


def set_idle_timeout(target: Target, seconds: int) -> Any:
    """Make the server close idle sessions after ``seconds``; return how to undo it."""
    server = target.server
    if target.vendor == "postgresql":
        # New sessions of this database only (the database is dropped after the test).
        server.execute(
            f"ALTER DATABASE \"{target.dbname}\" SET idle_session_timeout = '{seconds}s'"
        )
        return lambda: None
    # Our own MariaDB: global, for sessions opened from now on; restored afterwards.
    before = int(server.scalar("SELECT @@GLOBAL.wait_timeout"))
    server.execute(f"SET GLOBAL wait_timeout = {int(seconds)}")
    return lambda: server.execute(f"SET GLOBAL wait_timeout = {before}")


def test_server_idle_timeout_closes_pooled_sessions(target: Target) -> None:
    """Sessions closed by the server's idle timeout: 0 failures, new sessions.

    The server's timeout is 1 s (PostgreSQL) / 2 s (MariaDB). After each burst
    the test waits until the server shows none of the pool's sessions left,
    i.e. the server did close them, then the next burst must succeed entirely,
    on sessions the server has not seen before.
    """
    undo = set_idle_timeout(target, 1 if target.vendor == "postgresql" else 2)
    try:
        child = target.child()
        recs, pool = burst(child)
        all_recs = list(recs)
        cycles = []
        for _ in range(2):
            seen = {r.pid for r in all_recs if r.ok}
            open_before = pool["size"]
            started = time.monotonic()
            closed = wait_until(lambda: not target.server.sessions(target.dbname), timeout=20)
            closed_after = time.monotonic() - started
            recs, pool = burst(child)
            all_recs += recs
            new = {r.pid for r in recs if r.ok}
            cycles.append(
                {
                    "pool_open_before": open_before,
                    "closed_by_server": closed,
                    "closed_within_seconds": round(closed_after, 2),
                    "failed_after": len(Timeline.failed(recs)),
                    "new_sessions": len(new - seen),
                    "old_sessions_reused": len(new & seen),
                    "server_sessions_after": len(target.server.sessions(target.dbname)),
                }
            )
    finally:
        undo()
    failed = Timeline.failed(all_recs)
    report(
        "server_idle_timeout",
        target,
        threads=THREADS,
        requests=len(all_recs),
        failed=len(failed),
        cycles=cycles,
        errors=error_counts(all_recs),
        pool=pool_counters(pool),
    )
    assert failed == [], [r.brief() for r in failed[:10]]
    for cycle in cycles:
        assert cycle["pool_open_before"] >= 1
        assert cycle["closed_by_server"], cycle
        assert cycle["new_sessions"] >= 1, cycle
        assert cycle["old_sessions_reused"] == 0, cycle
        assert cycle["server_sessions_after"] <= 6, cycle
    assert pool["connections_invalidated"] >= 2
    assert pool["checked_out"] == 0
