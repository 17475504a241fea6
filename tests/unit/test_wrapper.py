"""The Django hooks of wrapper.py that are not on the hot path.

close_pool(); a watched settings key deleted in place; the connection Django's
_nodb_cursor() opens without a pool, with PASSWORD_PROVIDER and CONNECT_TIMEOUT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django import test as django_test
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base as django_pg
from django.db.utils import OperationalError

import django_sapool
from django_sapool import registry
from django_sapool.backends.postgresql.base import DatabaseWrapper as PgWrapper
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper

from .pools import SQLITE, filled, sqlite_settings

pytestmark = pytest.mark.usefixtures("clean_registry")


def test_close_pool_disposes_of_the_alias_pool_and_the_next_checkout_makes_one(
    tmp_path: Path,
) -> None:
    settings_dict = {
        "default": filled(
            ENGINE=SQLITE, NAME=str(tmp_path / "a.sqlite3"), POOL_OPTIONS={"POOL_SIZE": 2}
        ),
        "other": filled(ENGINE=SQLITE, NAME=str(tmp_path / "b.sqlite3")),
    }
    idle = SqliteWrapper(settings_dict["default"], "default")
    held = SqliteWrapper(settings_dict["default"], "default")
    idle.ensure_connection()
    held.ensure_connection()
    idle.close()
    other = SqliteWrapper(settings_dict["other"], "other")
    other.ensure_connection()
    other.close()
    first = held.sapool_pool()
    assert len(first.opened.all()) == 2  # one idle, one checked out

    held.close_pool()  # Django's name (its PostgreSQL test-database code calls it)

    assert first.disposed
    assert len(first.opened.all()) == 1  # the idle one is closed now
    # Only this alias; its disposed pool is listed while its connection is out.
    assert [(s.alias, s.disposed, s.checked_out) for s in django_sapool.pool_status()] == [
        ("other", False, 0),
        ("default", True, 1),
    ]
    with held.cursor() as cursor:  # the checked-out one still works until returned
        cursor.execute("SELECT 1")
    held.close()
    assert first.opened.all() == []  # closed when returned
    assert [s.alias for s in django_sapool.pool_status()] == ["other"]
    again = SqliteWrapper(settings_dict["default"], "default")
    again.ensure_connection()
    second = again.sapool_pool()
    assert second is not first and second.status().connections_opened == 1
    again.close()
    assert {s.alias for s in registry.status()} == {"default", "other"}


def test_a_watched_key_deleted_in_place_is_a_settings_change(tmp_path: Path) -> None:
    """``del settings_dict["POOL_OPTIONS"]``: the defaults again (was a KeyError per connect)."""
    settings_dict = filled(
        ENGINE=SQLITE, NAME=str(tmp_path / "a.sqlite3"), POOL_OPTIONS={"POOL_SIZE": 2}
    )
    wrapper = SqliteWrapper(settings_dict, "default")
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    wrapper.close()
    first = wrapper.sapool_pool()
    assert first.options.pool_size == 2

    del wrapper.settings_dict["POOL_OPTIONS"]  # in place, as a test or a project may

    assert wrapper.sapool_current_pool() is None  # looked up again at the next checkout
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    wrapper.close()
    second = wrapper.sapool_pool()
    assert second is not first and first.disposed
    assert second.options.pool_size == 10  # the default
    assert wrapper.sapool_current_pool() is second  # and found at once from then on
    assert [(s.alias, s.pool_size) for s in django_sapool.pool_status()] == [("default", 10)]


provided: list[Any] = []


def provider(settings_dict: dict[str, Any]) -> str:
    provided.append(settings_dict["NAME"])
    return "from-provider"


def failing_provider(settings_dict: dict[str, Any]) -> str:
    raise RuntimeError("vault sealed")


class Connecting(Exception):
    """Raised by Django's own get_new_connection(), with the parameters it was given."""


