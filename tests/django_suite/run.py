"""Run Django's own test modules against django_sapool.

    python tests/django_suite/run.py --driver psycopg2 [--parallel 2] [labels] [runtests args]

Fetches Django's tests (fetch.py), picks the PostgreSQL driver, then runs
Django's runtests.py in this process for the modules below (or the labels
given), with settings_postgresql (or --settings settings_mysql, settings_sqlite,
settings_postgis, settings_spatialite, settings_mysql_gis). The exit
status is runtests.py's: 0 when every test passed, was skipped, or failed as
listed in expected_failures.py.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SUITE_DIR.parents[1]
DEFAULT_MODULES = ("backends", "transactions", "transaction_hooks")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", choices=("psycopg", "psycopg2"), default="psycopg")
    parser.add_argument("--settings", default="settings_postgresql")
    # Serial by default: parallel runs need tblib to report a failure readably.
    parser.add_argument("--parallel", default="1", help="runtests.py --parallel (default 1)")
    parser.add_argument("-v", "--verbosity", default="1")
    parser.add_argument("-k", dest="patterns", action="append", default=[])
    parser.add_argument("labels", nargs="*", help=f"default: {' '.join(DEFAULT_MODULES)}")
    # Other flags (--failfast, --debug-sql, ...) go to runtests.py as they are.
    return parser.parse_known_args(argv)


def choose_driver(driver: str) -> None:
    """Make Django's postgresql backend import the requested driver, and check it did."""
    # Read by settings_postgresql too, so that spawned workers make the same choice.
    os.environ["SAPOOL_PG_DRIVER"] = driver
    if driver == "psycopg2":
        # psycopg_any.py tries "import psycopg" first; None in sys.modules makes
        # that import raise ImportError, so Django falls back to psycopg2.
        sys.modules["psycopg"] = None  # type: ignore[assignment]
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if is_psycopg3 != (driver == "psycopg"):
        raise SystemExit(f"run.py: asked for {driver}, but is_psycopg3={is_psycopg3}")
    print(f"run.py: driver {driver} (is_psycopg3={is_psycopg3})", file=sys.stderr, flush=True)


def drop_leftover_databases() -> None:
    """Drop this run's test databases if a crash kept Django from doing it."""
    from django.db import connections
    from suite_common import TEST_DB_PREFIX

    import django_sapool

    conn = connections["default"]
    if conn.vendor not in ("postgresql", "mysql"):
        return  # SQLite files live in a temporary directory removed at exit
    django_sapool.dispose()  # our own idle connections would block DROP DATABASE
    with conn._nodb_cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("SELECT datname FROM pg_database")
            # WITH (FORCE), PostgreSQL >= 13: a crashed worker may still hold it.
            drop = "DROP DATABASE {} WITH (FORCE)"
        else:
            cursor.execute("SHOW DATABASES")
            drop = "DROP DATABASE {}"
        # Filtered here, not with LIKE, where "_" in the prefix is a wildcard.
        names = [row[0] for row in cursor.fetchall() if row[0].startswith(TEST_DB_PREFIX)]
        for name in names:
            print(f"run.py: dropping leftover test database {name}", file=sys.stderr)
            cursor.execute(drop.format(conn.ops.quote_name(name)))


def run_runtests(tests_dir: Path, argv: list[str]) -> int:
    """Run runtests.py as ``python runtests.py ARGV`` would, in this process."""
    runtests = tests_dir / "runtests.py"
    # Its directory first on sys.path (it imports the test apps by name) and as
    # the cwd. PYTHONPATH carries our directories to any process it starts.
    sys.path.insert(0, str(tests_dir))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(SUITE_DIR), str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    os.chdir(tests_dir)
    sys.argv = [str(runtests), *argv]
    print("run.py: runtests.py", " ".join(argv), file=sys.stderr, flush=True)
    try:
        runpy.run_path(str(runtests), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path[:0] = [str(SUITE_DIR), str(REPO_ROOT)]
    from fetch import fetch

    tests_dir = fetch()
    # settings_postgresql and settings_postgis; the others need no driver choice.
    if args.settings.startswith(("settings_postg", "settings_pgbouncer")):
        choose_driver(args.driver)
    start = time.monotonic()
    code = 1
    try:
        code = run_runtests(
            tests_dir,
            [
                f"--settings={args.settings}",
                f"--parallel={args.parallel}",
                f"--verbosity={args.verbosity}",
                # Never wait for "type 'yes'" on a stale test database (CI has no stdin).
                "--noinput",
                *(arg for pattern in args.patterns for arg in ("-k", pattern)),
                *rest,
                *(args.labels or DEFAULT_MODULES),
            ],
        )
    finally:
        try:
            drop_leftover_databases()
        except Exception as exc:  # never hide the tests' own result
            print(f"run.py: could not check for leftover databases: {exc!r}", file=sys.stderr)
        print(f"run.py: exit status {code} in {time.monotonic() - start:.1f}s", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
