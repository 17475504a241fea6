"""More threads than connections: wall time, waits and the cap, one version against another.

N threads (default 32) each run C cycles of a request's connection work
(``ensure_connection()``, ``SELECT 1`` through a Django cursor,
``close_if_unusable_or_obsolete()``) through one django_sapool alias with
POOL_SIZE=4 and MAX_OVERFLOW=0: most checkouts find every connection in use or
remembered by another thread, so they steal one or wait in the queue. With
``--gevent``, greenlets instead of threads (``gevent.monkey.patch_all()``).

    .venv/bin/python benchmarks/contention.py [--threads 32] [--cycles 200]
        [--rounds 5] [--timeout 30] [--gevent] [--vendor postgresql|mysql] [--src DIR ...]

Each ``--src DIR`` (e.g. a ``git worktree`` of an older commit) is one version;
``--src .`` is this checkout (the default when none is given). Versions run in
turn, round by round, each round in a new process, so that the machine's noise
hits all alike. Per version: the median and best wall time of a round, the
checkouts per second of the median round, the checkouts that waited in the
queue (median of the rounds) and the longest wait, the failed cycles and the
pool's timeouts (summed over the rounds), and the connections it ever opened
(never more than POOL_SIZE, or the cap was broken). Wall times depend on the
machine; compare versions of one run only.
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

POOL_SIZE = 4


def child(threads: int, cycles: int, vendor: str, green: bool, timeout: float) -> dict[str, Any]:
    """Run one round in this process; return what it measured."""
    if green:
        from gevent import monkey

        monkey.patch_all()
    import_version_under_test()
    import threading

    import django
    from django.conf import settings

    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": f"django_sapool.backends.{vendor}",
                **connection_settings(vendor),
                "POOL_OPTIONS": {"POOL_SIZE": POOL_SIZE, "MAX_OVERFLOW": 0, "TIMEOUT": timeout},
            }
        },
        USE_TZ=True,
    )
    django.setup()
    from django.db import connection

    import django_sapool

    failed: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def cycle() -> None:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        connection.close_if_unusable_or_obsolete()

    warm_up_failures: list[BaseException] = []

    def work() -> None:
        try:
            cycle()  # warm: this thread's wrapper exists
        except Exception as exc:
            # Without it, the others would wait at the barrier for ever.
            warm_up_failures.append(exc)
            start.abort()
            return
        try:
            start.wait()
        except threading.BrokenBarrierError:
            return  # another thread failed to warm up: its error is the one raised
        for _ in range(cycles):
            try:
                cycle()
            except Exception as exc:  # counted: the point is how many
                failed.append(exc)
                connection.close()
        connection.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        for worker in workers:
            worker.join()
        raise warm_up_failures[0] from None
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - began
    (status,) = django_sapool.pool_status("default")
    return {
        "wall": wall,
        "failed": len(failed),
        "opened": status.connections_opened,
        "timeouts": status.timeouts,
        "waits": status.checkout_waits,
        "wait_ms_max": status.wait_ms_max,
        "checked_out": status.checked_out,
    }


def run_round(src: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "SAPOOL_SRC": "" if src == "." else os.path.abspath(src)}
    command = [sys.executable, __file__, "--child", "--threads", str(args.threads)]
    command += ["--cycles", str(args.cycles), "--vendor", args.vendor]
    command += ["--timeout", str(args.timeout)]
    if args.gevent:
        command.append("--gevent")
    return run_child(command, env, f"--src {src}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30.0, help="POOL_OPTIONS TIMEOUT")
    parser.add_argument("--gevent", action="store_true", help="greenlets instead of threads")
    parser.add_argument("--vendor", choices=sorted(SERVERS), default="postgresql")
    parser.add_argument("--src", action="append", help="a version's directory ('.': this one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.threads, args.cycles, args.vendor, args.gevent, args.timeout)))
        return
    versions = args.src or ["."]
    rounds: dict[str, list[dict[str, Any]]] = {src: [] for src in versions}
    for _ in range(args.rounds):
        for src in versions:
            rounds[src].append(run_round(src, args))
    kind = "greenlets" if args.gevent else "threads"
    checkouts = args.threads * args.cycles
    print(
        f"# {args.threads} {kind} x {args.cycles} cycles through POOL_SIZE={POOL_SIZE}, "
        f"MAX_OVERFLOW=0, TIMEOUT={args.timeout:g} ({args.vendor}), {args.rounds} rounds"
    )
    print(
        "version | wall s, median (best) | checkouts/s | waits | longest wait ms | "
        "failed (all rounds) | timeouts (all rounds) | opened | checked out at the end"
    )
    for src, results in rounds.items():
        walls = [r["wall"] for r in results]
        median = statistics.median(walls)
        waits = statistics.median(r["waits"] for r in results)
        print(
            f"{src} | {median:.3f} ({min(walls):.3f}) | {checkouts / median:,.0f} | "
            f"{waits:,.0f} | {max(r['wait_ms_max'] for r in results):.1f} | "
            f"{sum(r['failed'] for r in results)} | {sum(r['timeouts'] for r in results)} | "
            f"{max(r['opened'] for r in results)} | {max(r['checked_out'] for r in results)}"
        )


if __name__ == "__main__":
    main()