def pg_with_provider(name: str, **pool_options: Any) -> dict[str, Any]:
    return filled(
        ENGINE="django_sapool.backends.postgresql",
        NAME="app",
        USER="app",
        PASSWORD="",  # the provider gives it
        HOST="db.invalid",
        PORT=5432,
        POOL_OPTIONS={"PASSWORD_PROVIDER": f"{__name__}.{name}", **pool_options},
    )


def test_nodb_cursor_connects_with_the_provider_password_and_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Django's _nodb_cursor() (test databases) connects as a pooled connection would, unpooled."""

    def get_new_connection(self: Any, conn_params: dict[str, Any]) -> Any:
        raise Connecting(self.alias, conn_params)

    monkeypatch.setattr(django_pg.DatabaseWrapper, "get_new_connection", get_new_connection)
    provided.clear()
    wrapper = PgWrapper(pg_with_provider("provider", CONNECT_TIMEOUT=3), "default")
    with pytest.raises(Connecting) as info:
        with wrapper._nodb_cursor():
            pass
    alias, params = info.value.args
    assert alias == NO_DB_ALIAS
    assert params["password"] == "from-provider"
    assert params["connect_timeout"] == 3
    assert params["dbname"] == "postgres" and params["user"] == "app"
    assert provided == [None]  # the no-database copy of the alias's settings
    assert registry.status() == []  # and no pool for it


def test_a_failing_provider_of_the_nodb_connection_says_which_connection() -> None:
    nodb = PgWrapper({**pg_with_provider("failing_provider"), "NAME": None}, NO_DB_ALIAS)
    with pytest.raises(OperationalError) as info:
        nodb.ensure_connection()
    assert str(info.value) == (
        "django_sapool: POOL_OPTIONS['PASSWORD_PROVIDER'] (for Django's connection without a "
        f"database) ('{__name__}.failing_provider') failed, so no new connection could be "
        "opened: RuntimeError: vault sealed"
    )


@pytest.mark.parametrize("lend_mode", ["request", "transaction"])
def test_a_test_tools_database_blocker_is_obeyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lend_mode: str
) -> None:
    """pytest-django and SimpleTestCase refuse database access by replacing Django's
    BaseDatabaseWrapper.ensure_connection; ours overrode it, so a test without
    database access queried the real database."""
    from django.db.backends.base.base import BaseDatabaseWrapper

    settings_dict = sqlite_settings(tmp_path, LEND=lend_mode)
    db = SqliteWrapper(settings_dict, "default")
    djangos = BaseDatabaseWrapper.ensure_connection

    def blocked(self: Any) -> None:  # pytest-django's _blocking_wrapper, in effect
        raise RuntimeError("Database access not allowed")

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", blocked)
    with pytest.raises(RuntimeError, match="not allowed"):
        db.cursor()
    assert db.connection is None
    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", djangos)  # allowed again
    with db.cursor() as cursor:
        cursor.execute("SELECT 1")
    db.close()


@pytest.mark.skipif(
    not hasattr(django_test.SimpleTestCase, "ensure_connection_patch_method"),
    reason="Django < 5.0's SimpleTestCase patches each wrapper's own methods, not this one",
)
def test_simpletestcase_refuses_a_database_it_did_not_declare(tmp_path: Path) -> None:
    """Django's own blocker (5.x: also in threads): its patch of ensure_connection decides."""
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.test import SimpleTestCase

    class NoDatabases(SimpleTestCase):
        databases: set[str] = set()

    db = SqliteWrapper(sqlite_settings(tmp_path), "default")
    djangos = BaseDatabaseWrapper.ensure_connection
    BaseDatabaseWrapper.ensure_connection = NoDatabases.ensure_connection_patch_method()
    try:
        with pytest.raises(Exception, match="not allowed"):
            db.ensure_connection()
    finally:
        BaseDatabaseWrapper.ensure_connection = djangos
    assert db.connection is None
