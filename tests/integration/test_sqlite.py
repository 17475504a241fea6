"""Pooled SQLite file databases: the same request-cycle and thread properties."""

from __future__ import annotations

import logging
from typing import Any

import pytest


def test_sequential_requests_reuse_one_connection(sqlite_run: Any) -> None:
    facts = sqlite_run("sequential", params={"n": 200})
    assert facts["failures"] == 0
    assert facts["distinct"] == 1
    (pool,) = facts["pools"]
    assert (pool["connections_opened"], pool["checked_out"], pool["idle"]) == (1, 0, 1)


def test_threads_share_at_most_pool_size_connections(sqlite_run: Any) -> None:
    facts = sqlite_run(
        "threads",
        params={"n_threads": 32, "cycles": 50},
        POOL_OPTIONS={"POOL_SIZE": 4, "MAX_OVERFLOW": 0, "TIMEOUT": 60},
    )
    assert (facts["ok"], facts["failed"]) == (32 * 50, 0)
    assert facts["distinct"] <= 4
    (pool,) = facts["pools"]
    assert 1 <= pool["connections_opened"] <= 4
    assert pool["checked_out"] == 0


def test_exhaustion(sqlite_run: Any) -> None:
    facts = sqlite_run(
        "exhaustion",
        params={"hold_seconds": 1.5},
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "TIMEOUT": 0.3},
    )
    assert facts["error"]["mro"][1] == "django.db.utils.OperationalError"
    assert 0.25 <= facts["elapsed"] < 1.2
    assert facts["after_code"] == 200


def test_connection_of_a_finished_thread_returns_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In-process, on the conftest's SQLite file database."""
    import gc
    import threading

    from django.db import connections

    import django_sapool

    def forgetful() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        # No close(): the thread ends with the connection checked out.

    thread = threading.Thread(target=forgetful, name="forgetful-worker")
    thread.start()
    thread.join()
    del thread
    (status,) = django_sapool.pool_status("default")
    assert status.checked_out == 1
    with caplog.at_level(logging.WARNING, logger="django_sapool"):
        gc.collect()
    (status,) = django_sapool.pool_status("default")
    assert (status.checked_out, status.idle) == (0, 1)
    assert "checked out by thread 'forgetful-worker' was never returned" in caplog.text


def test_after_fork_in_the_same_process_keeps_connections() -> None:
    """after_fork() called where nothing was forked (an initializer run in-process)."""
    from django.db import connections

    import django_sapool

    conn = connections["default"]
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    raw = conn.connection
    django_sapool.after_fork()
    assert conn.connection is raw  # not forgotten: this process owns it
    conn.close()
    (status,) = django_sapool.pool_status("default")
    assert status.checked_out == 0
