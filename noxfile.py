"""Compatibility matrix, lint and packaging checks for django_sapool.

    nox -s matrix     # the 5 non-main Python x Django x SQLAlchemy combos, smoke subset
                      # (Django 6: and Django's own test modules)
    nox -s lint       # ruff check, ruff format --check, mypy (with django-stubs)
    nox -s package    # sdist + wheel, wheel contents, install into a fresh venv

The main combination (Python 3.11, Django 5.2, SQLAlchemy 2.1) is the project's own
.venv, where ./scripts/test runs the full suite before these three sessions.
./scripts/matrix runs `matrix` with the servers provisioned and prints a results
table. Arguments after `--` replace the smoke subset's pytest arguments:
`nox -s matrix -- tests/unit -x`.

Virtualenvs live in .nox/ and are reused: a session runs pip only when setup.cfg,
pyproject.toml or its pins changed (SAPOOL_NOX_REINSTALL=1 forces it).
Interpreters come from PATH or pyenv's versions directory; nox never downloads
one (no network to python.org or GitHub here).

`python noxfile.py report DIR ...` prints the table of a run whose sessions wrote
their records into DIR (SAPOOL_NOX_RESULTS=DIR); scripts/matrix and scripts/test
use it.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import nox

ROOT = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
# Where each session writes a JSON record (versions, counts, times) for
# `python noxfile.py report`; unset (plain `nox`): no records.
RESULTS_DIR = os.environ.get("SAPOOL_NOX_RESULTS")

nox.options.sessions = ["matrix", "lint", "package"]
nox.options.reuse_venv = "yes"
# "auto" would try to download a standalone CPython for a missing version: there
# is no network for that here, so report "not found" at once instead.
nox.options.download_python = "never"
# A missing interpreter skips its combos locally (with the warning below) and fails CI.
nox.options.error_on_missing_interpreters = IN_CI

EXTRAS = ".[postgresql,psycopg2,mysql,test]"

# The smoke subset each non-main combo runs: every unit test (selected by their
# package's name, "unit") and the integration scenarios for checkout/return,
# threads at the pool's limit, statement counts, transactions and the pre-ping's
# replacement of killed connections, on PostgreSQL (psycopg 3 and psycopg2),
# MySQL (mysqlclient and PyMySQL) and SQLite. About 520 tests, most of them unit
# tests; about 50 s here.
SMOKE_PATHS = [
    "tests/unit",
    "tests/integration/test_postgresql.py",
    "tests/integration/test_mysql.py",
    "tests/integration/test_sqlite.py",
]
SMOKE_K = "unit or sequential or threads or statement or transaction or killed"
SMOKE_ARGS = [*SMOKE_PATHS, "-k", SMOKE_K]


# The newest Django's combo also runs Django's own test modules on our backends,
# as the full suite does on 5.2: PostgreSQL (psycopg 3), MySQL and SQLite, each
# with LEND "request" and "transaction" (not psycopg2, --parallel or GIS, which
# the full suite covers). About 65 s here. Each Django release changes its
# internals and its tests: the smoke subset alone missed a reference cycle that
# Django 6.1 tests for, and a write that escaped a broken atomic() block on 4.2
# (both found and fixed on 2026-12-06). 4.2 passes them now and gets no more
# releases (its support ended in April 2026), so running them there again at
# every CI run would find nothing new: `nox -s "matrix(py3.11-django4.2-
# sqlalchemy2.0)" -- tests/integration/test_django_suite.py` runs them.
WITH_DJANGO_SUITE = [
    *SMOKE_PATHS,
    "tests/integration/test_django_suite.py",
    "-k",
    f"(not django_suite and ({SMOKE_K})) or "
    "(django_suite and not psycopg2 and not parallel and not gis and not spatialite)",
]


def _version_key(path: str) -> tuple[int, ...]:
    """Sort key for pyenv directories like .../versions/3.13.0/...: by version."""
    match = re.search(r"/versions/(\d+)\.(\d+)\.(\d+)/", path)
    return tuple(int(x) for x in match.groups()) if match else (0,)


def find_python(version: str) -> str | None:
    """The real executable of CPython `version` ("3.13"), or None.

    Tries $SAPOOL_PYTHON3_13 (for "3.13"), pythonX.Y on PATH, then pyenv's installed
    versions, newest patch release first. A pyenv shim of a version that is not
    active is on PATH but fails when run, so each candidate is run and its version
    checked; its sys.executable is the binary behind any shim.
    """
    candidates = [os.environ.get("SAPOOL_PYTHON" + version.replace(".", "_"))]
    candidates.append(shutil.which(f"python{version}"))
    roots = [os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv")]
    for root in dict.fromkeys(r for r in roots if r):
        found = glob.glob(f"{root}/versions/{version}.*/bin/python{version}")
        newest_first: list[str] = sorted(found, key=_version_key, reverse=True)
        candidates.extend(newest_first)
    probe = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"
    for candidate in candidates:
        if not candidate:
            continue
        try:
            proc = subprocess.run(
                [candidate, "-c", probe], capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            continue
        lines = proc.stdout.splitlines()
        if len(lines) == 2 and lines[0] == version and lines[1]:
            return lines[1]
    return None


def _python(version: str, needed_for: str) -> str:
    """Resolve `version` once, when nox loads this file; warn loudly if it is missing."""
    found = find_python(version)
    if found:
        return found
    consequence = "they FAIL (CI=true)" if IN_CI else "they are SKIPPED"
    print(
        f"noxfile: WARNING: Python {version} not found (tried $SAPOOL_PYTHON"
        f"{version.replace('.', '_')}, python{version} on PATH, $PYENV_ROOT/versions/"
        f"{version}.*/bin/python{version}). {needed_for} need it: {consequence}. "
        f"Install it (`pyenv install {version}`, or a distribution's python{version}) "
        f"or point $SAPOOL_PYTHON{version.replace('.', '_')} at one.",
        file=sys.stderr,
    )
    # Left unresolved, nox reports the interpreter as missing for these sessions:
    # a skip, or under CI an error (error_on_missing_interpreters).
    return version


PY311 = _python("3.11", "The Django 4.2 and 5.2 combos, lint and package")
PY313 = _python("3.13", "The Django 6 combos")

DJANGO_42 = "django>=4.2,<5"
DJANGO_52 = "django>=5.2,<6"
DJANGO_6 = "django>=6,<7"
SQLALCHEMY_20 = "sqlalchemy>=2.0,<2.1"
SQLALCHEMY_21 = "sqlalchemy>=2.1,<2.2"
#: The combos that run WITH_DJANGO_SUITE.
DJANGO_SUITE_COMBOS = {(DJANGO_6, SQLALCHEMY_21)}

# Python x Django x SQLAlchemy, less the main combination (3.11, Django 5.2,
# SQLAlchemy 2.1), which is .venv with the full suite. Django 6 needs Python >= 3.12.
COMBOS = [
    nox.param(PY311, DJANGO_42, SQLALCHEMY_20, id="py3.11-django4.2-sqlalchemy2.0"),
    nox.param(PY311, DJANGO_42, SQLALCHEMY_21, id="py3.11-django4.2-sqlalchemy2.1"),
    nox.param(PY311, DJANGO_52, SQLALCHEMY_20, id="py3.11-django5.2-sqlalchemy2.0"),
    nox.param(PY313, DJANGO_6, SQLALCHEMY_20, id="py3.13-django6-sqlalchemy2.0"),
    nox.param(PY313, DJANGO_6, SQLALCHEMY_21, id="py3.13-django6-sqlalchemy2.1"),
]


def install_once(session: nox.Session, *requirements: str) -> float:
    """`pip install` into the session's venv unless it already has exactly this.

    nox reuses the venv but would rerun pip (an editable rebuild and a resolve,
    about 10 s) on every run; a stamp of everything that decides the install
    lets a second run start at once. Returns the seconds spent installing.
    """
    stamp = Path(session.virtualenv.location) / ".sapool-install"
    digest = hashlib.sha256()
    for name in ("setup.cfg", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    # The checkout's path too: an editable install points at one checkout.
    digest.update("\n".join([str(ROOT), *requirements]).encode())
    want = digest.hexdigest()
    if not os.environ.get("SAPOOL_NOX_REINSTALL") and stamp.is_file():
        if stamp.read_text().strip() == want:
            session.log("requirements up to date (stamp); SAPOOL_NOX_REINSTALL=1 forces pip")
            return 0.0
    start = time.monotonic()
    stamp.unlink(missing_ok=True)
    session.install("--disable-pip-version-check", "-q", *requirements)
    stamp.write_text(want + "\n")
    return time.monotonic() - start


VERSIONS_PROBE = """
import importlib.metadata as m, json, platform
out = {"python": platform.python_version()}
for name in ["django", "sqlalchemy", "psycopg", "psycopg2-binary", "mysqlclient", "pymysql"]:
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def installed_versions(python: str | os.PathLike[str]) -> dict[str, str | None]:
    out = subprocess.run(
        [os.fspath(python), "-c", VERSIONS_PROBE], capture_output=True, text=True, check=True
    ).stdout
    versions: dict[str, str | None] = json.loads(out.strip().splitlines()[-1])
    return versions


