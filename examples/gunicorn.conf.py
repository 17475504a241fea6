"""gunicorn settings for a Django project whose ENGINE is django_sapool.backends.*.

Copy next to manage.py and run:

    gunicorn -c gunicorn.conf.py myproject.wsgi:application

Command-line options override what is set here (the test suite runs this file with
``--workers``, ``--threads``, ``-k gevent``, ``--preload``... on top).

Sizing: every worker process has its own pool per database alias, so the server
sees at most ``workers x (POOL_SIZE + MAX_OVERFLOW)`` connections from this site
(plus one idle connection in the master if the app queries the database at import
time with ``--preload``). Keep that below the server's ``max_connections``, shared
with every other client. A sync worker needs one connection; a gthread worker at most
``threads``, so POOL_SIZE = threads never makes a thread wait for a connection.
"""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")

# Threads share their worker's pool, so threads are cheap in connections: 2 workers x
# 4 threads need at most 8 server connections with POOL_SIZE=4, MAX_OVERFLOW=0.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "4"))

# A worker that gets TERM (shutdown, HUP reload, max_requests) finishes its requests
# within this time, then runs worker_exit below and returns its connections.
graceful_timeout = 20
timeout = 30
keepalive = 5


def post_fork(server: Any, worker: Any) -> None:
    """In each new worker, right after fork(): forget the master's pools.

    With ``--preload`` the master imports the app, and anything that queries at
    import time (a module-level lookup, an AppConfig.ready() hook) leaves a pooled
    connection in the master. A worker must never use, reset or close it: its socket
    is shared with the master, and two processes talking over one socket corrupt
    the session (or, on close, end it for the master). django_sapool does this by
    itself after every os.fork(); calling it here too documents the dependency and
    covers servers that fork without Python's fork hooks. It is idempotent.

    Safe with every worker class: ``import django_sapool`` and after_fork() import
    nothing from Django unless a django_sapool backend was already loaded (gunicorn
    runs post_fork *before* a gevent/eventlet worker monkey-patches, and a
    django.db imported unpatched would make every greenlet share one connection).
    """
    import django_sapool

    django_sapool.after_fork()


def _close_everything() -> None:
    """Return this thread's Django connections to their pools, then close the pools.

    dispose() closes idle connections only (one in use elsewhere is closed when it is
    returned). A query outside any request - at import time, in a ready() hook, in a
    management command - leaves the calling thread's connection checked out, as
    Django only closes connections at the end of a request; close it first.
    """
    import sys

    import django_sapool

    # Only if Django's connection machinery was loaded: importing it here would be
    # wasted work at exit, and in a fresh process nothing can be open anyway.
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()
    django_sapool.dispose()


def worker_exit(server: Any, worker: Any) -> None:
    """In a worker that is exiting (TERM, HUP reload, max_requests): close its pool.

    By now the worker has finished its requests, so every connection is back in its
    pool and is closed here, properly (a goodbye to the server), before the process
    ends. Without this the drivers' destructors usually do the same while the
    interpreter shuts down, but Python doesn't promise to finalize every object at
    exit; a connection left to the kernel shows up as an abandoned session
    (PostgreSQL) or an aborted client (MySQL), and keeps a server slot until the
    server notices. This makes TERM and HUP deterministic.
    """
    _close_everything()


def on_exit(server: Any) -> None:
    """In the master, at shutdown: close what it opened itself (``--preload`` imports)."""
    _close_everything()
