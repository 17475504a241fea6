"""psycogreen's gevent wait callback for psycopg2, as gevent projects on psycopg2 set it.

``psycogreen/gevent.py``'s ``gevent_wait_callback``: psycopg2 connects and runs
queries asynchronously, and the callback waits for the socket in gevent's hub
instead of in libpq (``psycopg2.extensions.set_wait_callback``).
"""

from __future__ import annotations

from typing import Any


def gevent_wait_callback(conn: Any, timeout: float | None = None) -> None:
    import psycopg2
    from gevent.socket import wait_read, wait_write
    from psycopg2 import extensions

    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        if state == extensions.POLL_READ:
            wait_read(conn.fileno(), timeout=timeout)
        elif state == extensions.POLL_WRITE:
            wait_write(conn.fileno(), timeout=timeout)
        else:
            raise psycopg2.OperationalError(f"bad state from poll: {state!r}")
