"""The pool's lifecycle (pool.py): where connections are retired, and what it logs.

Log levels of the django_sapool logger: lifecycle INFO, traffic DEBUG, trouble WARNING.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

from django_sapool import housekeeper, registry
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper
from django_sapool.state import state_of

from .pools import checkout_after_a_wait, sqlite_settings

pytestmark = pytest.mark.usefixtures("clean_registry")

LOGGER = "django_sapool"


def ours(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_checkout_and_return_are_debug(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    wrapper = SqliteWrapper(sqlite_settings(tmp_path), "default")
    wrapper.ensure_connection()
    wrapper.close()
    debug = ours(caplog, logging.DEBUG)
    thread = threading.current_thread().name
    assert (
        f"django_sapool: checked out a connection of alias 'default' in thread {thread!r} "
        f"(1 checked out, 0 idle)" in debug
    )
    assert (
        f"django_sapool: returned a connection of alias 'default' checked out in thread "
        f"{thread!r} (0 checked out, 1 idle)" in debug
    )
    assert any("created pool for alias 'default'" in m for m in ours(caplog, logging.INFO))


def test_above_debug_the_hot_path_does_not_even_format(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    wrapper = SqliteWrapper(sqlite_settings(tmp_path), "default")
    wrapper.ensure_connection()
    wrapper.close()
    from django_sapool import pool as pool_module

    with mock.patch.object(pool_module.logger, "debug") as debug:
        for _ in range(3):
            wrapper.ensure_connection()
            wrapper.close()
    debug.assert_not_called()
    assert not any("checked out" in r.getMessage() for r in caplog.records)


def test_pool_creation_and_disposal_are_info(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    wrapper = SqliteWrapper(sqlite_settings(tmp_path, POOL_SIZE=3), "default")
    wrapper.ensure_connection()
    wrapper.close()
    registry.dispose()
    info = ours(caplog, logging.INFO)
    created = [m for m in info if m.startswith("django_sapool: created pool for alias 'default'")]
    assert len(created) == 1 and "POOL_SIZE=3" in created[0]
    assert any(m.startswith("django_sapool: disposed pool for alias 'default'") for m in info)


def test_a_wait_is_logged_at_debug(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    checkout_after_a_wait(sqlite_settings(tmp_path, POOL_SIZE=1, MAX_OVERFLOW=0)).close()
    waits = [m for m in ours(caplog, logging.DEBUG) if m.startswith("django_sapool: waited ")]
    assert len(waits) == 1 and "for a connection of alias 'default'" in waits[0]


def test_invalidation_is_a_warning(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    wrapper = SqliteWrapper(sqlite_settings(tmp_path), "default")
    wrapper.ensure_connection()
    raw = wrapper.connection
    wrapper.close()
    raw.close()  # dies while idle: discarded at the next checkout
    wrapper.ensure_connection()
    wrapper.close()
    warnings = ours(caplog, logging.WARNING)
    assert warnings == ["django_sapool: discarded a connection of alias 'default' (unusable)"]


def test_a_leaked_connection_is_a_warning(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    settings_dict = sqlite_settings(tmp_path)

    def leak() -> None:
        wrapper = SqliteWrapper(settings_dict, "default")
        wrapper.ensure_connection()  # never closed; the wrapper dies with the thread

    thread = threading.Thread(target=leak, name="leaky-worker")
    thread.start()
    thread.join(5)
    gc.collect()
    deadline = time.monotonic() + 5
    while not ours(caplog, logging.WARNING) and time.monotonic() < deadline:
        time.sleep(0.01)
    (warning,) = ours(caplog, logging.WARNING)
    assert "checked out by thread 'leaky-worker' was never returned" in warning


# -- retired: one function, counted by reason ------------------------------------------


def test_a_return_never_sweeps_the_housekeeper_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle connections past IDLE_TIMEOUT stay open through returns until housekeep()."""
    monkeypatch.setattr(housekeeper, "register", lambda pool: None)  # no thread: returns only
    settings_dict = sqlite_settings(tmp_path, IDLE_TIMEOUT=0.05, MIN_IDLE=0)
    first, second = SqliteWrapper(settings_dict, "default"), SqliteWrapper(settings_dict, "default")
    first.ensure_connection()
    second.ensure_connection()
    first.close()
    pool = first.sapool_pool()
    time.sleep(0.1)
    second.close()  # a return: it must not close the idle one
    assert pool.status().idle == 2
    assert housekeeper.housekeep(pool) == 1  # the one idle longer than IDLE_TIMEOUT
    status = pool.status()
    assert (status.idle, status.connections_idle_closed, status.connections_closed) == (1, 1, 1)


