"""Django's threaded development server: a thread per request, one pool per process.

``manage.py runserver --noreload`` serves each TCP connection in a new thread
(``socketserver.ThreadingMixIn`` over ``django.core.servers.basehttp.WSGIServer``).
Django's connections are per thread, so with Django's own backend every request
opens (and closes) its own server session, and N concurrent requests hold N
sessions. With ours the threads share POOL_SIZE + MAX_OVERFLOW sessions and queue
for them. The client sends ``Connection: close``, so every request really is a
new thread that ends afterwards: /stats must show nothing left checked out (the
request_finished signal returned each connection, no garbage-collected wrapper
had to return one for a dead thread, which would log a warning).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._load import (
    CAP,
    LoadResult,
    Sampler,
    Site,
    brief,
    hammer,
    pool_stats,
    sapool_warnings,
    started,
    wait_ready,
)

REQUESTS = 500
CLIENTS = 50
RUNSERVER = [
    sys.executable,
    "-m",
    "django",
    "runserver",
    "--noreload",
    "--skip-checks",
    "127.0.0.1:0",
]


@dataclass
class Run:
    load: LoadResult
    peak: int  # most server sessions seen at once during the load
    samples: int
    after: int  # server sessions right after the load
    stats: dict[str, Any] | None  # our pool's status in the server process
    output: str


def serve(site: Site, env: dict[str, str], tmp: Path, name: str, pooled: bool) -> Run:
    """Run runserver on env, put the load on it, and watch the database server."""
    with site.observer(env) as observer, started(RUNSERVER, env, tmp, name) as proc:
        port = wait_ready(proc)
        # runserver's migration check connected once; with our backend its close()
        # left that session idle in the pool, with Django's it was closed.
        before = observer.count()
        assert before == (pool_stats(port)["size"] if pooled else 0)
        with Sampler(observer) as sampler:
            load = hammer(port, ["/pid"], REQUESTS, CLIENTS)
        stats = pool_stats(port) if pooled else None
        after = observer.count()
        return Run(load, sampler.peak, sampler.samples, after, stats, proc.output())


def test_runserver_threads_share_the_pool(site: Site, tmp_path: Path) -> None:
    ours = serve(site, site.ours(), tmp_path, "ours", pooled=True)
    django = serve(site, site.djangos(), tmp_path, "django", pooled=False)

    print(
        f"\n[runserver {site.vendor}] {REQUESTS} requests, {CLIENTS} clients\n"
        f"  django_sapool (POOL_SIZE+MAX_OVERFLOW={CAP}): peak {ours.peak} server sessions, "
        f"{len(ours.load.sessions())} opened, {ours.load.seconds:.2f}s, "
        f"{ours.samples} samples; pool: {brief(ours.stats)}\n"
        f"  Django default (CONN_MAX_AGE=0): peak {django.peak} server sessions, "
        f"{len(django.load.sessions())} opened, {django.load.seconds:.2f}s, "
        f"{django.samples} samples"
    )

    assert ours.load.statuses == {200: REQUESTS}, ours.load.bodies[:5]
    assert django.load.statuses == {200: REQUESTS}, django.load.bodies[:5]
    # The server never saw more of our sessions than the pool may hold...
    assert 1 <= ours.peak <= CAP
    assert len(ours.load.sessions()) <= CAP
    # ...while Django's backend held one per concurrent request, a new one each time.
    assert ours.peak < django.peak
    assert len(django.load.sessions()) > CAP
    # Every request thread returned its connection at request end.
    assert ours.stats is not None
    assert ours.stats["checked_out"] == 0, ours.stats
    assert ours.stats["connections_opened"] <= CAP, ours.stats
    assert ours.stats["timeouts"] == 0, ours.stats
    # The idle pooled connections stay open on the server, and only they.
    assert ours.after == ours.stats["size"] <= CAP
    assert django.after == 0
    # No "never returned" (abandoned by a dead thread) or "discarded" warnings.
    assert sapool_warnings(ours.output) == [], ours.output[-3000:]
