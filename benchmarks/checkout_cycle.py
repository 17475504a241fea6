"""Micro-benchmark: one Django request cycle's connection work, in microseconds.

Compares, in one process and one run, a connect/close per cycle (Django's default),
a persistent connection (CONN_MAX_AGE=None, the in-process limit), and
django_sapool. Each cycle: ensure_connection, SELECT 1, close_if_unusable_or_obsolete.

    python benchmarks/checkout_cycle.py [--database-url postgresql://...] [--cycles N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import django
from django.conf import settings


def database(engine_module: str, url: str | None, tmp: str, **extra: Any) -> dict[str, Any]:
    if url:
        u = urlsplit(url)
        return {
            "ENGINE": f"{engine_module}.postgresql",
            "NAME": u.path.lstrip("/") or "postgres",
            "USER": unquote(u.username or ""),
            "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname or "",
            "PORT": u.port or "",
            **extra,
        }
    return {"ENGINE": f"{engine_module}.sqlite3", "NAME": f"{tmp}/bench.sqlite3", **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="sapool-bench-")
    contenders = {
        "default": database("django.db.backends", args.database_url, tmp),
        "persistent": database("django.db.backends", args.database_url, tmp, CONN_MAX_AGE=None),
        "sapool": database("django_sapool.backends", args.database_url, tmp),
    }
    settings.configure(DATABASES={"default": contenders["sapool"], **contenders}, USE_TZ=True)
    django.setup()
    from django.db import connections

    def cycle_time(alias: str) -> float:
        conn = connections[alias]
        started = time.perf_counter()
        for _ in range(args.cycles):
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            conn.close_if_unusable_or_obsolete()
        return (time.perf_counter() - started) / args.cycles * 1e6

    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
        for name in contenders:
            results[name].append(cycle_time(name))
    base = statistics.median(results["persistent"])
    print(f"{'contender':<12}{'median us/cycle':>18}{'min':>10}{'max':>10}{'vs persistent':>16}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<12}{med:>18.1f}{min(times):>10.1f}{max(times):>10.1f}{med / base:>15.2f}x")


if __name__ == "__main__":
    main()
