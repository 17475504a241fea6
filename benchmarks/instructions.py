"""CPU instructions per request cycle, counted by valgrind: repeatable on a busy machine.

Wall-clock micro-benchmarks (``checkout_cycle.py``) swing by tens of percent when
other processes share the CPU. Callgrind counts the instructions this process
executes, which do not depend on the machine's load, so two versions of the hot
path can be compared exactly. Only the measured loop is counted (collection is
switched on inside ``functools.reduce``, which runs it), so Django's start-up is
left out; the server's share of a round trip is not an instruction of ours and
never counted.

    .venv/bin/python benchmarks/instructions.py [--cycles 2000] [--src DIR]
        [--vendor postgresql|mysql] [MODE ...]

Modes (default: pq sq pc sc):

    pq  persistent connection (CONN_MAX_AGE=None): cursor, SELECT 1, request end
    sq  django_sapool: the same cycle
    pc  persistent: ensure_connection() + close_if_unusable_or_obsolete(), no query
    sc  django_sapool: the same, i.e. one checkout and one return through Django
    sm  django_sapool's pool alone: ManagedPool.checkout() + checkin()
    sr  SQLAlchemy's QueuePool at the record level (what sm builds on)
    sa  SQLAlchemy's QueuePool.connect() + close() (the per-checkout proxy)
    tq  django_sapool with LEND="transaction": the cycle of pq, in which the
        statement checks out and returns (the request's end then has nothing to do)
    pw  persistent: a whole request through Django's WSGI handler (no middleware,
        DEBUG off, as the HTTP benchmark's site): request_started, a view running
        pq's query, a JSON response, request_finished. What an HTTP server adds
        (gunicorn's parsing, the kernel) is not counted.
    sw  django_sapool: the same request
    tw  django_sapool with LEND="transaction": the same request
    sx  django_sapool, two wrappers taking turns on POOL_SIZE=1: each checkout
        takes the connection the other remembers (a steal), then returns it;
        per cycle: two checkouts and returns (compare with 2 x sc)

``--src DIR`` imports django_sapool from DIR instead (e.g. a ``git worktree`` of
an older commit) to compare versions. ``--vendor mysql`` runs the same cycles on
MySQL/MariaDB (mysqlclient). Needs valgrind (Debian package) and the server of
SAPOOL_PG_URL or SAPOOL_MYSQL_URL (default: this machine's).
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import os
import re
import subprocess
import sys
from typing import Any

from local_server import SERVERS, connection_settings, import_version_under_test

MODES = ("pq", "sq", "pc", "sc", "sm", "sr", "sa", "tq", "sx", "pw", "sw", "tw")

#: The request of the "w" modes: a GET of /one, as a WSGI server passes it.
WSGI_ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/one",
    "QUERY_STRING": "",
    "SERVER_NAME": "bench",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "wsgi.url_scheme": "http",
}


def child(mode: str, cycles: int, vendor: str) -> None:
    """Run inside valgrind: set Django up, warm up, then run `cycles` in reduce()."""
    import_version_under_test()
    import django
    from django.conf import settings

    db = connection_settings(vendor)
    settings.configure(
        DATABASES={
            "default": {"ENGINE": f"django_sapool.backends.{vendor}", **db},
            "persistent": {
                "ENGINE": f"django.db.backends.{vendor}",
                "CONN_MAX_AGE": None,
                **db,
            },
            "lent": {
                "ENGINE": f"django_sapool.backends.{vendor}",
                "POOL_OPTIONS": {"LEND": "transaction"},
                **db,
            },
            "steal": {
                "ENGINE": f"django_sapool.backends.{vendor}",
                "POOL_OPTIONS": {"POOL_SIZE": 1, "MAX_OVERFLOW": 0},
                **db,
            },
        },
        USE_TZ=True,
        # The "w" modes: the HTTP benchmark site's settings that matter here.
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
        DEBUG=False,
    )
    django.setup()
    from django.db import connections

    alias = {"s": "default", "p": "persistent", "t": "lent"}[mode[0]]
    conn = connections["steal" if mode == "sx" else alias]
    conn.ensure_connection()
    conn.close()
    if mode in ("sr", "sa"):  # SQLAlchemy alone: its queue holds the connection
        conn.sapool_pool().remembered.give_back_idle(0.0, 0.0)

    def query() -> None:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        conn.close_if_unusable_or_obsolete()

    def checkout() -> None:
        conn.ensure_connection()
        conn.close_if_unusable_or_obsolete()

    # "sx": two wrappers of one alias take turns on a pool of one connection, so
    # every checkout takes the connection the other one remembers (a steal).
    other = connections.create_connection("steal") if mode == "sx" else None

    def steal() -> None:
        for wrapper in (conn, other):
            wrapper.ensure_connection()
            wrapper.close_if_unusable_or_obsolete()

    def pool() -> None:
        managed = conn.sapool_pool()
        # As the wrapper checks out: for itself (its connection is remembered).
        managed.checkin(managed.checkout(conn._sapool_owner))

    def records() -> None:
        queue_pool = conn.sapool_pool()._sa
        record = queue_pool._do_get()
        record.get_connection()
        record.checkin(_fairy_was_created=False)

    def fairy() -> None:
        conn.sapool_pool()._sa.connect().close()

    def request() -> None:
        environ = {**WSGI_ENVIRON, "wsgi.input": io.BytesIO()}
        response = application(environ, lambda status, headers: None)
        b"".join(response)
        response.close()  # request_finished: close_old_connections()

    if mode[1] == "w":  # Django's handler and the view, for the "w" modes only
        from django.core.handlers.wsgi import WSGIHandler

        serve_one_query_view(conn)
        application = WSGIHandler()

    steps = {"q": query, "c": checkout, "m": pool, "r": records, "a": fairy, "x": steal}
    run: Any = {**steps, "w": request}[mode[1]]
    for _ in range(200):
        run()
    # What start-up left is never garbage: out of the collector's sight, so that
    # whether a full collection of it falls inside the counted cycles (millions
    # of instructions, at a point that moves with any allocation) does not decide
    # the count. Collections of what the cycles themselves allocate still count.
    gc.collect()
    gc.freeze()
    functools.reduce(lambda acc, _: run() or acc, range(cycles), 0)


def serve_one_query_view(conn: Any) -> None:
    """Make this module the URLconf: /one runs pq's query on ``conn`` and answers JSON."""
    from django.http import JsonResponse
    from django.urls import path

    def one(request: Any) -> JsonResponse:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            (value,) = cursor.fetchone()
        return JsonResponse({"value": value})

    globals()["urlpatterns"] = [path("one", one)]


