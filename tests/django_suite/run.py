"""Run Django's own test modules against django_sapool.

    python tests/django_suite/run.py --driver psycopg2 [--parallel 2] [runtests.py args]

Fetches Django's tests (fetch.py), picks the PostgreSQL driver, then runs
Django's runtests.py in this process for the modules below (or the labels
given), with settings_postgresql (or --settings settings_sqlite). The exit
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
    parser.add_argument("--parallel", default="1", help="runtests.py --parallel (default 1)")
    parser.add_argument("-v", "--verbosity", default="1")
    parser.add_argument("-k", dest="patterns", action="append", default=[])
    parser.add_argument("labels", nargs="*", help=f"default: {' '.join(DEFAULT_MODULES)}")
    # Other flags (--failfast, --keepdb, --debug-sql, ...) go to runtests.py as they are.
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


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path[:0] = [str(SUITE_DIR), str(REPO_ROOT)]
    from fetch import fetch

    tests_dir = fetch()
    if args.settings.endswith("postgresql"):
        choose_driver(args.driver)

    runtests = tests_dir / "runtests.py"
    # As "python runtests.py" would have it: its directory first on sys.path (it
    # imports the test apps by name) and as the cwd. PYTHONPATH carries our
    # directories to any process runtests.py starts itself.
    sys.path.insert(0, str(tests_dir))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(SUITE_DIR), str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    os.chdir(tests_dir)
    sys.argv = [
        str(runtests),
        f"--settings={args.settings}",
        f"--parallel={args.parallel}",
        f"--verbosity={args.verbosity}",
        *(arg for pattern in args.patterns for arg in ("-k", pattern)),
        *rest,
        *(args.labels or DEFAULT_MODULES),
    ]
    print("run.py:", " ".join(sys.argv), file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        runpy.run_path(str(runtests), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    elapsed = time.monotonic() - start
    print(f"run.py: exit status {code}, {elapsed:.1f}s", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