def junit_counts(path: Path) -> dict[str, int]:
    """passed/failed/skipped of a pytest --junitxml file; zeros if there is none."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if not path.is_file():
        return counts
    root = ElementTree.parse(path).getroot()
    for suite in [root] if root.tag == "testsuite" else list(root.iter("testsuite")):
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failed
        counts["skipped"] += skipped
        counts["passed"] += tests - failed - skipped
    return counts


def _record_path(results: str | Path, name: str) -> Path:
    return Path(results) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".record.json")


@contextmanager
def recorded(session: nox.Session) -> Iterator[dict[str, Any]]:
    """Yield a dict the session fills in; written to RESULTS_DIR even on failure."""
    record: dict[str, Any] = {"session": session.name}
    started = time.monotonic()
    try:
        yield record
    finally:
        record["seconds"] = round(time.monotonic() - started)
        if RESULTS_DIR:
            _record_path(RESULTS_DIR, session.name).write_text(json.dumps(record) + "\n")


@nox.session
@nox.parametrize(("python", "django", "sqlalchemy"), COMBOS)
def matrix(session: nox.Session, django: str, sqlalchemy: str) -> None:
    """One non-main combination: install, then the smoke subset (or the posargs).

    The newest Django runs Django's own test modules too.
    """
    with recorded(session) as record:
        record["pins"] = [django, sqlalchemy]
        # mysqlclient compiles from source for a new interpreter (pip caches the
        # wheel afterwards): scripts/bootstrap, run first, installed what that
        # needs (libmariadb-dev, pkg-config, a compiler) as root for .venv.
        record["install_seconds"] = round(install_once(session, "-e", EXTRAS, django, sqlalchemy))
        versions = installed_versions(Path(session.bin) / "python")
        record["versions"] = versions
        session.log("installed: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        with_suite = (django, sqlalchemy) in DJANGO_SUITE_COMBOS
        combo_args = WITH_DJANGO_SUITE if with_suite else SMOKE_ARGS
        junit = Path(session.virtualenv.location) / "junit.xml"
        junit.unlink(missing_ok=True)
        started = time.monotonic()
        try:
            session.run(
                "python",
                "-m",
                "pytest",
                # Leave .venv's last-failed cache (the full suite's) alone.
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
                *(session.posargs or combo_args),
            )
        finally:
            record["test_seconds"] = round(time.monotonic() - started)
            record["tests"] = junit_counts(junit)


class _Checks:
    """Named checks of one session: each runs and reports, whatever failed before."""

    def __init__(self, session: nox.Session, record: dict[str, Any]) -> None:
        self.session = session
        self.record = record
        record["checks"] = {}

    def run(self, name: str, *args: str | os.PathLike[str], **kwargs: Any) -> bool:
        try:
            self.session.run(*args, **kwargs)
        except nox.command.CommandFailed:
            self.result(name, False)
            return False
        self.result(name, True)
        return True

    def result(self, name: str, ok: bool) -> None:
        self.record["checks"][name] = ok

    def finish(self) -> None:
        failed = [name for name, ok in self.record["checks"].items() if not ok]
        if failed:
            self.session.error("failed: " + ", ".join(failed))


@nox.session(python=PY311)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy with django-stubs (Django 5.2, Python 3.11)."""
    with recorded(session) as record:
        # The drivers are installed so mypy reads the modules django_sapool really
        # imports; Django is pinned to the series the pinned django-stubs describe;
        # nox so that this file type-checks too.
        install_once(session, "-e", ".[postgresql,psycopg2,mysql,lint]", DJANGO_52, "nox")
        checks = _Checks(session, record)
        checks.run("ruff check", "ruff", "check", ".")
        checks.run("ruff format", "ruff", "format", "--check", "django_sapool", "noxfile.py")
        checks.run("mypy", "mypy", "django_sapool", "noxfile.py")
        checks.finish()


