"""A bounded soak: mixed writes and reads through a restart and a kill (scenario 7).

Six threads write (an INSERT of a unique client-generated id in
``transaction.atomic()``) and read back their last acknowledged write, for
``SAPOOL_SOAK_SECONDS`` (default 60 s per server). A third of the way in the
server is restarted; two thirds in, every pooled session is killed. Longer run:

    SAPOOL_SOAK_SECONDS=300 ./scripts/test tests/faults -k soak

Client-side accounting of every write: ACKED (atomic() exited without error),
FAILED-BEFORE-COMMIT (the error came from connecting, BEGIN or the INSERT), or
IN-DOUBT (the error came from the COMMIT itself: the server may have committed,
so it is reported and never counted as lost). Afterwards, checked on the server:
no acked write lost, no failed write present (phantom), no row nobody wrote, no
session left in a transaction, nothing checked out.
"""

from __future__ import annotations

import os
import time

from .conftest import Target
from .harness import pool_counters, report

THREADS = 6
SOAK_SECONDS = float(os.environ.get("SAPOOL_SOAK_SECONDS", "60"))


def test_soak_restart_and_kill(target: Target) -> None:
    """Writes lost = 0, phantom writes = 0, leaked transactions = 0, stale reads = 0."""
    child = target.child()
    started = time.monotonic()
    child.call("start_load", threads=THREADS, plan="soak", think=0.005, seed=7)
    time.sleep(SOAK_SECONDS / 3)
    down, up = target.server.restart()
    time.sleep(max(0.0, started + 2 * SOAK_SECONDS / 3 - time.monotonic()))
    killed = target.server.kill_sessions(target.dbname)
    time.sleep(max(0.0, started + SOAK_SECONDS - time.monotonic()))
    result = child.call("stop_load", timeout=120, join_timeout=60)
    elapsed = time.monotonic() - started
    # While the child still holds its idle pooled connections:
    open_transactions = target.server.open_transactions(target.dbname)
    (pool,) = child.call("status")["pools"]
    rows = {r[0] for r in target.server.query("SELECT id FROM fault_write", dbname=target.dbname)}
    acked, failed, in_doubt = set(result["acked"]), set(result["failed"]), set(result["in_doubt"])
    counts = result["counts"]
    lost = acked - rows
    phantom = failed & rows
    unknown = rows - acked - failed - in_doubt
    report(
        "soak",
        target,
        seconds=round(elapsed, 1),
        threads=THREADS,
        requests=counts.get("writes", 0) + counts.get("reads", 0),
        writes=counts.get("writes", 0),
        reads=counts.get("reads", 0),
        failed_requests=counts.get("failed_requests", 0),
        acked=len(acked),
        failed_before_commit=len(failed),
        in_doubt=len(in_doubt),
        in_doubt_committed=len(in_doubt & rows),
        lost=len(lost),
        phantom=len(phantom),
        unknown_rows=len(unknown),
        stale_reads=counts.get("stale_reads", 0),
        leaked_transactions=open_transactions,
        restart_down_seconds=round(up - down, 3),
        sessions_killed=len(killed),
        max_request_seconds=round(result["max_request_seconds"], 3),
        threads_alive_at_stop=len(result["alive"]),
        failures_by_kind=result["errors"],
        pool=pool_counters(pool),
    )
    assert result["alive"] == [], "load threads did not finish"
    assert len(acked) > 0
    assert len(acked) + len(failed) + len(in_doubt) == counts["writes"]
    assert lost == set(), sorted(lost)[:20]
    assert phantom == set(), sorted(phantom)[:20]
    assert unknown == set(), sorted(unknown)[:20]
    assert counts.get("stale_reads", 0) == 0
    assert open_transactions == 0
    assert pool["checked_out"] == 0
    assert killed, "the pool had no session to kill"
