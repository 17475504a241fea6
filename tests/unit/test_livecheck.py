"""The live check: connect through the pool, ping, ask the backend's hook; mask the password."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from django_sapool.livecheck import PINGS, live_check, mask

from .pools import PASSWORD

pytestmark = pytest.mark.usefixtures("clean_registry")


def test_sqlite_facts_and_timings() -> None:
    check = live_check("default", None)
    assert check.ok and check.error is None
    assert check.server_version == f"SQLite {sqlite3.sqlite_version}"
    assert (check.max_connections, check.connections_in_use) == (None, None)
    assert check.connect_ms is not None and check.connect_ms >= 0
    assert check.ping_ms is not None and check.ping_ms >= 0
    assert PINGS == 3
    assert connections["default"].connection is None  # it closed what it opened


def test_a_connection_in_use_is_left_open() -> None:
    wrapper = connections["default"]
    wrapper.ensure_connection()
    raw = wrapper.connection
    assert live_check("default", None).ok
    assert wrapper.connection is raw


def test_a_failure_is_the_finding(extra_alias: Any, tmp_path: Path) -> None:
    extra_alias("broken", ENGINE="django_sapool.backends.sqlite3", NAME=str(tmp_path / "no/x"))
    check = live_check("broken", None)
    assert not check.ok and check.server_version is None
    assert check.error == "OperationalError: unable to open database file"


def test_not_a_pooled_backend(extra_alias: Any) -> None:
    extra_alias("plain", ENGINE="django.db.backends.sqlite3", NAME=":memory:")
    check = live_check("plain", None)
    assert check.error == "ImproperlyConfigured: alias 'plain' is not a django_sapool backend"


def test_a_backend_without_the_hook_still_connects_and_pings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django_sapool.backends.sqlite3.base import SQLitePoolMixin

    monkeypatch.delattr(SQLitePoolMixin, "sapool_server_facts")
    check = live_check("default", None)
    assert check.ok and check.ping_ms is not None
    assert check.server_version is None


def test_an_error_that_echoes_the_password_is_masked() -> None:
    message = f"FATAL:  password authentication failed (tried {PASSWORD!r})\n  DETAIL: x"
    assert mask(message, PASSWORD) == (
        "FATAL: password authentication failed (tried '********') DETAIL: x"
    )
    assert mask("plain", "") == "plain"
    assert mask("plain", None) == "plain"