def _package_version() -> str:
    text = (ROOT / "django_sapool" / "__init__.py").read_text()
    match = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.M)
    if not match:
        raise RuntimeError("no __version__ = '...' in django_sapool/__init__.py")
    return match.group(1)


def _wheel_must_hold() -> set[str]:
    """Every module of the package (so every backends subpackage) and py.typed."""
    files = {"django_sapool/py.typed"}
    for path in (ROOT / "django_sapool").rglob("*.py"):
        files.add(path.relative_to(ROOT).as_posix())
    return files


# Run in the fresh venv from a directory outside the checkout, so that only the
# installed wheel can be imported.
IMPORT_PROBE = """
import importlib.resources
import django_sapool, django_sapool.backends.postgresql.base, django_sapool.backends.sqlite3.base
assert "site-packages" in django_sapool.__file__, django_sapool.__file__
assert importlib.resources.files("django_sapool").joinpath("py.typed").is_file()
print("imported django_sapool", django_sapool.__version__, "from", django_sapool.__file__)
"""


@nox.session(python=PY311)
def package(session: nox.Session) -> None:
    """Build sdist + wheel, check the wheel's files, install it into a fresh venv."""
    with recorded(session) as record, tempfile.TemporaryDirectory(prefix="sapool-pkg-") as tmp:
        install_once(session, "build>=1.2")
        checks = _Checks(session, record)
        dist = Path(tmp) / "dist"
        # An isolated build (build's default) proves build-system.requires suffice;
        # --outdir keeps dist/ out of the checkout.
        if not checks.run("build", "python", "-m", "build", "--outdir", dist, ROOT):
            checks.finish()
        wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
        version = _package_version()
        names_ok = (
            len(wheels) == 1
            and len(sdists) == 1
            and wheels[0].name.startswith(f"django_sapool-{version}-")
            and sdists[0].name == f"django_sapool-{version}.tar.gz"
        )
        checks.result(f"one sdist + one wheel of version {version}", names_ok)
        if not wheels:
            checks.finish()
        wheel = wheels[0]
        session.log("built: " + ", ".join(p.name for p in sorted(dist.iterdir())))

        with zipfile.ZipFile(wheel) as zf:
            names = sorted(zf.namelist())
        session.log(f"{wheel.name} holds {len(names)} files:")
        for name in names:
            print(f"    {name}")
        missing = sorted(_wheel_must_hold() - set(names))
        if missing:
            session.warn("the wheel lacks: " + ", ".join(missing))
        else:
            session.log("the wheel holds py.typed and every module of django_sapool/")
        checks.result("wheel contents", not missing)

        # A fresh venv, not the session's: the wheel and its dependencies only
        # (Django, SQLAlchemy, and psycopg for the postgresql backend).
        venv = Path(tmp) / "venv"
        python = venv / "bin" / "python"
        try:
            session.run(PY311, "-m", "venv", venv, external=True)
            session.run(
                python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                f"{wheel}[postgresql]", external=True,
            )  # fmt: skip
            with session.chdir(tmp):
                session.run(python, "-c", IMPORT_PROBE, external=True)
            checks.result("fresh-venv install + import", True)
        except nox.command.CommandFailed:
            checks.result("fresh-venv install + import", False)
        checks.finish()


