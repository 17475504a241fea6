"""The password never shows in DEBUG checkout/return lines or in ``manage.py sapool``."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from django_sapool import registry
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper
from django_sapool.management.commands.sapool import Command, _mask

PASSWORD = "Zebra-4711-do-not-leak"


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    registry.dispose()
    yield
    connections.close_all()
    registry.dispose()


@pytest.fixture
def aliases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A SQLite alias and an unreachable PostgreSQL alias, both with a password."""
    raw = {
        "lite": {
            "ENGINE": "django_sapool.backends.sqlite3",
            "NAME": str(tmp_path / "lite.sqlite3"),
            "PASSWORD": PASSWORD,
        },
        "pg": {
            "ENGINE": "django_sapool.backends.postgresql",
            "NAME": "app",
            "USER": "app",
            "PASSWORD": PASSWORD,
            # Nothing listens on port 1: the connect fails without a server.
            "HOST": "127.0.0.1",
            "PORT": "1",
            "OPTIONS": {"connect_timeout": 2},
            "POOL_OPTIONS": {"ECHO": "debug", "TIMEOUT": 0.1},
        },
    }
    for alias, settings_dict in raw.items():
        filled = connections.configure_settings({"default": settings_dict})["default"]
        monkeypatch.setitem(settings.DATABASES, alias, filled)
    yield
    for alias in raw:
        if hasattr(connections._connections, alias):
            connections[alias].close()
            del connections[alias]


def test_debug_checkout_and_return_lines(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    settings_dict = connections.configure_settings(
        {
            "default": {
                "ENGINE": "django_sapool.backends.sqlite3",
                "NAME": str(tmp_path / "db.sqlite3"),
                "PASSWORD": PASSWORD,
                "POOL_OPTIONS": {"ECHO": "debug"},
            }
        }
    )["default"]
    wrapper = SqliteWrapper(settings_dict, "default")
    for _ in range(2):
        wrapper.ensure_connection()
        wrapper.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("checked out a connection of alias 'default'" in m for m in messages) == 2
    assert sum("returned a connection of alias 'default'" in m for m in messages) == 2
    assert all(PASSWORD not in text for text in (caplog.text, *messages))


@pytest.mark.parametrize("output", ["text", "json"])
def test_command_output(
    aliases: None, output: str, caplog: pytest.LogCaptureFixture, capsys: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    args = ["--check", "--workers", "3", "--threads", "4"] + (
        ["--json"] if output == "json" else []
    )
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(Command(), *args, stdout=out, stderr=out)
    text = out.getvalue()
    captured = capsys.readouterr()
    # The failure really happened and was reported, so the search means something.
    assert "live check failed for alias 'pg'" in str(info.value)
    assert "port 1 failed" in text
    if output == "json":
        checks = {c["alias"]: c for c in json.loads(text)["checks"]}
        assert checks["lite"]["ok"] is True and checks["pg"]["ok"] is False
    else:
        assert "USER" in text and "app" in text  # the user is shown, the password is not
    seen = [
        text,
        str(info.value),
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        captured.out,
        captured.err,
    ]
    assert all(PASSWORD not in part for part in seen)


def test_an_error_that_echoes_the_password_is_masked() -> None:
    message = f"FATAL:  password authentication failed (tried {PASSWORD!r})\n  DETAIL: x"
    assert _mask(message, PASSWORD) == (
        "FATAL: password authentication failed (tried '********') DETAIL: x"
    )
    assert _mask("plain", "") == "plain"
    assert _mask("plain", None) == "plain"
