"""The /io view in one process, without HTTP: LEND "transaction" on 4 connections.

T threads (default 16: one gthread-io worker of the HTTP benchmark) each run the
/io request for S seconds: ``request_started``, a query, 50 ms of sleep, a query,
``request_finished``, through one alias per contender:

- ``persistent``: Django's backend, CONN_MAX_AGE=None: a server session per thread;
- ``sapool-txn``: django_sapool, POOL_SIZE=4 (``--pool-size``), MAX_OVERFLOW=0,
  LEND "transaction";
- ``sapool``: the same pool with LEND "request", which holds its connection
  through the sleep, so that the cap decides its rate.

    .venv/bin/python benchmarks/lend_io.py [--threads 16] [--seconds 5] [--rounds 5]
        [--pool-size 4] [--vendor postgresql|mysql]

``--pool-size`` as many as ``--threads`` takes the waits out: what sapool-txn
then loses to a persistent connection is its checkout and return per statement.

Contenders take turns, round by round, each round in a new process. Per
contender: requests per second (median of the rounds; each thread's requests
over the time until its last one ended, summed over the threads), the time a request
spends beyond its sleep (median and 99th percentile over every request of every
round), the connections opened, and for django_sapool the checkouts that waited
for a connection (after the warm-up; median of the rounds) and the longest wait
(warm-up included); then sapool-txn ÷ each contender, round by round (median,
min-max). No HTTP server or client, so
what differs is Django's request, the queries, the GIL and the pool: the part of
the HTTP /io comparison that is django_sapool's. Wall times depend on the
machine; compare contenders of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from local_server import SERVERS, connection_settings, import_version_under_test, run_child

CONTENDERS = ("persistent", "sapool-txn", "sapool")
#: django_sapool's POOL_SIZE unless --pool-size says otherwise.
POOL_SIZE = 4
#: The HTTP benchmark's /io sleep (benchmarks/site/benchsite/views.py).
IO_SECONDS = 0.05


def database(contender: str, vendor: str, pool_size: int) -> dict[str, Any]:
    """Return the contender's ``DATABASES["default"]``."""
    db = connection_settings(vendor)
    if contender == "persistent":
        return {"ENGINE": f"django.db.backends.{vendor}", "CONN_MAX_AGE": None, **db}
    options: dict[str, Any] = {"POOL_SIZE": pool_size, "MAX_OVERFLOW": 0}
    if contender == "sapool-txn":
        options["LEND"] = "transaction"
    return {"ENGINE": f"django_sapool.backends.{vendor}", "POOL_OPTIONS": options, **db}


