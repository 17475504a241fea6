"""The server goes away while the application runs (scenario 5).

Requests must fail fast with Django's OperationalError naming the connection
problem, no thread may hang, and when the server is back the service resumes
by itself. The connect timeout is 3 s (``OPTIONS={"connect_timeout": 3}``).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import Target
from .harness import (
    Timeline,
    assert_connection_errors,
    assert_resumed,
    error_counts,
    pool_counters,
    report,
    stop_load,
    timeline,
)
from .servers import PgInstance

THREADS = 6
CONNECT_TIMEOUT = 3
#: How much longer than the connect timeout a failing request may take (a busy 2-core box).
MARGIN = 2.0
DOWN_SECONDS = 3.5


def test_stopped_server_fails_fast_and_service_resumes(target: Target) -> None:
    """Server stopped for 3.5 s under load, then started again; the app is never restarted.

    While it is down every request fails, each within the connect timeout (+ a
    margin), with django.db.OperationalError naming the problem; no load thread
    hangs; every request started after the server accepts connections again
    succeeds, in every thread.
    """
    child = target.child(connect_timeout=CONNECT_TIMEOUT)
    child.call("start_load", threads=THREADS, plan="query", sleep=0.005, think=0.02)
    time.sleep(1.0)
    down = time.monotonic()
    gone = target.server.stop()
    time.sleep(DOWN_SECONDS)
    restart_issued = time.monotonic()
    up = target.server.start()
    time.sleep(2.0)
    load = stop_load(child)
    recs, pool = load.recs, load.pool
    line = timeline(recs, down, up)
    fully_down = [r for r in recs if gone <= r.start and r.end < restart_issued]
    outage = line.in_flight + line.while_down
    max_down = max((r.seconds for r in outage), default=0.0)
    failed = Timeline.failed(recs)
    report(
        "server_unreachable",
        target,
        threads=THREADS,
        connect_timeout=CONNECT_TIMEOUT,
        down_seconds=round(up - down, 3),
        requests=len(recs),
        failed=len(failed),
        requests_while_fully_down=len(fully_down),
        failed_while_fully_down=len(Timeline.failed(fully_down)),
        max_request_seconds_while_down=round(max_down, 3),
        failed_after_up=len(Timeline.failed(line.after)),
        threads_alive_at_stop=len(load.alive),
        errors=error_counts(recs),
        sample_message=failed[-1].message if failed else None,
        pool=pool_counters(pool),
    )
    assert load.alive == [], "load threads hung"
    assert Timeline.failed(line.before) == []
    # Down means down: every request made while the server was stopped failed.
    assert len(fully_down) >= THREADS
    assert all(not r.ok for r in fully_down)
    assert_connection_errors(recs)
    # Fast: within the connect timeout (refused connections fail at once).
    assert max_down <= CONNECT_TIMEOUT + MARGIN
    # Resumed by itself, in every thread.
    assert_resumed(line, THREADS)
    assert pool["checked_out"] == 0


@pytest.mark.postgresql
@pytest.mark.parametrize(
    "target", [pytest.param("postgresql-psycopg", id="postgresql-psycopg")], indirect=True
)
def test_hung_server_fails_within_connect_timeout(target: Target) -> None:
    """A server that accepts TCP but never answers: connect_timeout bounds every request.

    The postmaster is frozen (SIGSTOP) and the pool's backends are ended
    (SIGTERM, as pg_terminate_backend does): the kernel still completes the TCP
    handshake, so only the driver's connect timeout can end a new connection
    attempt. Every request in that window
    fails in connect_timeout (+ margin) with an OperationalError; after SIGCONT
    the service resumes by itself.
    """
    server = target.server
    assert isinstance(server, PgInstance)
    child = target.child(connect_timeout=CONNECT_TIMEOUT)
    child.call("start_load", threads=THREADS, plan="query", sleep=0.005, think=0.02)
    time.sleep(1.0)
    postmaster = server.postmaster_pid()
    os.kill(postmaster, signal.SIGSTOP)
    try:
        down = time.monotonic()
        # Frozen, the postmaster starts no backend: this list is complete.
        backends = server.backend_pids(target.dbname)
        for pid in backends:  # what pg_terminate_backend() does, without a new session
            os.kill(pid, signal.SIGTERM)
        time.sleep(DOWN_SECONDS)
    finally:
        os.kill(postmaster, signal.SIGCONT)
    up = server.wait_accepting()
    time.sleep(2.0)
    load = stop_load(child)
    recs, pool = load.recs, load.pool
    line = timeline(recs, down, up)
    outage = line.in_flight + line.while_down
    timed_out = [r for r in outage if not r.ok and "timeout" in r.message.lower()]
    max_down = max((r.seconds for r in outage), default=0.0)
    report(
        "server_hung",
        target,
        threads=THREADS,
        connect_timeout=CONNECT_TIMEOUT,
        backends_ended=len(backends),
        requests=len(recs),
        failed=len(Timeline.failed(recs)),
        failed_by_connect_timeout=len(timed_out),
        max_request_seconds_while_hung=round(max_down, 3),
        failed_after_up=len(Timeline.failed(line.after)),
        errors=error_counts(recs),
        sample_message=timed_out[-1].message if timed_out else None,
        pool=pool_counters(pool),
    )
    assert load.alive == [], "load threads hung"
    assert backends
    assert Timeline.failed(line.before) == []
    # Each thread ran into the frozen server, and the timeout ended it.
    assert len(timed_out) >= THREADS
    assert_connection_errors(recs)
    assert max_down <= CONNECT_TIMEOUT + MARGIN
    assert all(r.seconds >= CONNECT_TIMEOUT - 0.1 for r in timed_out)
    assert_resumed(line, THREADS)
    assert pool["checked_out"] == 0
