"""The password never shows: reprs, pool keys, status, errors, log lines, stdout.

``manage.py sapool``'s output is searched in test_command.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from django_sapool import pool_status, registry
from django_sapool.backends.postgresql.base import DatabaseWrapper as PgWrapper
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper

from .pools import PASSWORD, SQLITE, UNREACHABLE_PG, filled


def test_password_appears_nowhere(caplog: pytest.LogCaptureFixture, capsys: Any) -> None:
    wrapper = PgWrapper(filled(**UNREACHABLE_PG), "default")
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(Exception) as info:
            wrapper.ensure_connection()
        pool = wrapper.sapool_pool()
        seen = [
            str(info.value),
            repr(info.value),
            repr(pool),
            repr(pool.options),
            repr(pool_status()),
            repr(list(registry._pools)),
            caplog.text,
            *(r.getMessage() for r in caplog.records),
            *(str(r.exc_info) for r in caplog.records if r.exc_info),
            capsys.readouterr().out,
        ]
        # The failure really happened and was logged, so the search means something.
        assert "port 1 failed" in str(info.value)
        assert "created pool for alias 'default'" in caplog.text
        assert all(PASSWORD not in text for text in seen)
    finally:
        registry.dispose()


def test_debug_checkout_and_return_lines(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    settings_dict = filled(
        ENGINE=SQLITE,
        NAME=str(tmp_path / "db.sqlite3"),
        PASSWORD=PASSWORD,
        POOL_OPTIONS={"ECHO": "debug"},
    )
    wrapper = SqliteWrapper(settings_dict, "default")
    try:
        for _ in range(2):
            wrapper.ensure_connection()
            wrapper.close()
    finally:
        registry.dispose()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("checked out a connection of alias 'default'" in m for m in messages) == 2
    assert sum("returned a connection of alias 'default'" in m for m in messages) == 2
    assert all(PASSWORD not in text for text in (caplog.text, *messages))
