"""The Django hooks of wrapper.py that are not on the hot path: close_pool()."""

from __future__ import annotations

from pathlib import Path

import pytest

import django_sapool
from django_sapool import registry
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper

from .pools import SQLITE, filled

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
    assert [s.alias for s in django_sapool.pool_status()] == ["other"]  # only this alias
    with held.cursor() as cursor:  # the checked-out one still works until returned
        cursor.execute("SELECT 1")
    held.close()
    assert first.opened.all() == []  # closed when returned
    again = SqliteWrapper(settings_dict["default"], "default")
    again.ensure_connection()
    second = again.sapool_pool()
    assert second is not first and second.status().connections_opened == 1
    again.close()
    assert {s.alias for s in registry.status()} == {"default", "other"}