def child(
    contender: str, threads: int, seconds: float, vendor: str, pool_size: int
) -> dict[str, Any]:
    """Run one round in this process; return what it measured."""
    import_version_under_test()
    import threading

    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": database(contender, vendor, pool_size)}, USE_TZ=True)
    django.setup()
    from django.core.signals import request_finished, request_started
    from django.db import connection

    def query() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    def request() -> None:
        request_started.send(sender=None)
        try:
            query()
            time.sleep(IO_SECONDS)
            query()
        finally:
            request_finished.send(sender=None)

    beyond_sleep: list[float] = []  # list.append is atomic under the GIL
    pooled = contender != "persistent"
    if pooled:
        import django_sapool
    else:
        # Django's backend sends connection_created once per server connection
        # (django_sapool sends it at every checkout: its pool counts instead).
        from django.db.backends.signals import connection_created

        opened: list[None] = []
        connection_created.connect(lambda **kwargs: opened.append(None), weak=False)
    started = deadline = 0.0
    waits_warming = 0
    #: Per thread: its requests, and the seconds from the start to its last one's end.
    per_thread: list[tuple[int, float]] = []

    def go() -> None:
        # The barrier's action, run before any thread is let go: the clock
        # starts when every thread is warm, and the warm-up's waits are left out.
        nonlocal started, deadline, waits_warming
        if pooled:
            waits_warming = django_sapool.pool_status("default")[0].checkout_waits
        started = time.monotonic()
        deadline = started + seconds

    start = threading.Barrier(threads, action=go)

    failures: list[BaseException] = []

    def work() -> None:
        try:
            request()  # warm: this thread's wrapper and, for persistent, its session
            start.wait()
            done, ended = 0, started
            while ended < deadline:
                began = time.perf_counter()
                request()
                beyond_sleep.append(time.perf_counter() - began - IO_SECONDS)
                done, ended = done + 1, time.monotonic()
            per_thread.append((done, ended - started))
        except threading.BrokenBarrierError:
            pass  # another thread failed to warm up: its error is the one raised
        except Exception as exc:
            # A failed request makes the round worthless: stop everyone now
            # rather than wait at the barrier or report the requests that passed.
            failures.append(exc)
            start.abort()
        finally:
            connection.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    # Each thread's own rate, summed: requests / seconds would count whole
    # requests only, so with ~97 requests of ~51 ms per thread in 5 s it moves
    # in steps of 1% (310.4 or 313.6 req/s), as wide as the differences measured.
    rps = sum(done / elapsed for done, elapsed in per_thread)
    result: dict[str, Any] = {"rps": rps, "beyond_sleep": beyond_sleep}
    if pooled:
        (status,) = django_sapool.pool_status("default")
        result.update(
            opened=status.connections_opened,
            waits=status.checkout_waits - waits_warming,
            wait_ms_max=status.wait_ms_max,
        )
    else:
        result.update(opened=len(opened), waits=None, wait_ms_max=None)
    return result


def run_round(contender: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", contender, "--threads", str(args.threads)]
    command += ["--seconds", str(args.seconds), "--vendor", args.vendor]
    command += ["--pool-size", str(args.pool_size)]
    return run_child(command, dict(os.environ), contender)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pool-size", type=int, default=POOL_SIZE)
    parser.add_argument("--vendor", choices=sorted(SERVERS), default="postgresql")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measured = child(args.child, args.threads, args.seconds, args.vendor, args.pool_size)
        print(json.dumps(measured))
        return
    rounds: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    for number in range(args.rounds):
        # Rotated each round, so that no contender always runs first.
        first = number % len(CONTENDERS)
        for contender in CONTENDERS[first:] + CONTENDERS[:first]:
            rounds[contender].append(run_round(contender, args))
    print(
        f"# /io in one process ({args.vendor}): {args.threads} threads x {args.seconds:g} s, "
        f"query + {IO_SECONDS * 1000:g} ms sleep + query; django_sapool "
        f"POOL_SIZE={args.pool_size}, MAX_OVERFLOW=0; {args.rounds} rounds"
    )
    print(
        "contender | req/s, median (min-max) | ms beyond the sleep: p50, p99 | "
        "connections opened | checkouts that waited (median) | longest wait ms"
    )
    for contender, results in rounds.items():
        rps = [r["rps"] for r in results]
        beyond = [s * 1000 for r in results for s in r["beyond_sleep"]]
        waits = [r["waits"] for r in results if r["waits"] is not None]
        longest = [r["wait_ms_max"] for r in results if r["wait_ms_max"] is not None]
        print(
            f"{contender} | {statistics.median(rps):,.1f} ({min(rps):,.1f}-{max(rps):,.1f}) | "
            f"{percentile(beyond, 0.5):.2f}, {percentile(beyond, 0.99):.2f} | "
            f"{max(r['opened'] for r in results)} | "
            f"{f'{statistics.median(waits):,.0f}' if waits else '-'} | "
            f"{f'{max(longest):.1f}' if longest else '-'}"
        )
    for contender in CONTENDERS:
        if contender == "sapool-txn":
            continue
        ratios = [
            txn["rps"] / other["rps"]
            for txn, other in zip(rounds["sapool-txn"], rounds[contender], strict=True)
        ]
        print(
            f"sapool-txn / {contender}: {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