def count(mode: str, cycles: int, src: str | None, vendor: str) -> int:
    # A fixed hash seed: with a random one, dict layouts (and so the counts) vary
    # by up to 2% from run to run (sq: 171,277 and 174,679 at the same commit).
    env = {**os.environ, "SAPOOL_SRC": src or "", "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            mode,
            "--cycles",
            str(cycles),
            "--vendor",
            vendor,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if not match:
        raise SystemExit(f"no instruction count from callgrind:\n{proc.stderr[-2000:]}")
    return int(match.group(1)) // cycles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modes", nargs="*", help=f"any of {', '.join(MODES)}")
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--src", help="import django_sapool from this directory")
    parser.add_argument(
        "--vendor", choices=sorted(SERVERS), default="postgresql", help="the server to use"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.cycles, args.vendor)
        return
    args.modes = args.modes or ["pq", "sq", "pc", "sc"]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    # Every mode runs in its own valgrind process, all at once (counts don't
    # depend on the load they put on each other).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(args.modes)) as executor:
        found = executor.map(lambda m: count(m, args.cycles, args.src, args.vendor), args.modes)
        counts = dict(zip(args.modes, found, strict=True))
    where = args.src or "here"
    print(
        f"# instructions per cycle, {args.cycles} cycles, {args.vendor}, django_sapool from {where}"
    )
    for mode, n in counts.items():
        print(f"{mode}  {n:>9,}")
    pairs = (("sq", "pq"), ("sc", "pc"), ("tq", "pq"), ("sw", "pw"), ("tw", "pw"))
    for ours, base in pairs:
        if ours in counts and base in counts:
            # base / ours: the requests per second ours serves for each of the
            # base's where the CPU of this process is all that limits them.
            print(
                f"{ours} - {base}  {counts[ours] - counts[base]:>+9,}  (django_sapool's cost; "
                f"{base} / {ours} = {counts[base] / counts[ours]:.3f})"
            )


if __name__ == "__main__":
    main()
