"""Real gunicorn processes on the lifesite, against real PostgreSQL and MySQL servers.

Every test runs gunicorn with examples/gunicorn.conf.py (its post_fork, worker_exit and
on_exit hooks) plus command-line overrides, and asserts what the *database server*
sees: pg_stat_activity rows with our application_name, processlist rows in our fresh
MySQL database. Each test ends with TERM and checks that no session is left behind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from ._http import (
    EXAMPLE_CONF,
    Gunicorn,
    LoadResult,
    Sampler,
    Site,
    by_worker,
    conf_with_urls_in_master,
    load,
    open_site,
    socket_holders,
    terminate_cleanly,
    wait_for,
    worker_stats,
)

VENDORS = [
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
]
POOL_SIZE, MAX_OVERFLOW = 2, 2
CAP = POOL_SIZE + MAX_OVERFLOW  # the most connections one worker process may hold
POOL = {"POOL_SIZE": POOL_SIZE, "MAX_OVERFLOW": MAX_OVERFLOW, "TIMEOUT": 20}


@contextmanager
def serving(
    request: pytest.FixtureRequest,
    vendor: str,
    tmp_path: Path,
    workers: int,
    args: Sequence[str],
    query_at_import: bool = False,
) -> Iterator[tuple[Site, Gunicorn, int | None]]:
    """gunicorn with ``workers`` workers and ``args`` on a fresh lifesite (POOL), started.

    Yields the site, the server and the site's abandoned-session count from before
    the start (for terminate_cleanly, each test's last step). ``query_at_import``:
    the site queries when its views are imported, which the master does before it
    forks (conf_with_urls_in_master), so the master holds a session of its own.
    """
    site = open_site(request, vendor, POOL_OPTIONS=POOL)
    env, conf = site.env, EXAMPLE_CONF
    if query_at_import:
        env, conf = {**env, "SAPOOL_SITE_QUERY_AT_IMPORT": "1"}, conf_with_urls_in_master(tmp_path)
    abandoned = site.abandoned()
    with Gunicorn(env, ["--workers", str(workers), *args], tmp_path / "g.log", conf=conf) as server:
        server.start(workers)
        yield site, server, abandoned


@pytest.mark.parametrize("vendor", VENDORS)
def test_preload_sync_workers_never_share_a_session(
    request: pytest.FixtureRequest, vendor: str, tmp_path: Path
) -> None:
    """--preload + a query at import: the master holds a session; workers get their own.

    The master's session is the only one that exists before the first request
    (workers connect lazily), and /proc confirms that only the master process holds
    its socket: each worker's inherited copy was disarmed right after fork.
    """
    workers = 3
    with serving(
        request,
        vendor,
        tmp_path,
        workers,
        # --threads 1: the example's threads=4 would turn "sync" into gthread.
        ["--preload", "-k", "sync", "--threads", "1"],
        query_at_import=True,
    ) as (site, server, abandoned):
        before = site.probe.current()
        assert len(before) == 1, f"expected only the master's import-time session: {before}"
        master = before[0]
        worker_pids = server.workers()
        assert socket_holders(master.client_port, [server.pid, *worker_pids]) == {server.pid}

        result = load(server.port, "/pid", total=300, concurrency=12)
        assert result.all_ok, result.summary() + server.log()
        sessions = by_worker(result.payloads)
        assert set(sessions) == set(worker_pids), "every worker served and no other did"
        for pid, ids in sessions.items():
            assert master.id not in ids, f"worker {pid} used the master's session"
            for other, other_ids in sessions.items():
                if other != pid:
                    assert not ids & other_ids, f"workers {pid} and {other} shared a session"
            # A sync worker runs one request at a time: one connection, kept in its pool.
            assert len(ids) <= POOL_SIZE, (pid, ids)
        # Every session the workers reported is still the same live server session.
        live = site.ids()
        assert set().union(*sessions.values()) | {master.id} == live

        stats = worker_stats(server, workers)
        assert set(stats) == set(worker_pids)
        for pid, data in stats.items():
            (pool,) = data["pools"]  # one pool per worker, never rebuilt
            assert pool["pid"] == pid
            assert pool["connections_opened"] == len(sessions[pid]) <= POOL_SIZE, pool
            assert pool["connections_invalidated"] == pool["timeouts"] == 0, pool
        # The master's session survived 300 requests in its children, untouched.
        assert master in site.probe.current()
        print(
            f"\n[{vendor}] preload/sync: {workers} workers, sessions per worker "
            f"{ {p: len(s) for p, s in sessions.items()} }, master session {master.id}, "
            f"load {result.elapsed:.2f}s"
        )
        terminate_cleanly(server, site, abandoned)


@pytest.mark.parametrize("vendor", VENDORS)
def test_gthread_workers_stay_under_the_cap(
    request: pytest.FixtureRequest, vendor: str, tmp_path: Path
) -> None:
    """2 gthread workers x 8 threads share 2 x (POOL_SIZE + MAX_OVERFLOW) connections."""
    workers, threads = 2, 8
    with serving(
        request, vendor, tmp_path, workers, ["-k", "gthread", "--threads", str(threads)]
    ) as (site, server, abandoned):
        with Sampler(site.new_probe) as sampler:
            result = load(server.port, "/pid", total=400, concurrency=32)
        assert result.all_ok, result.summary() + server.log()
        # (gthread workers need not share the load: one fast worker may take it all.)
        assert set(by_worker(result.payloads)) <= set(server.workers())
        assert 1 <= sampler.peak <= workers * CAP, sampler.peak
        stats = worker_stats(server, workers)
        for data in stats.values():
            # One pool per worker that served (none in a worker that got no request).
            assert len(data["pools"]) <= 1, data
            for pool in data["pools"]:
                assert pool["timeouts"] == pool["checked_out"] == 0, pool
                assert pool["size"] <= POOL_SIZE, pool  # overflow connections were closed
        opened = sum(p["connections_opened"] for d in stats.values() for p in d["pools"])
        print(
            f"\n[{vendor}] gthread: {workers}x{threads} threads, 400 requests at 32: peak "
            f"{sampler.peak} server sessions (cap {workers * CAP}), {opened} opened, "
            f"{sampler.samples} samples, load {result.elapsed:.2f}s"
        )
        terminate_cleanly(server, site, abandoned)


@pytest.mark.parametrize("vendor", VENDORS)
def test_hup_reload_closes_the_old_workers_sessions(
    request: pytest.FixtureRequest, vendor: str, tmp_path: Path
) -> None:
    """HUP: new workers serve, the old ones exit, and their sessions go with them."""
    workers, threads = 2, 4
    with serving(
        request, vendor, tmp_path, workers, ["-k", "gthread", "--threads", str(threads)]
    ) as (site, server, abandoned):
        old_pids = set(server.workers())
        first = load(server.port, "/pid", total=120, concurrency=16)
        assert first.all_ok, first.summary() + server.log()
        # What the old workers still hold: their pooled connections (the overflow ones
        # they used were closed when returned). No other process of ours exists yet.
        old_sessions = site.ids()
        assert old_sessions and old_sessions <= set().union(*by_worker(first.payloads).values())

        server.signal(signal.SIGHUP)

        def replaced() -> bool:
            pids = set(server.workers())
            return len(pids) == workers and not pids & old_pids

        assert wait_for(replaced, timeout=15), (server.workers(), old_pids, server.log())
        new_pids = set(server.workers())
        second = load(server.port, "/pid", total=120, concurrency=16)
        assert second.all_ok, second.summary() + server.log()
        # Only new workers serve (not necessarily both: one gthread worker may take all).
        assert set(by_worker(second.payloads)) <= new_pids

        def settled() -> bool:
            ids = site.ids()
            return not ids & old_sessions and len(ids) <= workers * CAP

        assert wait_for(settled, timeout=5), (site.ids(), old_sessions)
        # Each new worker holds at most POOL_SIZE once idle (overflow is closed on return).
        for pid, data in worker_stats(server, workers).items():
            assert pid in new_pids
            assert all(pool["size"] <= POOL_SIZE for pool in data["pools"]), data
        if abandoned is not None:
            # The old workers closed their sessions properly (a goodbye, not an EOF).
            assert site.abandoned() == abandoned
        print(
            f"\n[{vendor}] HUP: old workers had {len(old_sessions)} sessions, now "
            f"{site.count()} (cap {workers * CAP})"
        )
        terminate_cleanly(server, site, abandoned)


@pytest.mark.parametrize("vendor", VENDORS)
def test_term_under_load_leaves_no_session(
    request: pytest.FixtureRequest, vendor: str, tmp_path: Path
) -> None:
    """TERM while requests are in flight, with a preloaded master holding a session.

    Requests already accepted finish (200); later ones are refused once the workers
    stop listening (a connection error, never a 500); then the master and workers
    have closed every session.
    """
    with serving(
        request,
        vendor,
        tmp_path,
        2,
        ["--preload", "-k", "gthread", "--threads", "4"],
        query_at_import=True,
    ) as (site, server, abandoned):
        results: list[LoadResult] = []
        loader = threading.Thread(
            target=lambda: results.append(
                load(server.port, "/pid", total=2000, concurrency=8, deadline=8)
            )
        )
        loader.start()
        try:
            assert wait_for(lambda: site.count() >= 3, timeout=5), site.probe.current()
            terminate_cleanly(server, site, abandoned)
        finally:
            loader.join(30)
        (result,) = results
        assert result.statuses and set(result.statuses) == {200}, result.summary()
        assert all(not e[:3].isdigit() for e in result.errors), result.errors[:5]
        print(
            f"\n[{vendor}] TERM under load: {len(result.statuses)} answered, "
            f"{len(result.errors)} refused after shutdown began"
        )
