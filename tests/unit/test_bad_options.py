"""Malformed POOL_OPTIONS, and a process that must not start half-configured.

The table complements ``INVALID`` in test_conf.py (which has one row per key and
is not repeated here): wrong types, negatives, strings, booleans and floats where
numbers or ints belong, NaN and infinity, None where it means nothing, unknown,
misspelt and lower-case keys, and POOL_OPTIONS that is not a dict. Each goes
through Django's own ConnectionHandler, where creating the alias's wrapper must
raise ImproperlyConfigured naming the exact setting, and through the system check
(sapool.E003), which must report the same message.

The second half runs child processes: with a good 'default' and a bad 'other',
the first database access on 'default' must already fail, naming 'other', and
``manage.py check`` must exit non-zero.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import ConnectionHandler

from django_sapool.checks import check_database_settings

ROOT = Path(__file__).resolve().parents[2]
PATH = "settings.DATABASES['default']['POOL_OPTIONS']"

INT_1 = "must be an int >= 1"
OVERFLOW = "must be an int >= 0 (or -1 for no limit)"
SECONDS = "must be a number of seconds >= 0"
RECYCLE = "must be a number of seconds > 0, or None/-1 to never recycle"
BOOL = "must be True or False"
RESET = (
    "must be 'rollback', 'commit', 'reset' (the server's full session reset), None, "
    "or an SQL statement"
)
ECHO = "must be True, False or 'debug'"
NAN, INF = math.nan, math.inf


def _got(value: Any) -> str:
    return f"got {value!r} ({type(value).__name__})."


def _one(key: str, value: Any, expected: str) -> Any:
    """One bad value: the message names the key's path, says `expected`, shows the value."""
    return pytest.param({key: value}, f"[{key!r}] {expected}", _got(value), id=f"{key}={value!r}")


def _unknown(key: Any, suggestion: str | None) -> Any:
    hint = f" Did you mean {suggestion!r}?" if suggestion else " Valid keys: POOL_SIZE, "
    valid = "RESET_ON_RETURN, USE_LIFO, ECHO"  # the list of valid keys ends the message
    return pytest.param({key: 1}, f" has an unknown key {key!r}.{hint}", valid, id=f"key {key!r}")


def _not_a_dict(value: Any) -> Any:
    return pytest.param(value, " must be a dict, ", _got(value), id=f"POOL_OPTIONS={value!r}")


#: (POOL_OPTIONS, how the message goes on after
#:  settings.DATABASES['default']['POOL_OPTIONS'], a text the message ends with or contains)
BAD = [
    # ints: None, negative, integral float, NaN, container, bool
    _one("POOL_SIZE", None, INT_1),
    _one("POOL_SIZE", -3, INT_1),
    _one("POOL_SIZE", 1.0, INT_1),
    _one("POOL_SIZE", NAN, INT_1),
    _one("POOL_SIZE", [5], INT_1),
    _one("MAX_OVERFLOW", True, OVERFLOW),
    _one("MAX_OVERFLOW", 2.0, OVERFLOW),
    _one("MAX_OVERFLOW", None, OVERFLOW),
    _one("MAX_OVERFLOW", INF, OVERFLOW),
    # seconds: bool, NaN, infinity, negative, strings, None
    _one("TIMEOUT", True, SECONDS),
    _one("TIMEOUT", NAN, SECONDS),
    _one("TIMEOUT", INF, SECONDS),
    _one("TIMEOUT", -0.5, SECONDS),
    _one("RECYCLE", NAN, RECYCLE),
    _one("RECYCLE", INF, RECYCLE),
    _one("RECYCLE", -5, RECYCLE),
    _one("RECYCLE", "never", RECYCLE),
    _one("PRE_PING_INTERVAL", NAN, SECONDS),
    _one("PRE_PING_INTERVAL", INF, SECONDS),
    _one("PRE_PING_INTERVAL", "0.5", SECONDS),
    _one("PRE_PING_INTERVAL", None, SECONDS),
    # booleans: None and ints are not booleans
    _one("PRE_PING", None, BOOL),
    _one("PRE_PING", 0, BOOL),
    _one("USE_LIFO", 1, BOOL),
    _one("USE_LIFO", None, BOOL),
    # RESET_ON_RETURN: misspelt modes and lone words are never sent as SQL
    _one("RESET_ON_RETURN", "rollbak", RESET),
    _one("RESET_ON_RETURN", "RESET_ALL", RESET),
    _one("RESET_ON_RETURN", "DISCARD", RESET),
    _one("RESET_ON_RETURN", b"rollback", RESET),
    _one("RESET_ON_RETURN", 0, RESET),
    # ECHO: exactly True, False or "debug"
    _one("ECHO", None, ECHO),
    _one("ECHO", "DEBUG", ECHO),
    _one("ECHO", 1, ECHO),
    # keys: lower/mixed case, misspelt, a Django setting in the wrong place, not a str
    _unknown("max_overflow", "MAX_OVERFLOW"),
    _unknown("Pool_Size", "POOL_SIZE"),
    _unknown("timeout", "TIMEOUT"),
    _unknown("RESET_ON_RETURNS", "RESET_ON_RETURN"),
    _unknown("POOL_SIZE ", "POOL_SIZE"),
    _unknown("CONN_MAX_AGE", None),
    _unknown(1, None),
    # POOL_OPTIONS itself
    _not_a_dict("POOL_SIZE=5"),
    _not_a_dict(10),
    _not_a_dict(True),
    _not_a_dict((("POOL_SIZE", 1),)),
    _not_a_dict(["POOL_SIZE"]),
]


