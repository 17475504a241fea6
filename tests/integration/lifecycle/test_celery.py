"""A Celery prefork worker: the pool survives across tasks, and leaves with the worker.

The worker (``celery -A tests.integration.lifecycle.celery_app worker
--pool=prefork --concurrency=2``) uses the filesystem broker and file results in
a temporary directory, so nothing needs installing or running besides the
database. 200 tasks each run a query and report (worker pid, server session).
With the recipe in celery_app.py each prefork child returns its connection after
every task and reuses it for the next: a handful of sessions serve all tasks.
After a warm shutdown (SIGTERM) the server must see none of them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..conftest import ROOT
from ._load import POOL_OPTIONS, Site, sapool_warnings, started

TASKS = 200
CONCURRENCY = 2
POOL_SIZE: int = POOL_OPTIONS["POOL_SIZE"]
APP = "tests.integration.lifecycle.celery_app"
WORKER = [
    sys.executable, "-m", "celery", "-A", APP, "worker", "--pool=prefork",
    f"--concurrency={CONCURRENCY}", "--without-gossip", "--without-mingle",
    "--without-heartbeat", "--loglevel=warning",
]  # fmt: skip


def test_celery_prefork_reuses_pooled_connections(site: Site, tmp_path: Path) -> None:
    env = {**site.ours(), "SAPOOL_CELERY_DIR": str(tmp_path / "celery")}
    t0 = time.monotonic()
    with site.observer(env) as observer, started(WORKER, env, tmp_path, "worker") as worker:
        producer = subprocess.run(
            [sys.executable, "-m", APP, str(TASKS), "30"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=40,
        )  # fmt: skip
        lines = [ln for ln in producer.stdout.splitlines() if ln.startswith("SAPOOL-CELERY ")]
        assert producer.returncode == 0 and lines, (
            f"producer exit {producer.returncode}\n{producer.stderr[-3000:]}\n{worker.output()}"
        )
        done = [tuple(r) for r in json.loads(lines[-1].removeprefix("SAPOOL-CELERY "))]
        elapsed = time.monotonic() - t0
        open_while_idle = observer.ids()

        # Warm shutdown: children finish, run worker_process_shutdown, exit. With a
        # transport without async I/O (the filesystem one) Celery's loop only sees
        # the signal between 2 s drain_events() timeouts: ~4 s pass before it even
        # closes its pool, so "a few seconds" here means 10.
        stopped_at = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)
        left = observer.wait_until(lambda n: n == 0, timeout=10)
        gone_after = time.monotonic() - stopped_at
        try:
            code: int | None = worker.popen.wait(15)
        except subprocess.TimeoutExpired:
            code = None  # the assertion below reports it; started() kills it
        exited_after = time.monotonic() - stopped_at
        output = worker.output()

    by_pid: dict[int, set[int]] = {}
    for pid, session in done:
        by_pid.setdefault(pid, set()).add(session)
    sessions = {session for _, session in done}
    print(
        f"\n[celery {site.vendor}] {len(done)} tasks in {elapsed:.2f}s by {len(by_pid)} "
        f"processes; session ids per process {[len(s) for s in by_pid.values()]}, "
        f"{len(sessions)} distinct; open on the server while idle: {len(open_while_idle)}; "
        f"after SIGTERM: {left} left after {gone_after:.2f}s, exit {code} after {exited_after:.2f}s"
    )

    assert len(done) == TASKS
    assert 1 <= len(by_pid) <= CONCURRENCY
    # One pool per child, alive across tasks: never a session per task.
    assert len(sessions) <= CONCURRENCY * POOL_SIZE
    assert all(len(ids) <= POOL_SIZE for ids in by_pid.values()), by_pid
    # Between tasks the connections sat in the pools, still open on the server.
    assert open_while_idle == sessions
    # A warm shutdown left nothing behind on the server.
    assert code == 0, output[-3000:]
    assert left == 0
    assert sapool_warnings(output) == [], output[-3000:]
