"""System checks: each id fires on the settings it is about, and only there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core import checks as django_checks
from django.test import override_settings

from django_sapool.checks import TAG, check_database_settings, check_databases, register_checks

PG = {
    "ENGINE": "django_sapool.backends.postgresql",
    "NAME": "app",
    "USER": "app",
    "PASSWORD": "secret",
    "HOST": "db",
    "PORT": 5432,
}


def ids(**databases: dict[str, Any]) -> list[str]:
    return [message.id or "" for message in check_database_settings(databases)]


def messages(**databases: dict[str, Any]) -> list[django_checks.CheckMessage]:
    return check_database_settings(databases)


def test_a_clean_configuration_has_no_message() -> None:
    assert ids(default=PG, other={**PG, "POOL_OPTIONS": {"POOL_SIZE": 5, "TIMEOUT": 2}}) == []
    assert ids(default={**PG, "CONN_MAX_AGE": 0, "OPTIONS": {"pool": False}}) == []


@pytest.mark.parametrize("max_age", [60, None])
def test_e001_conn_max_age(max_age: int | None) -> None:
    (message,) = messages(default={**PG, "CONN_MAX_AGE": max_age})
    assert (message.id, message.level) == ("sapool.E001", django_checks.ERROR)
    assert "settings.DATABASES['default']['CONN_MAX_AGE'] must be 0" in message.msg


def test_e002_djangos_own_pool() -> None:
    (message,) = messages(default={**PG, "OPTIONS": {"pool": {"min_size": 2}}})
    assert message.id == "sapool.E002"
    assert "settings.DATABASES['default']['OPTIONS']['pool']" in message.msg


def test_e003_reports_every_bad_key_with_the_backends_message() -> None:
    found = messages(default={**PG, "POOL_OPTIONS": {"POOL_SIZ": 3, "TIMEOUT": "x"}})
    assert [m.id for m in found] == ["sapool.E003", "sapool.E003"]
    assert "has an unknown key 'POOL_SIZ'. Did you mean 'POOL_SIZE'?" in found[0].msg
    assert (
        "settings.DATABASES['default']['POOL_OPTIONS']['TIMEOUT'] must be a number of "
        "seconds >= 0, got 'x' (str)." == found[1].msg
    )


def test_e003_keys_that_only_together_break_are_checked_together() -> None:
    # MIN_IDLE is checked against this alias's POOL_SIZE, not the default (10).
    assert ids(default={**PG, "POOL_OPTIONS": {"POOL_SIZE": 30, "MIN_IDLE": 20}}) == []
    (message,) = messages(default={**PG, "POOL_OPTIONS": {"POOL_SIZE": 2, "MIN_IDLE": 5}})
    assert message.id == "sapool.E003"
    assert "['MIN_IDLE'] must not exceed POOL_SIZE (2)" in message.msg


def test_e003_pool_options_not_a_dict() -> None:
    (message,) = messages(default={**PG, "POOL_OPTIONS": [("POOL_SIZE", 3)]})
    assert message.id == "sapool.E003"
    assert "['POOL_OPTIONS'] must be a dict" in message.msg


def test_errors_combine_per_alias() -> None:
    assert ids(
        default={**PG, "CONN_MAX_AGE": 5, "OPTIONS": {"pool": True}, "POOL_OPTIONS": {"X": 1}},
        fine=PG,
    ) == ["sapool.E001", "sapool.E002", "sapool.E003"]


@pytest.mark.parametrize("name", [":memory:", "file:memdb1?mode=memory&cache=shared"])
def test_w001_in_memory_sqlite(name: str) -> None:
    sqlite = {"ENGINE": "django_sapool.backends.sqlite3", "NAME": name, "CONN_MAX_AGE": 60}
    (message,) = messages(default=sqlite)
    assert (message.id, message.level) == ("sapool.W001", django_checks.WARNING)
    assert "not pool" in message.msg
    # Not pooled, so it behaves like Django's sqlite3: CONN_MAX_AGE is allowed there.
    spatialite = {"ENGINE": "django_sapool.backends.spatialite", "NAME": ":memory:"}
    assert ids(default=spatialite) == ["sapool.W001"]


def test_w001_not_for_file_databases(tmp_path: Path) -> None:
    assert ids(default={"ENGINE": "django_sapool.backends.sqlite3", "NAME": "/srv/app.db"}) == []
    path = {"ENGINE": "django_sapool.backends.sqlite3", "NAME": tmp_path / "app.db"}
    assert ids(default=path) == []


@pytest.mark.parametrize(
    ("pool_options", "mentions"),
    [
        ({"MAX_OVERFLOW": -1}, "['MAX_OVERFLOW'] is -1"),
        ({"POOL_SIZE": 101}, "['POOL_SIZE'] is 101"),
        ({"TIMEOUT": 0}, "['TIMEOUT'] is 0"),
    ],
)
def test_w002_suspicious_sizes(pool_options: dict[str, Any], mentions: str) -> None:
    (message,) = messages(default={**PG, "POOL_OPTIONS": pool_options})
    assert (message.id, message.level) == ("sapool.W002", django_checks.WARNING)
    assert mentions in message.msg
    assert message.hint


def test_w002_limits_and_precedence() -> None:
    assert ids(default={**PG, "POOL_OPTIONS": {"POOL_SIZE": 100, "TIMEOUT": 0.01}}) == []
    every = {"POOL_SIZE": 500, "MAX_OVERFLOW": -1, "TIMEOUT": 0}
    assert ids(default={**PG, "POOL_OPTIONS": every}) == ["sapool.W002"] * 3
    # Invalid options are an E003, not a guess at what was meant.
    assert ids(default={**PG, "POOL_OPTIONS": {**every, "USE_LIFO": 1}}) == ["sapool.E003"]


@pytest.mark.parametrize(
    ("engine", "ours"),
    [
        ("django.db.backends.postgresql", "django_sapool.backends.postgresql"),
        ("django.db.backends.sqlite3", "django_sapool.backends.sqlite3"),
        ("django.contrib.gis.db.backends.mysql", "django_sapool.backends.mysql_gis"),
    ],
)
def test_w003_pool_options_on_djangos_backend(engine: str, ours: str) -> None:
    (message,) = messages(default={**PG, "ENGINE": engine, "POOL_OPTIONS": {"POOL_SIZE": 5}})
    assert (message.id, message.level) == ("sapool.W003", django_checks.WARNING)
    assert "ignores it" in message.msg
    assert message.hint is not None and repr(ours) in message.hint


@pytest.mark.parametrize(
    ("name", "test"),
    [
        ("file:memorydb_default?mode=memory&cache=shared", {}),
        ("file:memorydb_default_2?mode=memory&cache=shared", {"NAME": None}),  # --parallel
        ("file:memorydb_other-db?mode=memory&cache=shared", {"NAME": ":memory:"}),
    ],
)
def test_w001_is_silent_on_djangos_own_in_memory_test_database(
    name: str, test: dict[str, Any]
) -> None:
    """Django's test runner puts such a NAME in place of a file database, then runs the checks.

    The settings name a file: there is nothing to change, and W001 fired at
    every test run of a project on a file SQLite database.
    """
    sqlite = {"ENGINE": "django_sapool.backends.sqlite3", "NAME": name, "TEST": test}
    assert ids(default=sqlite) == []
    # Named so in the settings themselves (a TEST["NAME"] of the same form): warned.
    assert ids(default={**sqlite, "TEST": {"NAME": name}}) == ["sapool.W001"]


def test_other_backends_are_left_alone() -> None:
    django_pg = {**PG, "ENGINE": "django.db.backends.postgresql", "CONN_MAX_AGE": 60}
    other_pool = {**PG, "ENGINE": "dj_db_conn_pool.backends.postgresql", "POOL_OPTIONS": {}}
    memory = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    assert ids(a=django_pg, b=other_pool, c=memory, d={"ENGINE": ""}) == []


def backend_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, base: str) -> str:
    """Make an importable ENGINE package ``name`` whose DatabaseWrapper subclasses ``base``'s."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(
        f"from {base}.base import DatabaseWrapper as Base\nclass DatabaseWrapper(Base):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_projects_subclass_of_our_backend_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = backend_package(
        tmp_path, monkeypatch, "myproject_db", "django_sapool.backends.sqlite3"
    )
    assert ids(default={"ENGINE": engine, "NAME": ":memory:"}) == ["sapool.W001"]
    assert ids(default={"ENGINE": engine, "NAME": "/srv/a.db", "CONN_MAX_AGE": 9}) == [
        "sapool.E001"
    ]


