"""gunicorn settings for the benchmark site (the same for every contender).

The harness passes ``--bind``, ``--workers``, ``--worker-class`` and ``--threads`` on
the command line. Hooks as in ``examples/gunicorn.conf.py``: after fork, forget any
inherited pool; when a worker exits, close its connections properly.
"""

from __future__ import annotations

import sys
from typing import Any

accesslog = None
loglevel = "warning"
timeout = 30
graceful_timeout = 10
# gthread keeps HTTP keep-alive connections (wrk reuses them); sync workers close
# each connection after its response whatever this says.
keepalive = 5


def post_fork(server: Any, worker: Any) -> None:
    import django_sapool

    django_sapool.after_fork()


def worker_exit(server: Any, worker: Any) -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()
    import django_sapool

    django_sapool.dispose()
