"""Micro-benchmark: one request's connection work in one process, in microseconds.

Every contender runs the same cycle a Django request runs: get a connection,
``SELECT 1`` through a Django cursor, and ``close_if_unusable_or_obsolete()``
(what the ``request_finished`` signal calls). Contenders, interleaved round by
round so that machine noise hits all alike:

- ``persistent``     CONN_MAX_AGE=None, no health checks: the in-process limit;
- ``persistent+hc``  CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True;
- ``default``        CONN_MAX_AGE=0: a new server connection per cycle (--with-default);
- ``django-pool``    Django's own pool (PostgreSQL, psycopg 3; if psycopg_pool is installed);
- ``dbcp``           django-db-connection-pool (if installed);
- ``sapool``         django_sapool with its defaults (PRE_PING on);
- ``sa-queuepool``   a bare SQLAlchemy QueuePool of raw connections: checkout,
                     ``SELECT 1`` on a raw cursor, checkin, no Django at all;
- ``raw``            ``SELECT 1`` on one raw connection's cursor: the round trip alone.

Also measured without a query, to isolate the pool: ``sa-checkout`` (bare
QueuePool checkout + checkin) and ``sapool-checkout`` (our ``ensure_connection()``
+ ``close()`` through Django, no query).

For each contender the table gives the best round (least disturbed by other
processes; the usual figure for micro-benchmarks) and the median round, in
microseconds per cycle, and the difference to ``persistent``; and the same for
this process's CPU time alone (``time.process_time``), which leaves out the
server's share of a round trip and so shows the client-side overhead even on a
busy machine. Usage:

    .venv/bin/python benchmarks/checkout_cycle.py [--database-url URL] [--cycles N] [--rounds N]

URL is postgresql://user@host:port/db (default: this machine's PostgreSQL),
mysql://root@127.0.0.1:3306/mysql, or sqlite (a file in a temp directory).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import django
from django.conf import settings

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def database(vendor_module: str, url: str, tmp: str, **extra: Any) -> dict[str, Any]:
    """Return a DATABASES entry for ``<vendor_module>.<vendor>`` pointing at ``url``."""
    if url == "sqlite":
        return {"ENGINE": f"{vendor_module}.sqlite3", "NAME": f"{tmp}/bench.sqlite3", **extra}
    u = urlsplit(url)
    vendor = "mysql" if u.scheme.startswith("mysql") else "postgresql"
    return {
        "ENGINE": f"{vendor_module}.{vendor}",
        "NAME": u.path.lstrip("/") or ("mysql" if vendor == "mysql" else "postgres"),
        "USER": unquote(u.username or ""),
        "PASSWORD": unquote(u.password or ""),
        "HOST": u.hostname or "",
        "PORT": u.port or "",
        **extra,
    }


def contenders(url: str, tmp: str, with_default: bool) -> dict[str, dict[str, Any]]:
    found = {
        "persistent": database("django.db.backends", url, tmp, CONN_MAX_AGE=None),
        "persistent+hc": database(
            "django.db.backends", url, tmp, CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True
        ),
    }
    if with_default:
        found["default"] = database("django.db.backends", url, tmp)
    pg = url.startswith("postgres")
    if pg and importlib.util.find_spec("psycopg_pool") and django.VERSION >= (5, 1):
        found["django-pool"] = database(
            "django.db.backends", url, tmp, OPTIONS={"pool": {"min_size": 1, "max_size": 4}}
        )
    if importlib.util.find_spec("dj_db_conn_pool") and url != "sqlite":
        found["dbcp"] = database(
            "dj_db_conn_pool.backends",
            url,
            tmp,
            POOL_OPTIONS={"POOL_SIZE": 4, "MAX_OVERFLOW": 4},
        )
    found["sapool"] = database("django_sapool.backends", url, tmp)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help="or 'sqlite'")
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--with-default", action="store_true", help="also CONN_MAX_AGE=0")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="sapool-bench-")
    databases = contenders(args.database_url, tmp, args.with_default)
    settings.configure(
        DATABASES={"default": databases["sapool"], **databases},
        USE_TZ=True,
        TIME_ZONE="UTC",
    )
    django.setup()
    from django.db import connections
    from sqlalchemy.pool import QueuePool

    def django_cycle(alias: str) -> Callable[[int], None]:
        conn = connections[alias]

        def run(n: int) -> None:
            for _ in range(n):
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetchone()
                conn.close_if_unusable_or_obsolete()

        return run

    def django_checkout(alias: str) -> Callable[[int], None]:
        conn = connections[alias]

        def run(n: int) -> None:
            for _ in range(n):
                conn.ensure_connection()
                conn.close_if_unusable_or_obsolete()

        return run

    # Raw connections made by Django's own (unpooled) backend, so the bare pool
    # and the raw round trip use exactly the driver setup Django uses.
    plain = connections["persistent"]

    def raw_connect() -> Any:
        return plain.get_new_connection(plain.get_connection_params())

    bare = QueuePool(raw_connect, pool_size=4, max_overflow=4, reset_on_return=None)

    def sa_cycle(n: int) -> None:
        for _ in range(n):
            fairy = bare.connect()
            cursor = fairy.dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            cursor.close()
            fairy.close()

    def sa_checkout(n: int) -> None:
        for _ in range(n):
            bare.connect().close()

    raw = raw_connect()
    if hasattr(raw, "autocommit"):
        try:
            raw.autocommit = True
        except Exception:  # sqlite3 before 3.12 has no autocommit attribute setter
            pass

    def raw_cycle(n: int) -> None:
        for _ in range(n):
            cursor = raw.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            cursor.close()

    runs: dict[str, Callable[[int], None]] = {name: django_cycle(name) for name in databases}
    runs["sa-queuepool"] = sa_cycle
    runs["raw"] = raw_cycle
    runs["sapool-checkout"] = django_checkout("sapool")
    runs["persistent-checkout"] = django_checkout("persistent")
    runs["sa-checkout"] = sa_checkout
    for run in runs.values():  # warm up: connect, fill caches
        run(50)

    results: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.rounds):
        # Rotate the order each round, so no contender always runs first.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started, cpu_started = time.perf_counter(), time.process_time()
            runs[name](args.cycles)
            cpu[name].append((time.process_time() - cpu_started) / args.cycles * 1e6)
            results[name].append((time.perf_counter() - started) / args.cycles * 1e6)

    best = {name: min(times) for name, times in results.items()}
    median = {name: statistics.median(times) for name, times in results.items()}
    cpu_best = {name: min(times) for name, times in cpu.items()}
    print(
        f"# {args.database_url} (password hidden), {args.cycles} cycles x {args.rounds} rounds, "
        f"Python {sys.version.split()[0]}, Django {django.get_version()}, pid {os.getpid()}"
    )
    print(
        f"{'contender':<20}{'best us':>9}{'median us':>11}{'vs persistent':>15}"
        f"{'cpu us':>9}{'cpu vs persistent':>19}"
    )
    for name in runs:
        base = "persistent-checkout" if name.endswith("checkout") else "persistent"
        print(
            f"{name:<20}{best[name]:>9.1f}{median[name]:>11.1f}{best[name] - best[base]:>+15.1f}"
            f"{cpu_best[name]:>9.1f}{cpu_best[name] - cpu_best[base]:>+19.1f}"
        )
    overhead = best["sapool"] - best["persistent"]
    cpu_overhead = cpu_best["sapool"] - cpu_best["persistent"]
    print(
        f"sapool overhead per request vs persistent: {overhead:+.1f} us wall, "
        f"{cpu_overhead:+.1f} us CPU (best rounds)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "best_us": best,
                    "median_us": median,
                    "cpu_best_us": cpu_best,
                    "rounds": results,
                    "cpu_rounds": cpu,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
