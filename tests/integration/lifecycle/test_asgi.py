"""uvicorn serving Django's ASGI handler: sync views and the async ORM share one pool.

Under ASGI, Django wraps every request in its own asgiref ``ThreadSensitiveContext``:
the request's thread-sensitive sync code (``request_started`` receivers, a sync
view, every async ORM call such as ``acount()``, ``response.close()`` which sends
``request_finished``) runs in a single-worker executor thread created for that
request and shut down after it. Django's connections are per thread, so each
request gets a fresh DatabaseWrapper in that thread, checks out of the process's
pool on its first query and returns the connection when ``request_finished``
calls ``close_old_connections()`` in the same thread. The thread then ends; had
a connection still been checked out, the wrapper's garbage collection would
return it with a "never returned" warning, which the test also rules out.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._load import (
    CAP,
    OURS,
    POOL_OPTIONS,
    Sampler,
    Site,
    brief,
    get,
    hammer,
    pool_stats,
    sapool_warnings,
    started,
    wait_ready,
)

REQUESTS = 1000
CONCURRENCY = 50
UVICORN = [
    sys.executable, "-m", "uvicorn", "tests.integration.lifecycle.lifesite.asgi:application",
    "--host", "127.0.0.1", "--port", "0", "--workers", "1",
    # Django's ASGI handler doesn't speak the lifespan protocol.
    "--lifespan", "off", "--no-access-log", "--log-level", "info",
]  # fmt: skip


def test_asgi_sync_and_async_views_share_the_pool(site: Site, tmp_path: Path) -> None:
    env = site.ours()
    with site.observer(env) as observer, started(UVICORN, env, tmp_path, "uvicorn") as proc:
        port = wait_ready(proc)
        assert observer.count() == 0  # nothing connects before the first query
        with Sampler(observer) as sampler:
            # Alternating: at any moment sync views and async ORM calls compete.
            load = hammer(port, ["/pid", "/apid"], REQUESTS, CONCURRENCY)
        stats = pool_stats(port)
        after = observer.count()
        output = proc.output()

    print(
        f"\n[asgi {site.vendor}] {REQUESTS} requests (/pid, /apid), concurrency {CONCURRENCY}: "
        f"{load.seconds:.2f}s, peak {sampler.peak} server sessions ({sampler.samples} "
        f"samples), {len(load.sessions())} session ids seen by /pid, after the load "
        f"{after} open; pool: {brief(stats)}"
    )
    assert load.statuses == {200: REQUESTS}, [b for b in load.bodies if not isinstance(b, dict)][:3]
    assert 1 <= sampler.peak <= CAP
    assert len(load.sessions()) <= CAP
    # Every request's thread returned its connection before the thread ended.
    assert stats["checked_out"] == 0, stats
    assert stats["connections_opened"] <= CAP, stats
    assert stats["timeouts"] == 0, stats
    assert after == stats["size"] <= CAP
    assert sapool_warnings(output) == [], output[-3000:]


#: test_asgi_lend_transaction: concurrent requests, and each one's sleep between queries.
LEND_REQUESTS = 200
LEND_SLEEP = 0.2


def test_asgi_lend_transaction_async_views_hold_nothing_while_they_sleep(
    site: Site, tmp_path: Path
) -> None:
    """POOL_OPTIONS["LEND"] = "transaction": 200 concurrent async views through 4 connections.

    Each request does ``aget()``, ``asyncio.sleep(0.2)``, ``acount()``. Each
    async ORM call runs in the request's own thread (Django's
    ThreadSensitiveContext), which returns the connection as soon as the
    query's cursor closes; so the sleeps overlap. With LEND "request" each
    request would hold its connection through its sleep: 200 / 4 x 0.2 s = 10 s
    at least.
    """
    env = site.make(engine=OURS[site.vendor], POOL_OPTIONS={**POOL_OPTIONS, "LEND": "transaction"})
    with site.observer(env) as observer, started(UVICORN, env, tmp_path, "uvicorn") as proc:
        port = wait_ready(proc)
        assert get(port, "/write?name=lend")[0] == 200
        with Sampler(observer) as sampler:
            load = hammer(port, [f"/asleep?seconds={LEND_SLEEP}"], LEND_REQUESTS, LEND_REQUESTS)
        stats = pool_stats(port)
        after = observer.count()
        output = proc.output()

    floor = LEND_REQUESTS / CAP * LEND_SLEEP  # LEND "request"'s least possible time
    print(
        f"\n[asgi lend {site.vendor}] {LEND_REQUESTS} concurrent /asleep requests: "
        f"{load.seconds:.2f}s (LEND request: >= {floor:.1f}s), peak {sampler.peak} "
        f"server sessions; pool: {brief(stats)}"
    )
    assert load.statuses == {200: LEND_REQUESTS}, [
        b for b in load.bodies if not isinstance(b, dict)
    ][:3]
    assert {b["count"] for b in load.bodies} == {1}
    assert 1 <= sampler.peak <= CAP
    assert stats["checked_out"] == 0, stats
    assert stats["timeouts"] == 0, stats
    assert stats["connections_opened"] <= CAP, stats
    assert after == stats["size"] <= CAP
    # Far below what holding a connection through each sleep would take.
    assert load.seconds < floor / 2, load.seconds
    assert sapool_warnings(output) == [], output[-3000:]
