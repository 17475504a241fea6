"""Fetch the test suite of the installed Django into ``.django-tests/<version>/tests``.

Django's wheels don't ship its tests, its sdist does. The machine reaches PyPI
only through pip, so pip downloads the sdist and we extract ``tests/`` alone.
Idempotent: nothing happens when the directory is already there. Stdlib only.

    python tests/django_suite/fetch.py          # prints the tests directory
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".django-tests"


def django_version() -> str:
    import django

    return django.__version__


def tests_dir(version: str | None = None) -> Path:
    """Return where Django's ``tests/`` of this version lives (runtests.py inside)."""
    return CACHE_DIR / (version or django_version()) / "tests"


def _download_sdist(version: str, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--quiet",
        f"django=={version}",
        "-d",
        str(dest),
    ]
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    found = sorted(dest.glob("[Dd]jango-*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download left no Django sdist in {dest}")
    return found[0]


def _extract_tests(sdist: Path, target: Path) -> None:
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.split("/")[1:2] == ["tests"]]
        if not members:
            raise RuntimeError(f"{sdist.name} has no tests/ directory")
        for member in members:
            # Strip the top-level "Django-X.Y.Z/" so that tests/ lands in target.
            member.name = member.name.split("/", 1)[1]
        # The "data" filter refuses absolute paths, links out of target, devices.
        tar.extractall(target, members=members, filter="data")


def fetch(version: str | None = None) -> Path:
    """Make sure Django's tests of ``version`` (default: installed) are present."""
    version = version or django_version()
    final = tests_dir(version)
    if (final / "runtests.py").is_file():
        return final
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # Work in a temporary directory beside the target and rename at the end, so
    # an interrupted run never leaves a half-extracted tree that looks complete,
    # and two concurrent runs don't extract over each other.
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=f".{version}-") as tmp:
        work = Path(tmp)
        sdist = _download_sdist(version, work / "sdist")
        _extract_tests(sdist, work / "tree")
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work / "tree" / "tests", final)
        except OSError:
            if not (final / "runtests.py").is_file():  # not a concurrent winner
                raise
        shutil.rmtree(work / "sdist", ignore_errors=True)
    return final


def main() -> int:
    print(fetch())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
