"""A Celery app for the lifesite, wired the way django_sapool's README recommends.

Worker: ``celery -A tests.integration.lifecycle.celery_app worker --pool=prefork``,
with the lifesite's environment plus SAPOOL_CELERY_DIR, a directory for the
filesystem broker and the file result backend (no broker server to install).

The two signal handlers below are the recipe; in a project they go in the
module that creates the Celery app (``proj/celery.py``):

- ``worker_process_init`` -> ``django_sapool.after_fork()``. Prefork children are
  forked from the worker's main process; ``os.register_at_fork`` already makes
  django_sapool forget the parent's pools and connections in each child, so this
  call is idempotent insurance, in the place Celery documents for such resets.
- ``task_postrun`` -> ``django.db.close_old_connections()``. Tasks are not
  requests: Django's request_started/request_finished never fire, so nothing
  would return a task's connection and each prefork child would hold one pooled
  connection per thread forever. Returning it after every task keeps it in the
  pool for the next task (no reconnect). Celery's Django fix-up (active when
  DJANGO_SETTINGS_MODULE is set before the app is created) also closes
  connections before and after each task; the handler makes the recipe
  independent of it (``settings.configure()``, fix-up disabled, or
  CELERY_DB_REUSE_MAX set, which makes the fix-up keep connections).
- ``worker_process_shutdown`` -> ``django_sapool.dispose()``: a child that
  exits closes its idle pooled connections properly instead of letting the
  server notice a dropped socket (an "unexpected EOF" / aborted connection).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import task_postrun, worker_process_init, worker_process_shutdown
from kombu.transport import filesystem

import django_sapool

# Before the app exists, so Celery's Django fix-up (django.setup() in the worker) applies.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.lifecycle.lifesite.settings")


def celery_config(folder: str) -> dict[str, Any]:
    """Filesystem broker and file results under folder: nothing to install or run."""
    queue = Path(folder, "queue")
    processed = Path(folder, "processed")
    results = Path(folder, "results")
    for path in (queue, processed, results):
        path.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            # One directory both ways: producers write where the worker reads.
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "store_processed": True,
            "processed_folder": str(processed),
            # Broadcast mailboxes; kombu's default is ./control in the working dir.
            "control_folder": str(Path(folder, "control")),
            "polling_interval": 0.05,  # the default (1 s) would dominate a short test
        },
        "result_backend": f"file://{results}",
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # The filesystem transport has no fan-out for remote control: don't ask.
        "worker_enable_remote_control": False,
        "broker_connection_retry_on_startup": True,
    }


def _atomic_put(self: Any, queue: str, payload: Any, **kwargs: Any) -> None:
    """kombu's filesystem ``_put``, but atomic: write a temporary file, then rename it.

    kombu creates the message file and then writes it; a worker polling the folder
    in between moves the empty file away and dies on ``JSONDecodeError`` (seen in
    CI under load). A rename into the folder makes the message appear whole.
    """
    import uuid

    from kombu.utils.encoding import str_to_bytes
    from kombu.utils.json import dumps

    name = f"{int(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
    temporary = os.path.join(self.data_folder_out, f".writing-{uuid.uuid4()}")
    with open(temporary, "wb") as f:
        f.write(str_to_bytes(dumps(payload)))
    os.replace(temporary, os.path.join(self.data_folder_out, name))


filesystem.Channel._put = _atomic_put

app = Celery("lifecycle")
app.conf.update(celery_config(os.environ.get("SAPOOL_CELERY_DIR", "/tmp/sapool-celery")))


@worker_process_init.connect
def _sapool_after_fork(**kwargs: Any) -> None:
    # Never use a connection inherited from the worker's main process.
    django_sapool.after_fork()


@task_postrun.connect
def _return_db_connections(**kwargs: Any) -> None:
    # No request_finished for tasks: return this task's connections to the pool.
    from django.db import close_old_connections

    close_old_connections()


@worker_process_shutdown.connect
def _close_pool(**kwargs: Any) -> None:
    # Say goodbye to the server for the idle pooled connections of this child.
    django_sapool.dispose()


@app.task(name="lifecycle.session")
def session() -> tuple[int, int]:
    """One ORM query; report (worker pid, server session id)."""
    from .lifesite.models import Item
    from .lifesite.views import session_id

    Item.objects.exists()
    return os.getpid(), int(session_id())


# -- test driver (not part of the recipe) ----------------------------------------


def produce(n: int, timeout: float) -> list[tuple[int, int]]:
    """Send n tasks and wait for all results: run as ``python -m ...celery_app N``."""
    from celery.result import ResultSet

    results = ResultSet([session.delay() for _ in range(n)])
    return [tuple(r) for r in results.get(timeout=timeout, interval=0.05)]  # type: ignore[misc]


if __name__ == "__main__":
    import json
    import sys

    print("SAPOOL-CELERY " + json.dumps(produce(int(sys.argv[1]), float(sys.argv[2]))))
