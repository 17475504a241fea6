"""Bad settings refused where they are, and only there, in fresh ``manage.py`` processes.

``manage.py sapool --check`` with one invalid alias: the others are still
connected to (making a wrapper refuses every alias's bad settings, which had
every live check fail with the bad alias's error). RESET_ON_RETURN 'reset' with
mysqlclient that cannot reset a session: refused like any bad setting, not
accepted and then every connection discarded on its return.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, MySQLServer, PgServer


def _manage(
    tmp_path: Path, databases: dict[str, Any], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m django *args`` with these DATABASES (django_sapool installed)."""
    return _python(tmp_path, databases, ["-m", "django", *args], env)


def _python(
    tmp_path: Path, databases: dict[str, Any], argv: list[str], env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    """Run ``python *argv`` with a settings module of these DATABASES (django_sapool installed)."""
    (tmp_path / "refusal_settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "not-secret"
            INSTALLED_APPS = ["django_sapool"]
            USE_TZ = True
            DATABASES = {databases!r}
            """
        )
    )
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "refusal_settings",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.postgresql
def test_sapool_check_connects_to_the_good_aliases_despite_a_bad_one(
    tmp_path: Path, pg: PgServer, pg_database: str
) -> None:
    default = pg.settings(pg_database, "refusals")
    dead = {**default, "PORT": 1, "POOL_OPTIONS": {"CONNECT_TIMEOUT": 2}}
    bad = {**default, "CONN_MAX_AGE": 60, "POOL_OPTIONS": {"POOL_SIZ": 3}}
    proc = _manage(tmp_path, {"default": default, "dead": dead, "bad": bad}, "sapool", "--check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        "CommandError: django_sapool: invalid settings for alias 'bad'; "
        "live check failed for alias 'dead'"
    )
    lines = proc.stdout.splitlines()
    live = lines[lines.index("Live check") + 1 :]
    assert live[0].split() == ["default", "dead"]
    assert live[1].split() == ["result", "ok", "FAILED"]
    assert live[3].split()[:2] == ["ping", "ms"] and live[3].split()[3] == "-"
    (dead_error,) = [line for line in live if line.startswith("error: dead: ")]
    assert dead_error.startswith("error: dead: OperationalError: ")
    assert "port 1 failed: Connection refused" in dead_error
    assert "not checked: bad (invalid settings, see above)" in live
    # The bad alias's errors once each, under its own name only.
    named = [line for line in lines if "settings.DATABASES[" in line]
    assert [line.split(":")[0] for line in named] == ["error", "error"]
    assert named[0].startswith("error: bad: settings.DATABASES['bad']['CONN_MAX_AGE'] must be 0")
    assert named[1].startswith(
        "error: bad: settings.DATABASES['bad']['POOL_OPTIONS'] has an unknown key 'POOL_SIZ'."
    )


#: What the refusal says, after the setting's path.
NO_MARIADB_RESET = (
    "['POOL_OPTIONS']['RESET_ON_RETURN'] is 'reset' (the server's full session reset), "
    "which the mysqlclient driver cannot do: DJANGO_SAPOOL_NATIVE"
)

FIRST_ACCESS = textwrap.dedent(
    """
    import django
    django.setup()
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    try:
        connections["default"]
    except ImproperlyConfigured as exc:
        print("RAISED " + str(exc))
    else:
        print("MADE")
    """
)


@pytest.mark.mysql
def test_reset_is_refused_with_mysqlclient_without_libmariadb(
    tmp_path: Path, mysql: MySQLServer, mysql_database: str
) -> None:
    """DJANGO_SAPOOL_NATIVE=no-mariadb: no mysql_reset_connection, so no 'reset'.

    Before, it was accepted, and every return raised NotImplementedError and
    discarded the connection: a new server session per request.
    """
    databases = {
        "default": mysql.settings(mysql_database, POOL_OPTIONS={"RESET_ON_RETURN": "reset"})
    }
    env = {"DJANGO_SAPOOL_NATIVE": "no-mariadb"}
    check = _manage(tmp_path, databases, "check", env=env)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "sapool.E003" in check.stderr
    assert f"settings.DATABASES['default']{NO_MARIADB_RESET}" in " ".join(check.stderr.split())
    first = _python(tmp_path, databases, ["-c", FIRST_ACCESS], env)
    assert first.stdout.startswith(f"RAISED settings.DATABASES['default']{NO_MARIADB_RESET}"), (
        first.stdout + first.stderr
    )
