"""multiprocessing.Pool started while the parent holds a connection inside atomic().

The parent (tests/integration/lifecycle/mp_worker.py) keeps its session, with an
uncommitted INSERT, across a 4-process Pool created with each start method. If a
child used, reset or closed an inherited connection, the parent's transaction
would be rolled back or its session killed under it; if a child reused the
parent's socket, both would read each other's replies. The server decides: the
parent's session id is unchanged, both rows are committed, no child ran on the
parent's session, and the children's sessions are gone once the Pool is joined.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from ..conftest import ROOT
from ._load import CAP, Site, sapool_warnings
from .mp_worker import PROCESSES, TASKS

METHODS = ["fork", "forkserver", "spawn"]


def run_parent(env: dict[str, str], method: str, token: str) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.lifecycle.mp_worker", method, token],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SAPOOL-MP ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    facts: dict[str, Any] = json.loads(lines[-1].removeprefix("SAPOOL-MP "))
    return facts, proc.stderr


@pytest.mark.parametrize("method", METHODS)
def test_pool_children_never_touch_the_parents_session(site: Site, method: str) -> None:
    env = site.ours()
    token = uuid.uuid4().hex[:8]
    facts, stderr = run_parent(env, method, token)
    children = facts["children"]
    by_pid: dict[int, set[int]] = {}
    for child in children:
        by_pid.setdefault(child["pid"], set()).add(child["session"])
    print(
        f"\n[multiprocessing {method} {site.vendor}] parent session {facts['parent_session']} "
        f"-> {facts['parent_session_after']}; {len(children)} tasks in {len(by_pid)} "
        f"processes, sessions per process {sorted(len(s) for s in by_pid.values())}"
    )

    # The parent kept its session and its transaction across the Pool's lifetime.
    assert facts["parent_session_after"] == facts["parent_session"]
    assert facts["rows_in_transaction"] == 2
    assert facts["parent_pid"] not in by_pid
    # The barrier spread the tasks: every process ran its share, concurrently.
    tasks_per_pid = sorted(sum(c["pid"] == pid for c in children) for pid in by_pid)
    assert tasks_per_pid == [TASKS // PROCESSES] * PROCESSES, tasks_per_pid
    # Children ran on sessions of their own...
    child_sessions = {c["session"] for c in children}
    assert facts["parent_session"] not in child_sessions
    # ...outside the parent's transaction (its first row was not committed yet)...
    assert not any(c["parents_row_visible"] for c in children)
    # ...pooled per child process: a task returns its connection, the next reuses it.
    assert all(1 <= len(s) <= CAP for s in by_pid.values()), by_pid
    assert sapool_warnings(stderr) == [], stderr[-3000:]

    with site.observer(env) as observer:
        # The transaction committed both rows, written before and after the Pool.
        assert observer.items(f"before-{token}") == 1
        assert observer.items(f"after-{token}") == 1
        # Parent and children have exited: the server holds none of their sessions.
        left = observer.wait_until(lambda n: n == 0, timeout=5)
        assert left == 0, observer.ids()


def test_fork_after_dispose_keeps_parents_session(
    site: Site, request: pytest.FixtureRequest
) -> None:
    """A pool disposed with a connection checked out must still be disarmed in a child."""
    # A disposed pool with a connection still checked out is out of the registry
    # but its socket is the parent's all the same: mysqlclient's destructor would
    # send COM_QUIT over it at the child's exit unless the child disarms it.
    env = site.ours()
    token = uuid.uuid4().hex[:8]
    facts, stderr = run_parent(env, "dispose-fork", token)
    assert facts["parent_session_after"] == facts["parent_session"]
    assert facts["rows_in_transaction"] == 2
    with site.observer(env) as observer:
        assert observer.items(f"before-{token}") == 1
        assert observer.items(f"after-{token}") == 1
