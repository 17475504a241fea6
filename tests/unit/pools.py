"""Pools for the unit tests: settings as Django fills them in, a held connection.

SQLite needs no server, so these pools are real ones: their statistics, log lines
and metrics come from actual checkouts, waits and returns. The PostgreSQL settings
lead nowhere (port 1), for the failures whose messages must not show the password.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from django.db import connections

from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper

SQLITE = "django_sapool.backends.sqlite3"
#: The password the tests search for in every text the project writes.
PASSWORD = "Zebra-4711-do-not-leak"
#: A PostgreSQL alias with PASSWORD: nothing listens on port 1, so the connect fails
#: at once without a server, and the pool logs everything (ECHO) while it does.
UNREACHABLE_PG: dict[str, Any] = {
    "ENGINE": "django_sapool.backends.postgresql",
    "NAME": "app",
    "USER": "app",
    "PASSWORD": PASSWORD,
    "HOST": "127.0.0.1",
    "PORT": "1",
    "OPTIONS": {"connect_timeout": 2},
    "POOL_OPTIONS": {"ECHO": "debug", "TIMEOUT": 0.1},
}


def filled(**settings_dict: Any) -> dict[str, Any]:
    """One alias's settings with Django's defaults filled in (CONN_MAX_AGE, OPTIONS, TEST...)."""
    return connections.configure_settings({"default": settings_dict})["default"]


def sqlite_settings(tmp_path: Path, **pool_options: Any) -> dict[str, Any]:
    """A pooled SQLite database in ``tmp_path`` with these POOL_OPTIONS."""
    return filled(ENGINE=SQLITE, NAME=str(tmp_path / "db.sqlite3"), POOL_OPTIONS=pool_options)


class Holder:
    """A thread that checks out a connection and keeps it until released."""

    def __init__(
        self, settings_dict: dict[str, Any], wrapper_class: type = SqliteWrapper, wait: bool = True
    ) -> None:
        """``wait``: until the connection is held (else started, not waited for)."""
        self.holding = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(settings_dict, wrapper_class))
        self.thread.start()
        if wait:
            assert self.holding.wait(5)

    def _run(self, settings_dict: dict[str, Any], wrapper_class: type) -> None:
        # A Django wrapper belongs to the thread that made it.
        wrapper = wrapper_class(settings_dict, "default")
        wrapper.ensure_connection()
        self.holding.set()
        self.release.wait(10)
        wrapper.close()

    def stop(self) -> None:
        self.release.set()
        self.thread.join(10)


def checkout_after_a_wait(settings_dict: dict[str, Any], seconds: float = 0.1) -> SqliteWrapper:
    """Check out the pool's only connection after another thread held it ``seconds`` more.

    The pool of ``settings_dict`` must hold one connection (POOL_SIZE=1,
    MAX_OVERFLOW=0), so this thread's checkout waits for the holder's return.
    Returns this thread's wrapper, its connection still checked out; the holder
    has ended.
    """
    holder = Holder(settings_dict)
    threading.Timer(seconds, holder.release.set).start()
    wrapper = SqliteWrapper(settings_dict, "default")
    wrapper.ensure_connection()  # waits for the holder
    holder.stop()
    return wrapper


def write_backend(tmp_path: Path, name: str, source: str) -> str:
    """Write a project's backend package ``name`` (its ``base.py`` is ``source``) in tmp_path."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(source)
    return name