def test_the_table_is_large_and_has_no_duplicates() -> None:
    ids = [param.id for param in BAD]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(("pool_options", "message", "shows"), BAD)
def test_bad_pool_options_are_refused_by_name(
    tmp_path: Path, pool_options: Any, message: str, shows: str
) -> None:
    """Creating the alias's wrapper raises, naming the setting; the check says the same."""
    settings_dict = {
        "ENGINE": "django_sapool.backends.sqlite3",
        "NAME": str(tmp_path / "db.sqlite3"),
        "POOL_OPTIONS": pool_options,
    }
    handler = ConnectionHandler({"default": dict(settings_dict)})
    with pytest.raises(ImproperlyConfigured) as info:
        handler["default"]
    assert str(info.value).startswith(PATH + message)
    assert shows in str(info.value)
    # Nothing was connected (the SQLite file would exist).
    assert not (tmp_path / "db.sqlite3").exists()
    found = check_database_settings({"default": settings_dict})
    assert [(m.id, m.msg) for m in found] == [("sapool.E003", str(info.value))]


# -- never half-configured -----------------------------------------------------

#: A bad 'other' alias -> what the error must name.
BAD_OTHER = [
    pytest.param(
        {"POOL_OPTIONS": {"POOL_SIZE": 0}},
        "settings.DATABASES['other']['POOL_OPTIONS']['POOL_SIZE']",
        "sapool.E003",
        id="POOL_SIZE=0",
    ),
    pytest.param(
        {"POOL_OPTIONS": {"pool_size": 5}},
        "settings.DATABASES['other']['POOL_OPTIONS'] has an unknown key 'pool_size'",
        "sapool.E003",
        id="pool_size",
    ),
    pytest.param(
        {"POOL_OPTIONS": {"TIMEOUT": math.nan}},
        "settings.DATABASES['other']['POOL_OPTIONS']['TIMEOUT']",
        "sapool.E003",
        id="TIMEOUT=nan",
    ),
    pytest.param(
        {"CONN_MAX_AGE": 60},
        "settings.DATABASES['other']['CONN_MAX_AGE']",
        "sapool.E001",
        id="CONN_MAX_AGE=60",
    ),
    # What the backend cannot do: once accepted until 'other' was used (the
    # provider), or never refused at all (every connection discarded on return).
    pytest.param(
        {"POOL_OPTIONS": {"PASSWORD_PROVIDER": "os.getcwd"}},
        "settings.DATABASES['other']['POOL_OPTIONS']['PASSWORD_PROVIDER'] has no use with "
        "the 'sqlite' backend, which connects without a password: remove it.",
        "sapool.E003",
        id="PASSWORD_PROVIDER-on-SQLite",
    ),
    pytest.param(
        {"POOL_OPTIONS": {"RESET_ON_RETURN": "reset"}},
        "settings.DATABASES['other']['POOL_OPTIONS']['RESET_ON_RETURN'] is 'reset' (the "
        "server's full session reset), which the sqlite3 driver cannot do: a SQLite "
        "connection has no server session to reset",
        "sapool.E003",
        id="RESET_ON_RETURN=reset-on-SQLite",
    ),
]

FIRST_ACCESS = textwrap.dedent(
    """
    import json, sys
    import django
    from django.conf import settings

    settings.configure(DATABASES=json.loads(sys.argv[1]), USE_TZ=True)
    django.setup()
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except ImproperlyConfigured as exc:
        print("RAISED " + json.dumps(str(exc)))
    else:
        print("CONNECTED")
    """
)


def _databases(tmp_path: Path, bad: dict[str, Any]) -> dict[str, Any]:
    good = {"ENGINE": "django_sapool.backends.sqlite3", "NAME": str(tmp_path / "default.sqlite3")}
    other = {**good, "NAME": str(tmp_path / "other.sqlite3"), **bad}
    return {"default": good, "other": other}


def _python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("bad", "named", "check_id"), BAD_OTHER)
def test_first_access_to_a_good_alias_fails_when_another_is_bad(
    tmp_path: Path, bad: dict[str, Any], named: str, check_id: str
) -> None:
    """connections['default'].cursor() raises, naming 'other', before connecting anywhere.

    Needs the library to validate every pooled alias when the first wrapper is
    created; until then 'default' connects and this fails.
    """
    databases = _databases(tmp_path, bad)
    proc = _python("-c", FIRST_ACCESS, json.dumps(databases, allow_nan=True))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("RAISED "), (
        f"'default' was usable although 'other' is misconfigured: {proc.stdout!r}"
    )
    message = json.loads(proc.stdout.removeprefix("RAISED "))
    assert named in message
    assert not (tmp_path / "default.sqlite3").exists()  # no connection was opened


@pytest.mark.parametrize(("bad", "named", "check_id"), BAD_OTHER)
def test_manage_py_check_fails_when_an_alias_is_bad(
    tmp_path: Path, bad: dict[str, Any], named: str, check_id: str
) -> None:
    """``manage.py check`` (django_sapool installed) exits 1 and names the alias and setting."""
    databases = _databases(tmp_path, bad)
    (tmp_path / "bad_settings.py").write_text(
        textwrap.dedent(
            f"""
            from math import nan  # the repr of a NaN setting

            SECRET_KEY = "not-secret"
            INSTALLED_APPS = ["django_sapool"]
            USE_TZ = True
            DATABASES = {databases!r}
            """
        )
    )
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "bad_settings",
    }
    proc = _python("-m", "django", "check", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert check_id in proc.stderr
    assert named in " ".join(proc.stderr.split())
    # The good alias is not reported.
    assert "settings.DATABASES['default']" not in proc.stderr
