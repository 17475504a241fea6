"""What the settings of one alias say, read without connecting (checks and command share it)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import PurePath

import pytest

from django_sapool.aliases import describe, is_in_memory_sqlite, settings_errors

from .test_checks import PG


def test_a_pooled_alias_and_its_effective_options() -> None:
    info = describe("default", {**PG, "POOL_OPTIONS": {"POOL_SIZE": 3}})
    assert (info.engine, info.vendor, info.pooled, info.port) == (
        PG["ENGINE"],
        "postgresql",
        True,
        "5432",
    )
    assert info.options is not None
    assert (info.options["POOL_SIZE"], info.options["MAX_OVERFLOW"]) == (3, 10)
    assert (info.note, info.errors) == (None, [])
    assert "secret" not in repr(asdict(info))


def test_not_ours_and_in_memory_are_not_pooled() -> None:
    plain = describe("plain", {**PG, "ENGINE": "django.db.backends.postgresql"})
    assert (plain.pooled, plain.vendor, plain.note) == (False, "", "not a django_sapool ENGINE")
    memory = describe("m", {"ENGINE": "django_sapool.backends.spatialite", "NAME": ":memory:"})
    assert (memory.pooled, memory.vendor) == (False, "sqlite")
    assert memory.note == "in-memory SQLite: not pooled"
    assert memory.options is None


def test_every_refusal_is_listed_and_no_options_then() -> None:
    bad = {**PG, "CONN_MAX_AGE": 60, "POOL_OPTIONS": {"POOL_SIZ": 1, "TIMEOUT": "x"}}
    assert [check_id for check_id, _ in settings_errors("default", bad)] == [
        "sapool.E001",
        "sapool.E003",
        "sapool.E003",
    ]
    info = describe("default", bad)
    assert info.errors == [message for _, message in settings_errors("default", bad)]
    assert info.options is None and info.pooled


@pytest.mark.parametrize(
    ("name", "in_memory"),
    [
        (":memory:", True),
        ("file:memdb1?mode=memory&cache=shared", True),
        ("/srv/app.db", False),
        (PurePath(":memory:"), False),  # a path is a file, whatever its name
        (None, False),
    ],
)
def test_is_in_memory_sqlite(name: object, in_memory: bool) -> None:
    assert is_in_memory_sqlite(name) is in_memory
