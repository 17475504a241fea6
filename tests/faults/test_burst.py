"""More concurrent requests than connections (scenario 6).

POOL_SIZE=2, MAX_OVERFLOW=0, TIMEOUT=0.5; eight threads start together (a
barrier) and each holds its connection for 0.3 s of server time. Two are served
at once, two more when those finish; the rest wait longer than TIMEOUT and must
get django_sapool.PoolExhausted, promptly, while the server never sees more
than two sessions.
"""

from __future__ import annotations

from .conftest import Target
from .harness import Sampler, Timeline, error_counts, pool_counters, records, report

THREADS = 8
POOL_SIZE = 2
TIMEOUT = 0.5
HOLD = 0.3
#: How much longer than TIMEOUT a timed-out checkout may take (a busy 2-core box).
MARGIN = 1.5


def test_burst_beyond_the_pool(target: Target) -> None:
    """Waiters that time out get PoolExhausted within TIMEOUT + margin; the others succeed.

    Exact outcome rules: every request either succeeds or fails with
    PoolExhausted (a django.db.OperationalError); at least POOL_SIZE succeed and
    at least one times out; the pool counts exactly the timeouts the requests
    saw; afterwards nothing is checked out and the server shows at most
    POOL_SIZE sessions, as it did throughout the burst.
    """
    child = target.child({"POOL_SIZE": POOL_SIZE, "MAX_OVERFLOW": 0, "TIMEOUT": TIMEOUT})
    with Sampler(target.server, target.dbname, interval=0.02) as sampler:
        result = child.call("burst", threads=THREADS, url=f"/q?sleep={HOLD}")
    sessions_after = target.server.sessions(target.dbname)
    recs = records(result["records"])
    (pool,) = result["pools"]
    ok = [r for r in recs if r.ok]
    failed = Timeline.failed(recs)
    report(
        "burst_beyond_pool",
        target,
        threads=THREADS,
        pool_size=POOL_SIZE,
        timeout=TIMEOUT,
        hold_seconds=HOLD,
        succeeded=len(ok),
        timed_out=len(failed),
        timeout_seconds_min=round(min((r.seconds for r in failed), default=0.0), 3),
        timeout_seconds_max=round(max((r.seconds for r in failed), default=0.0), 3),
        server_sessions_peak=sampler.peak,
        server_sessions_after=len(sessions_after),
        errors=error_counts(recs),
        pool=pool_counters(pool),
    )
    assert result["alive"] == 0
    assert len(recs) == THREADS
    for rec in failed:
        assert rec.classes[:2] == (
            "django_sapool.errors.PoolExhausted",
            "django.db.utils.OperationalError",
        ), rec.brief()
        assert f"TIMEOUT={TIMEOUT:g}s" in rec.message, rec.brief()
        assert TIMEOUT - 0.05 <= rec.seconds <= TIMEOUT + MARGIN, rec.brief()
    assert len(ok) >= POOL_SIZE
    assert len(failed) >= 1
    assert len({r.pid for r in ok}) <= POOL_SIZE
    assert pool["timeouts"] == len(failed)
    assert pool["checked_out"] == 0
    assert sampler.samples > 0 and sampler.peak <= POOL_SIZE
    assert 1 <= len(sessions_after) <= POOL_SIZE
    assert len(sessions_after) == pool["size"]