@pytest.fixture
def registered() -> Iterator[None]:
    register_checks()
    yield
    django_checks.registry.registry.registered_checks.discard(check_databases)


def test_registered_check_reads_settings_databases(
    registered: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.conf import settings

    assert TAG in django_checks.registry.registry.tags_available()
    bad = {**PG, "POOL_OPTIONS": {"POOL_SIZE": 0}}
    # Not override_settings: on Django 6 its setting_changed handler leaves the
    # connection handler with these settings after the block, breaking later tests.
    from django.db import connections

    # The connection handler caches what it read from DATABASES (Django 6's checks
    # read it during run_checks): put its state back afterwards.
    saved = (connections._settings, connections.__dict__.get("settings"))
    monkeypatch.setattr(settings, "DATABASES", {"default": bad})
    try:
        found = django_checks.run_checks(tags=[TAG])
    finally:
        monkeypatch.undo()
        connections._settings = saved[0]
        connections.__dict__.pop("settings", None)
        if saved[1] is not None:
            connections.__dict__["settings"] = saved[1]
    assert [m.id for m in found] == ["sapool.E003"]


def test_app_config_registers_the_checks() -> None:
    from django.apps import apps

    with override_settings(INSTALLED_APPS=["django_sapool"]):
        config = apps.get_app_config("django_sapool")
        assert config.label == "django_sapool"
        assert check_databases in django_checks.registry.registry.get_checks()
    django_checks.registry.registry.registered_checks.discard(check_databases)


def test_manage_py_check_reports_instead_of_crashing(tmp_path: Path) -> None:
    (tmp_path / "badsettings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "x"
            INSTALLED_APPS = ["django_sapool"]
            DATABASES = {{
                "default": {{
                    "ENGINE": "django_sapool.backends.sqlite3",
                    "NAME": {str(tmp_path / "db.sqlite3")!r},
                    "CONN_MAX_AGE": 60,
                    "POOL_OPTIONS": {{"POOL_SIZE": "10", "TIMOUT": 3}},
                }},
            }}
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DJANGO_SETTINGS_MODULE": "badsettings"}
    proc = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "(sapool.E001) settings.DATABASES['default']['CONN_MAX_AGE'] must be 0" in proc.stderr
    assert "(sapool.E003) settings.DATABASES['default']['POOL_OPTIONS']['POOL_SIZE']" in (
        proc.stderr
    )
    assert "unknown key 'TIMOUT'. Did you mean 'TIMEOUT'?" in proc.stderr
    assert "System check identified 3 issues" in proc.stderr


def test_lend_transaction_with_a_session_reset_or_without_autocommit_warns() -> None:
    lend = {"LEND": "transaction"}
    assert ids(default={**PG, "POOL_OPTIONS": lend}) == []
    assert ids(default={**PG, "POOL_OPTIONS": {**lend, "RESET_ON_RETURN": None}}) == []
    for reset in ("reset", "DISCARD ALL"):
        (message,) = messages(default={**PG, "POOL_OPTIONS": {**lend, "RESET_ON_RETURN": reset}})
        assert (message.id, message.level) == ("sapool.W004", django_checks.WARNING)
        assert f"['RESET_ON_RETURN'] is {reset!r} with LEND 'transaction'" in message.msg
    (message,) = messages(default={**PG, "AUTOCOMMIT": False, "POOL_OPTIONS": lend})
    assert message.id == "sapool.W004"
    assert "['AUTOCOMMIT'] is False" in message.msg
    (message,) = messages(default={**PG, "AUTOCOMMIT": 0, "POOL_OPTIONS": lend})
    assert "['AUTOCOMMIT'] is 0: a connection outside autocommit" in message.msg
    # LEND "request" (the default) has nothing to say about either.
    reset = {"RESET_ON_RETURN": "reset"}
    assert ids(default={**PG, "AUTOCOMMIT": False, "POOL_OPTIONS": reset}) == []


# -- what the alias's backend cannot do (sapool.E003, and refused at startup) --

#: The refusal of RESET_ON_RETURN 'reset' on SQLite, after the setting's path.
SQLITE_RESET = (
    "['POOL_OPTIONS']['RESET_ON_RETURN'] is 'reset' (the server's full session reset), "
    "which the sqlite3 driver cannot do: a SQLite connection has no server session to "
    "reset (its temp tables and PRAGMAs last as long as the connection), so every "
    "connection would be discarded on its return. Use 'rollback' (the default) instead."
)
SQLITE_PROVIDER = (
    "['POOL_OPTIONS']['PASSWORD_PROVIDER'] has no use with the 'sqlite' backend, which "
    "connects without a password: remove it."
)


@pytest.mark.parametrize(
    "settings_dict",
    [
        pytest.param({"ENGINE": "django_sapool.backends.sqlite3"}, id="sqlite3"),
        pytest.param({"ENGINE": "django_sapool.backends.spatialite"}, id="spatialite"),
        pytest.param(
            {
                "ENGINE": "django_sapool.backends.pooled",
                "POOL_OPTIONS": {"BACKEND": "django.db.backends.sqlite3"},
            },
            id="generic-sqlite3",
        ),
    ],
)
@pytest.mark.parametrize(
    ("pool_options", "refusal"),
    [
        ({"RESET_ON_RETURN": "reset"}, SQLITE_RESET),
        ({"PASSWORD_PROVIDER": "os.getcwd"}, SQLITE_PROVIDER),
    ],
    ids=["reset", "provider"],
)
def test_e003_an_option_sqlite_cannot_do_is_refused_at_startup(
    settings_dict: dict[str, Any], pool_options: dict[str, Any], refusal: str, tmp_path: Path
) -> None:
    """Refused by the check and by the wrapper, with the same message naming the setting.

    Before: RESET_ON_RETURN 'reset' passed both, then every return raised
    NotImplementedError and discarded the connection (pooling silently off);
    PASSWORD_PROVIDER passed the check and was refused at the alias's first use.
    """
    from django.core.exceptions import ImproperlyConfigured
    from django.db.utils import ConnectionHandler

    if settings_dict["ENGINE"].endswith("spatialite"):
        pytest.importorskip("django.contrib.gis.db.backends.spatialite.base")
    options = {**settings_dict.get("POOL_OPTIONS", {}), **pool_options}
    files = {**settings_dict, "NAME": str(tmp_path / "db.sqlite3"), "POOL_OPTIONS": options}
    expected = f"settings.DATABASES['default']{refusal}"
    assert [(m.id, m.msg) for m in messages(default=files)] == [("sapool.E003", expected)]
    with pytest.raises(ImproperlyConfigured) as info:
        ConnectionHandler({"default": files})["default"]
    assert str(info.value) == expected
    assert not (tmp_path / "db.sqlite3").exists()  # refused before connecting


def test_an_option_sqlite_cannot_do_is_not_refused_in_memory() -> None:
    """In-memory SQLite is not pooled: W001 says its POOL_OPTIONS are not read."""
    memory = {
        "ENGINE": "django_sapool.backends.sqlite3",
        "NAME": ":memory:",
        "POOL_OPTIONS": {"RESET_ON_RETURN": "reset", "PASSWORD_PROVIDER": "os.getcwd"},
    }
    assert ids(default=memory) == ["sapool.W001"]


def test_the_session_reset_stays_allowed_where_the_driver_has_one() -> None:
    """PostgreSQL's DISCARD ALL: 'reset' is no error there."""
    assert ids(default={**PG, "POOL_OPTIONS": {"RESET_ON_RETURN": "reset"}}) == []


def test_w003_pool_options_on_a_backend_pooled_only_through_the_generic_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A third-party backend built on Django's (django-tenants', django-prometheus'):
    # with its own ENGINE, POOL_OPTIONS is ignored and every thread had a session.
    backend_package(tmp_path, monkeypatch, "thirdparty_db", "django.db.backends.sqlite3")
    settings_dict = {"ENGINE": "thirdparty_db", "NAME": "/srv/a.db", "POOL_OPTIONS": {}}
    (message,) = messages(default=settings_dict)
    assert (message.id, message.level) == ("sapool.W003", django_checks.WARNING)
    assert "'thirdparty_db' is not a django_sapool backend and ignores it" in message.msg
    assert message.hint is not None
    assert "'django_sapool.backends.pooled'" in message.hint
    assert "['BACKEND'] to 'thirdparty_db'" in message.hint
    # Without POOL_OPTIONS nothing is said: pooling it is a choice, not a mistake.
    assert ids(default={"ENGINE": "thirdparty_db", "NAME": "/srv/a.db"}) == []