def test_every_close_is_counted_once_by_its_reason(tmp_path: Path) -> None:
    """Broken, evicted and returned-after-evict closes, each counted where it happens."""
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=3, MAX_OVERFLOW=0)
    wrappers = [SqliteWrapper(settings_dict, "default") for _ in range(3)]
    for wrapper in wrappers:
        wrapper.ensure_connection()
    pool = wrappers[0].sapool_pool()
    wrappers[0].connection.close()  # the driver now reports it closed: broken
    wrappers[0].close()
    wrappers[1].close()  # idle
    assert pool.evict("a test") == 1  # the idle one, now
    wrappers[2].close()  # lent during evict(): closed on return
    status = pool.status()
    assert status.connections_invalidated == 1
    assert status.evictions == 1
    assert status.connections_closed == 3
    assert status.checked_out == 0
    assert pool.opened.all() == []  # (SQLAlchemy keeps the broken one's empty record)


def test_a_dead_wrapper_never_hashed_is_forgotten_quietly(tmp_path: Path) -> None:
    # A weak reference first hashed after its referent died cannot be hashed
    # ("weak object has gone away"): registry.owner_gone must still go through
    # every pool, and such an owner was never remembered anywhere.
    wrapper = SqliteWrapper(sqlite_settings(tmp_path), "default")
    wrapper.ensure_connection()
    wrapper.close()  # one remembered connection, for that wrapper
    pool = wrapper.sapool_pool()

    class Borrower:
        pass

    borrower = Borrower()
    never_hashed = weakref.ref(borrower)
    del borrower
    gc.collect()
    with pytest.raises(TypeError):
        hash(never_hashed)
    registry.owner_gone(never_hashed)  # raised TypeError from Remembered.forget()
    assert len(pool.remembered) == 1  # the live wrapper's is still there
    del wrapper
    gc.collect()
    assert len(pool.remembered) == 0  # its own death still gives it back


def test_exhaustion_is_blamed_on_the_server_only_when_its_answers_are_late() -> None:
    """A connect under way for a moment (a cold start, TIMEOUT=0) is no silent server."""
    from django_sapool.conf import PoolOptions
    from django_sapool.leaks import CONNECTING, PINGING, SLOW_ANSWER, Busy, Lending

    lending = Lending("default")
    options = PoolOptions(pool_size=1, max_overflow=0, timeout=0.0)
    thread = threading.current_thread()
    lending.busy[1] = Busy(thread, CONNECTING, time.monotonic())
    message = lending.exhausted_message(options)
    assert "0 held by the application, 1 connecting to and 0 pinging" in message
    assert "Raise POOL_SIZE or MAX_OVERFLOW" in message
    lending.busy[1] = Busy(thread, PINGING, time.monotonic() - SLOW_ANSWER - 1)
    assert "The server or the network is not answering" in lending.exhausted_message(options)


def test_a_record_returned_and_reconnecting_meanwhile_is_no_longer_lent(
    tmp_path: Path,
) -> None:
    """Leak reports, the reclaim of ended threads' connections and a dead owner's lookup
    read the lent records from a copy, while another thread returns one and a third
    reconnects it, which empties its info first: that one is skipped (it was a
    KeyError raised to a checkout about to wait, found by a helper's hunt).
    """
    wrapper = SqliteWrapper(sqlite_settings(tmp_path), "default")
    wrapper.ensure_connection()
    lending = wrapper.sapool_pool().lending
    record = wrapper._sapool_record
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    state_of(record).thread = ended  # its borrower ended: reclaim would collect
    lending.lent[0] = SimpleNamespace(info={})  # returned, and reconnecting now
    assert lending.reclaim_from_ended_threads() is True
    assert lending.report(time.monotonic() + 3600, 1.0, "hint") == 1  # the real one only
    assert lending.abandoned_by(state_of(record).owner) == [record]
    del lending.lent[0]
    wrapper.close()
