#!/usr/bin/env python
"""Serve the demo site with waitress, a multi-threaded production WSGI server.

``run.py`` starts this once per contender, with ``DEMO_DATABASE`` in the
environment. The server binds a free port on 127.0.0.1 and announces it on the
first line of stdout (``PORT <n>``): binding port 0 and reporting it avoids the
race of picking a port first and binding it later. It runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

import django


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=16, help="worker threads (default 16)")
    return parser.parse_args()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so the server shuts down through `finally`."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def close_database_connections() -> None:
    """Close what is still open, politely, before the process exits."""
    from django.conf import settings
    from django.db import connections

    connections.close_all()
    if settings.DATABASES["default"]["ENGINE"].startswith("django_sapool."):
        import django_sapool

        django_sapool.dispose()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demosite.settings")
    django.setup()

    import waitress
    from django.core.wsgi import get_wsgi_application

    # The client deliberately sends more concurrent requests than there are
    # threads, so waitress queues some; that is expected, not worth a warning.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    server = waitress.create_server(
        get_wsgi_application(), host="127.0.0.1", port=0, threads=args.threads
    )
    print(f"PORT {server.effective_port}", flush=True)  # type: ignore[union-attr]
    # Nothing else may go to stdout: the parent reads only the first line.
    sys.stdout = sys.stderr

    stop_on_sigterm()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        close_database_connections()


if __name__ == "__main__":
    main()
