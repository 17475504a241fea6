"""A parent that holds a connection in a transaction while a multiprocessing.Pool works.

Run as ``python -m tests.integration.lifecycle.mp_worker START_METHOD TOKEN``
with the lifesite's environment (DJANGO_SETTINGS_MODULE and SAPOOL_SITE_DATABASES,
as the lifecycle conftest builds it). The parent opens ``transaction.atomic()``,
INSERTs a row and keeps that connection (and its uncommitted row) checked out
while a 4-process ``multiprocessing.Pool`` runs ORM queries, then INSERTs again
and commits. One JSON line on stdout reports what each side saw; the test
checks the rest from the database server.

The recipe under test is the pool's ``initializer=init_worker``:

- ``fork``: the child is a copy of the parent, including this thread's Django
  connection (checked out, inside atomic()) and the parent's pool with its
  idle connections. ``os.register_at_fork`` already made django_sapool forget
  and disarm them in the child before any Python code ran there, so the explicit
  ``after_fork()`` is a harmless no-op (idempotent). It is worth keeping: it
  documents the boundary, and covers code that forks without Python's hooks.
- ``forkserver``: children are forked from a clean server process started with
  exec; it imported this module (``__main__`` preload) but never connected. The
  at-fork hook runs there too and finds nothing; ``after_fork()`` is a no-op.
- ``spawn``: a fresh interpreter; nothing is inherited and ``after_fork()`` is a
  no-op. Django must be set up in the child (``django.setup()``), which the
  initializer does for forkserver and spawn.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
from typing import Any

PROCESSES = 4
TASKS = 16  # a multiple of PROCESSES: the barrier runs them in rounds of PROCESSES

# Every task waits here until PROCESSES tasks are in: a worker can hold only one
# task at a time, so each round has one task per process and all processes work
# (with spawn, the first child would otherwise run everything while the others
# are still importing Django).
_barrier: threading.Barrier | None = None


def init_worker(barrier: threading.Barrier) -> None:
    """multiprocessing initializer: a usable Django, and none of the parent's connections."""
    global _barrier
    _barrier = barrier
    import django
    from django.apps import apps

    if not apps.ready:  # spawn / forkserver: a fresh interpreter
        django.setup()
    import django_sapool

    django_sapool.after_fork()


def task(token: str) -> dict[str, Any]:
    """A few ORM queries, as a task would run them; report the session that ran them."""
    from django.db import close_old_connections

    from .lifesite.models import Item
    from .lifesite.views import session_id

    try:
        assert _barrier is not None
        session = session_id()
        _barrier.wait(timeout=30)  # all PROCESSES sessions are open at this moment
        return {
            "pid": os.getpid(),
            "session": session,
            # The parent's row is not committed yet: a separate session can't see it.
            "parents_row_visible": Item.objects.filter(name=f"before-{token}").exists(),
            "count": Item.objects.count(),
        }
    finally:
        # Outside a request nothing returns the connection: do it per task, as
        # request_finished would, so the next task reuses it from the pool.
        close_old_connections()


def main(method: str, token: str) -> dict[str, Any]:
    import django

    django.setup()
    from django.db import transaction

    from .lifesite.models import Item
    from .lifesite.views import session_id

    Item.objects.exists()  # one connection now idle in the parent's pool, inherited on fork
    ctx = multiprocessing.get_context(method)
    with transaction.atomic():
        parent = session_id()
        Item.objects.create(name=f"before-{token}")
        barrier = ctx.Barrier(PROCESSES)
        pool = ctx.Pool(PROCESSES, initializer=init_worker, initargs=(barrier,))
        try:
            children = pool.map(task, [token] * TASKS, chunksize=1)
        finally:
            pool.close()
            pool.join()
        # Still our session, still in our transaction: both statements succeed.
        parent_after = session_id()
        Item.objects.create(name=f"after-{token}")
        in_transaction = Item.objects.filter(name__endswith=token).count()
    return {
        "method": method,
        "parent_pid": os.getpid(),
        "parent_session": parent,
        "parent_session_after": parent_after,
        "rows_in_transaction": in_transaction,
        "children": children,
    }


def dispose_then_fork(token: str) -> dict[str, Any]:
    """dispose() while this thread holds a connection, then fork a child that exits normally.

    dispose() closes idle connections only; the checked-out one stays open, in a
    pool that is no longer registered. The child must still leave its socket alone
    when the interpreter shuts down (a driver destructor would say goodbye over it:
    mysqlclient sends COM_QUIT, which ends the parent's session).
    """
    import gc

    import django

    django.setup()
    from django.db import transaction

    import django_sapool

    from .lifesite.models import Item
    from .lifesite.views import session_id

    with transaction.atomic():
        parent = session_id()
        Item.objects.create(name=f"before-{token}")
        django_sapool.dispose()  # e.g. a "close connections before forking" hook
        pid = os.fork()
        if pid == 0:  # child: a normal exit, with every destructor run
            gc.collect()
            sys.exit(0)
        os.waitpid(pid, 0)
        parent_after = session_id()
        Item.objects.create(name=f"after-{token}")
        in_transaction = Item.objects.filter(name__endswith=token).count()
    return {
        "method": "dispose-fork",
        "parent_pid": os.getpid(),
        "parent_session": parent,
        "parent_session_after": parent_after,
        "rows_in_transaction": in_transaction,
        "children": [],
    }


if __name__ == "__main__":
    if sys.argv[1] == "dispose-fork":
        print("SAPOOL-MP " + json.dumps(dispose_then_fork(sys.argv[2])))
    else:
        print("SAPOOL-MP " + json.dumps(main(sys.argv[1], sys.argv[2])))
