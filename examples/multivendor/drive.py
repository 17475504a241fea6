#!/usr/bin/env python
"""Drive the example through Django's WSGI handler, without a network server.

Sends ``--sequential`` POST /orders/ requests one after another, then
``--concurrent`` more from ``--threads`` threads, asking GET /pools/ after each
phase, and prints what happened as one JSON line prefixed ``MULTIVENDOR-RESULT``.
The integration test (tests/integration/test_multivendor.py) runs it; it is
also a quick way to watch the three pools by hand once the databases are
migrated (see README.md)::

    python examples/multivendor/drive.py --sequential 50 --concurrent 80 --threads 8

Requests go through ``multivendor.wsgi.application`` exactly as a WSGI server
would send them, including the ``close()`` call on the response: that is what
fires Django's ``request_finished`` signal, which returns each alias's
connection to its pool. Skipping it would leave connections checked out.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

Response = tuple[int, Any]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=50, help="requests in a row (50)")
    parser.add_argument("--concurrent", type=int, default=80, help="threaded requests (80)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (8)")
    parser.add_argument("--customers", type=int, default=5, help="distinct customers (5)")
    return parser.parse_args()


def call(
    app: Callable[..., Iterable[bytes]], method: str, path: str, data: dict[str, str] | None = None
) -> Response:
    """Send one request through the WSGI application; return (status code, JSON body)."""
    body = urlencode(data or {}).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)  # SERVER_NAME, HTTP_HOST=127.0.0.1, wsgi.* keys
    statuses: list[str] = []

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda chunk: None

    result = app(environ, start_response)
    try:
        payload = b"".join(result)
    finally:
        # PEP 3333: the server must call close(). Django's response.close()
        # sends request_finished -> close_old_connections() -> back to the pools.
        close = getattr(result, "close", None)
        if close is not None:
            close()
    code = int(statuses[0].split()[0])
    try:
        return code, json.loads(payload)
    except ValueError:  # an HTML error page: keep its start for the report
        return code, payload[:500].decode(errors="replace")


def order(app: Callable[..., Iterable[bytes]], i: int, customers: int) -> Response:
    customer = f"customer{i % customers}@example.com"
    return call(app, "POST", "/orders/", {"customer": customer, "amount": f"{i % 90 + 10}.50"})


def summarize(responses: list[Response], seconds: float) -> dict[str, Any]:
    failures = [r for r in responses if r[0] != 201]
    return {
        "requests": len(responses),
        "ok": len(responses) - len(failures),
        "failures": failures[:5],
        "seconds": round(seconds, 3),
    }


def main() -> None:
    args = parse_args()
    # Importable as in manage.py: the project's packages live next to this file.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "multivendor.settings")
    # django_sapool logs each pool it creates (INFO) and any connection it had to
    # discard or reclaim (WARNING); Django logs view errors. All go to stderr.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("django_sapool").setLevel(logging.INFO)

    from django.conf import settings
    from django.db import connections
    from django.db.models import Sum
    from multivendor.wsgi import application as app  # runs django.setup()

    report: dict[str, Any] = {
        "pid": os.getpid(),
        "settings": {
            alias: {
                "vendor": connections[alias].vendor,
                "ENGINE": db["ENGINE"],
                "NAME": str(db["NAME"]),
                "POOL_OPTIONS": db.get("POOL_OPTIONS", {}),
            }
            for alias, db in settings.DATABASES.items()
        },
    }

    # Phase 1: one request at a time, in this thread.
    start = time.perf_counter()
    responses = [order(app, i, args.customers) for i in range(args.sequential)]
    report["sequential"] = summarize(responses, time.perf_counter() - start)
    report["first_response"] = responses[0][1] if responses else None
    report["pools_after_sequential"] = call(app, "GET", "/pools/")[1]

    # Phase 2: concurrent requests; each worker thread has its own Django
    # connection objects, all sharing the process's three pools.
    threads_used: set[str] = set()

    def threaded(i: int) -> Response:
        threads_used.add(threading.current_thread().name)
        return order(app, args.sequential + i, args.customers)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="client") as pool:
        responses = list(pool.map(threaded, range(args.concurrent)))
    report["concurrent"] = summarize(responses, time.perf_counter() - start)
    report["concurrent"]["threads_used"] = len(threads_used)
    report["pools_after_concurrent"] = call(app, "GET", "/pools/")[1]

    # What the ORM sees (the test checks the servers directly as well).
    from cache_app.models import Counter
    from legacy_app.models import LegacyCustomer
    from shop.models import Order

    counter = Counter.objects.filter(name="orders").first()
    report["orm_counts"] = {
        "orders": Order.objects.count(),
        "customers": LegacyCustomer.objects.count(),
        "customer_orders": LegacyCustomer.objects.aggregate(n=Sum("order_count"))["n"] or 0,
        "counter": counter.value if counter else 0,
    }
    connections.close_all()
    print("MULTIVENDOR-RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