# --------------------------------------------------------------------------
# `python noxfile.py report DIR`: the table of a run, and its closing line.


def _fmt_tests(counts: dict[str, int]) -> str:
    text = f"{counts['passed']} passed, {counts['failed']} failed"
    return text + (f", {counts['skipped']} skipped" if counts["skipped"] else "")


def _fmt_versions(v: dict[str, str | None]) -> str:
    short = {"psycopg2-binary": "psycopg2", "sqlalchemy": "SQLAlchemy", "django": "Django"}
    parts = [f"Python {v.get('python')}"]
    for key in ("django", "sqlalchemy", "psycopg", "psycopg2-binary", "mysqlclient", "pymysql"):
        parts.append(f"{short.get(key, key)} {v.get(key) or '-'}")
    return ", ".join(parts)


def report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python noxfile.py report")
    parser.add_argument("results", help="the SAPOOL_NOX_RESULTS directory of the run")
    parser.add_argument("--nox-report", help="the nox --report file of the run, if nox ran")
    parser.add_argument("--nox-rc", type=int, default=0, help="nox's exit status")
    parser.add_argument(
        "--count",
        choices=["sessions", "tests"],
        default="sessions",
        help="closing line counts sessions (scripts/matrix) or tests + checks (scripts/test)",
    )
    parser.add_argument("--label", default="matrix", help="the word before the closing line")
    parser.add_argument(
        "--suite",
        nargs=4,
        action="append",
        default=[],
        metavar=("LABEL", "JUNIT", "RC", "SECONDS"),
        help="one pytest process of the full suite (.venv): its row, junit XML, exit status, time",
    )
    parser.add_argument("--suite-python", help=".venv's python, for the versions column")
    parser.add_argument("--setup-seconds", type=int, help="bootstrap + servers, for the table")
    parser.add_argument("--total-seconds", type=int, help="the whole run, for the table")
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, str, str]] = []  # name, result, time, details
    tests = {"passed": 0, "failed": 0, "skipped": 0}  # tests and checks, for --count tests
    sessions = {"passed": 0, "failed": 0, "skipped": 0}
    failed_any = False

    if args.setup_seconds is not None:
        rows.append(("setup", "done", f"{args.setup_seconds}s", "bootstrap .venv, servers, GIS"))
    versions = ""  # .venv's, on the suite's first row
    if args.suite and args.suite_python:
        try:
            versions = "; " + _fmt_versions(installed_versions(args.suite_python))
        except (OSError, subprocess.SubprocessError, ValueError):
            versions = f"; (could not read the versions of {args.suite_python})"
    for label, junit, rc, seconds in args.suite:
        counts = junit_counts(Path(junit))
        ok = rc == "0"
        failed_any |= not ok
        if not ok and counts["failed"] == 0:
            counts["failed"] = 1  # pytest itself failed (collection error, exit 5, ...)
        summary = _fmt_tests(counts) + versions
        versions = ""
        status = "passed" if ok else "FAILED"
        rows.append((label, status, f"{seconds}s", summary))
        for key in tests:
            tests[key] += counts[key]

    entries: list[dict[str, Any]] = []
    if args.nox_report:
        nox_path = Path(args.nox_report)
        if nox_path.is_file():
            entries = json.loads(nox_path.read_text()).get("sessions", [])
        else:  # nox died before running anything (a broken noxfile, say)
            rows.append(("nox", "FAILED", "-", f"no {nox_path} (nox exit {args.nox_rc})"))
            failed_any = True
            sessions["failed"] += 1
            tests["failed"] += 1

    for entry in entries:
        name = (entry.get("signatures") or [entry["name"]])[0]
        result = str(entry.get("result"))
        record_file = _record_path(args.results, name)
        record: dict[str, Any] = (
            json.loads(record_file.read_text()) if record_file.is_file() else {}
        )
        status = {"success": "passed", "skipped": "skipped"}.get(result, "FAILED")
        sessions[{"passed": "passed", "skipped": "skipped"}.get(status, "failed")] += 1
        failed_any |= status == "FAILED"
        details: list[str] = []
        if "versions" in record:
            details.append(_fmt_versions(record["versions"]))
        if "tests" in record:
            counts = record["tests"]
            details.insert(0, _fmt_tests(counts))
            for key in tests:
                tests[key] += counts[key]
            if status == "FAILED" and counts["failed"] == 0:
                tests["failed"] += 1  # failed before or outside pytest (install, ...)
        elif "checks" in record:
            checks: dict[str, bool] = record["checks"]
            details.append(", ".join(f"{k} {'ok' if ok else 'FAILED'}" for k, ok in checks.items()))
            tests["passed"] += sum(checks.values())
            tests["failed"] += sum(not ok for ok in checks.values())
            if status == "FAILED" and all(checks.values()):
                tests["failed"] += 1
        else:
            reason = str(entry.get("reason") or "see the nox output above")
            if "interpreter" in reason and "not found" in reason:
                reason += " (see the noxfile's warning at the top of the nox output)"
            details.append(reason)
            tests["skipped" if status == "skipped" else "failed"] += 1
        if record.get("install_seconds"):
            details.append(f"pip {record['install_seconds']}s")
        rows.append((name, status, f"{round(entry.get('duration') or 0)}s", "; ".join(details)))
    if args.nox_rc != 0 and entries and not failed_any:
        failed_any = True  # nox failed although each session passed: count it
        tests["failed"] += 1
        sessions["failed"] += 1

    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'=' * 30} {args.label} summary {'=' * 30}")
    for row_name, row_status, secs, text in rows:
        print(f"{row_name:<{width}}  {row_status:<7} {secs:>5}  {text}")
    if args.total_seconds is not None:
        print(f"{'total':<{width}}  {'':<7} {args.total_seconds:>4}s")
    closing = tests if args.count == "tests" else sessions
    print(f"{args.label}: {_fmt_tests(closing)}")
    return 1 if failed_any else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["report"]:
        sys.exit(report(sys.argv[2:]))
    sys.exit("usage: python noxfile.py report DIR [...]  (the sessions run with `nox`)")
