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
    Sampler,
    Site,
    brief,
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
