"""Connect to one alias through its pool, ping it, and ask its server for its limits.

What the server is asked is each backend's business (``sapool_server_facts``,
in django_sapool/backends/<vendor>/base.py); this module times the connect and
the pings and turns any failure into a finding, with the password masked.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Collection
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from .aliases import leaving_out
from .backends import ServerFacts
from .wrapper import PooledDatabaseWrapperMixin

PINGS = 3  # the median of three: one slow ping (a page fault, a GC) is not the figure


@dataclass
class LiveCheck:
    """The outcome of connecting to one alias."""

    alias: str
    ok: bool = False
    error: str | None = None
    connect_ms: float | None = None
    ping_ms: float | None = None
    server_version: str | None = None
    max_connections: int | None = None
    connections_in_use: int | None = None


def mask(text: str, password: object) -> str:
    """Flatten a driver's error message to one line, masking the password if it has it."""
    text = " ".join(text.split())
    if isinstance(password, str) and password:
        return text.replace(password, "********")
    return text


def _server_facts(wrapper: BaseDatabaseWrapper) -> ServerFacts | None:
    """Ask the backend's hook; None for a project's pooled backend that has none."""
    hook = getattr(wrapper, "sapool_server_facts", None)
    if hook is None:
        return None
    with wrapper.cursor() as cursor:
        facts: ServerFacts = hook(cursor)
    return facts


def live_check(alias: str, password: object, reported: Collection[str] = ()) -> LiveCheck:
    """Connect through the pool, ping, and ask the server for its version and limits.

    ``reported``: aliases whose invalid settings the caller reports itself.
    Making a wrapper refuses every alias's bad settings; this alias's check
    must show its own outcome, not another alias's error.
    """
    result = LiveCheck(alias)
    try:
        with leaving_out(reported):
            wrapper = connections[alias]
        if not isinstance(wrapper, PooledDatabaseWrapperMixin):
            raise ImproperlyConfigured(f"alias {alias!r} is not a django_sapool backend")
        # Called from a running process (call_command), this thread may already
        # hold a connection: use it, and leave it as it was.
        was_connected = wrapper.connection is not None
        started = time.perf_counter()
        wrapper.ensure_connection()
        result.connect_ms = round((time.perf_counter() - started) * 1000, 3)
        try:
            pings = []
            for _ in range(PINGS):
                started = time.perf_counter()
                wrapper.sapool_driver.ping(wrapper.connection)
                pings.append((time.perf_counter() - started) * 1000)
            result.ping_ms = round(statistics.median(pings), 3)
            facts = _server_facts(wrapper)
            if facts is not None:
                result.server_version = facts.version
                result.max_connections = facts.max_connections
                result.connections_in_use = facts.connections_in_use
        finally:
            if not was_connected:
                wrapper.close()
        result.ok = True
    except Exception as exc:  # any failure is the finding; report it, don't crash
        result.error = mask(f"{type(exc).__name__}: {exc}".strip(), password)
    return result
