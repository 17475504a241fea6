"""The password never shows: reprs, pool keys, status, errors, log lines, stdout."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import connections

from django_sapool import pool_status, registry
from django_sapool.backends.postgresql.base import DatabaseWrapper as PgWrapper

PASSWORD = "Zebra-4711-do-not-leak"


def test_password_appears_nowhere(caplog: pytest.LogCaptureFixture, capsys: Any) -> None:
    settings_dict = connections.configure_settings(
        {
            "default": {
                "ENGINE": "django_sapool.backends.postgresql",
                "NAME": "app",
                "USER": "app",
                "PASSWORD": PASSWORD,
                # Nothing listens on port 1: the connect fails without a server.
                "HOST": "127.0.0.1",
                "PORT": "1",
                "OPTIONS": {"connect_timeout": 2},
                "POOL_OPTIONS": {"ECHO": "debug", "TIMEOUT": 0.1},
            }
        }
    )["default"]
    wrapper = PgWrapper(settings_dict, "default")
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
