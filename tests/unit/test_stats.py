"""PoolStatus statistics: checkouts, waits (counted, timed, percentiles), recycles, sizes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from django_sapool import PoolExhausted, housekeeper, registry
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper
from django_sapool.stats import WAIT_WINDOW, PoolStatus, percentile

from .pools import Holder, sqlite_settings

pytestmark = pytest.mark.usefixtures("clean_registry")


def status_of(wrapper: SqliteWrapper) -> PoolStatus:
    return wrapper.sapool_pool().status()


def cycle(wrapper: SqliteWrapper) -> None:
    wrapper.ensure_connection()
    wrapper.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_new_fields_start_at_zero(tmp_path: Path) -> None:
    status = status_of(SqliteWrapper(sqlite_settings(tmp_path), "default"))
    assert (status.waiting, status.checkouts, status.checkout_waits) == (0, 0, 0)
    assert status.connections_recycled == 0
    assert (status.wait_ms_total, status.wait_ms_p50, status.wait_ms_max) == (0.0, 0.0, 0.0)


def test_quick_checkouts_count_but_never_wait(tmp_path: Path) -> None:
    wrapper = SqliteWrapper(sqlite_settings(tmp_path, POOL_SIZE=1, MAX_OVERFLOW=0), "default")
    for _ in range(5):
        cycle(wrapper)
    status = status_of(wrapper)
    assert (status.checkouts, status.checkout_waits, status.waiting) == (5, 0, 0)
    # Reading the status draws from the lock-free checkout counter: reads don't count.
    assert status_of(wrapper).checkouts == 5
    assert status.wait_ms_max == 0.0


def test_a_checkout_that_opens_overflow_does_not_wait(tmp_path: Path) -> None:
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=1, MAX_OVERFLOW=1)
    holder = Holder(settings_dict)
    try:
        wrapper = SqliteWrapper(settings_dict, "default")
        cycle(wrapper)
    finally:
        holder.stop()
    status = status_of(wrapper)
    assert (status.checkouts, status.checkout_waits, status.connections_opened) == (2, 0, 2)


def test_a_checkout_on_an_exhausted_pool_waits_and_is_timed(tmp_path: Path) -> None:
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=10)
    holder = Holder(settings_dict)
    wrapper = SqliteWrapper(settings_dict, "default")
    pool = wrapper.sapool_pool()
    seen_waiting: list[int] = []

    def watch_then_release() -> None:
        if wait_until(lambda: pool.status().waiting == 1):
            seen_waiting.append(pool.status().waiting)
        time.sleep(0.2)
        holder.stop()

    watcher = threading.Thread(target=watch_then_release)
    watcher.start()
    try:
        started = time.perf_counter()
        wrapper.ensure_connection()  # blocks until the holder returns its connection
        waited_ms = (time.perf_counter() - started) * 1000
        wrapper.close()
    finally:
        watcher.join(10)
        holder.stop()
    status = pool.status()
    assert seen_waiting == [1]
    assert (status.waiting, status.checkout_waits, status.checkouts) == (0, 1, 2)
    assert (status.timeouts, status.connections_opened) == (0, 1)
    assert 150 <= status.wait_ms_max <= waited_ms + 1
    # One wait: every percentile is that wait.
    assert status.wait_ms_p50 == status.wait_ms_p95 == status.wait_ms_p99 == status.wait_ms_max
    assert status.wait_ms_total == status.wait_ms_max


def test_a_timed_out_wait_counts_as_wait_and_timeout(tmp_path: Path) -> None:
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=0.1)
    holder = Holder(settings_dict)
    try:
        wrapper = SqliteWrapper(settings_dict, "default")
        with pytest.raises(PoolExhausted):
            wrapper.ensure_connection()
    finally:
        holder.stop()
    status = status_of(wrapper)
    assert (status.timeouts, status.checkout_waits, status.waiting) == (1, 1, 0)
    assert status.checkouts == 1  # the holder's; the timed-out one got nothing
    assert 90 <= status.wait_ms_max < 2000


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.5) == 7.0
    assert percentile([], 0.99) == 0.0


def test_percentiles_cover_the_last_wait_window_only(tmp_path: Path) -> None:
    pool = SqliteWrapper(sqlite_settings(tmp_path), "default").sapool_pool()
    for ms in range(1, 2001):  # what a waiting checkout records, without 2000 real waits
        pool.stats.wait_ms.append(float(ms))
    window = [float(ms) for ms in range(2001 - WAIT_WINDOW, 2001)]
    status = pool.status()
    assert status.wait_ms_max == 2000.0
    assert status.wait_ms_p50 == percentile(window, 0.50) == 1488.0
    assert status.wait_ms_p99 == percentile(window, 0.99)


def test_recycle_after_recycle_seconds_is_counted(tmp_path: Path) -> None:
    wrapper = SqliteWrapper(sqlite_settings(tmp_path, RECYCLE=0.05), "default")
    cycle(wrapper)
    time.sleep(0.15)
    cycle(wrapper)
    status = status_of(wrapper)
    assert status.connections_recycled == 1
    assert (status.connections_opened, status.connections_closed) == (2, 1)
    assert status.connections_invalidated == 0


def test_siblings_retired_by_an_invalidation_count_as_recycled(tmp_path: Path) -> None:
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=2, MAX_OVERFLOW=0, USE_LIFO=False)
    first, second = (SqliteWrapper(settings_dict, "default") for _ in range(2))
    first.ensure_connection()
    second.ensure_connection()
    dead = first.connection
    first.close()  # returned first: handed out first (FIFO)
    second.close()
    dead.close()  # dies while idle in the pool
    time.sleep(0.05)  # SQLAlchemy compares time.time() stamps
    third = SqliteWrapper(settings_dict, "default")
    third.ensure_connection()  # takes the dead one first (FIFO): discarded
    assert status_of(third).connections_invalidated == 1
    # Third and fourth get the discarded connection's slot, reconnected (not a
    # recycle), and the sibling, retired by the discard and reconnected (a
    # recycle), whichever comes first (the sibling is remembered by second).
    fourth = SqliteWrapper(settings_dict, "default")
    fourth.ensure_connection()
    status = status_of(fourth)
    assert (status.connections_invalidated, status.connections_recycled) == (1, 1)
    assert status.connections_opened == 4
    third.close()
    fourth.close()


def test_dispose_and_overflow_closes_are_not_recycles(tmp_path: Path) -> None:
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=1, MAX_OVERFLOW=1)
    holder = Holder(settings_dict)
    try:
        wrapper = SqliteWrapper(settings_dict, "default")
        cycle(wrapper)  # an overflow connection, closed when returned
    finally:
        holder.stop()
    pool = wrapper.sapool_pool()
    registry.dispose()
    status = pool.status()
    assert status.connections_closed == 2
    assert status.connections_recycled == 0


# -- sizes: connections that exist -------------------------------------------------


class GatedSqliteWrapper(SqliteWrapper):
    """A wrapper whose new connections wait for ``gate`` (a connect to a slow server)."""

    gate = threading.Event()

    def sapool_new_connection(self, conn_params: dict[str, Any]) -> Any:
        assert self.gate.wait(10)
        return super().sapool_new_connection(conn_params)


def test_checkouts_still_connecting_are_not_open_connections(tmp_path: Path) -> None:
    """Sizes count connections that exist: a connect under way (a silent server) is none yet."""
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=2, MAX_OVERFLOW=3)
    GatedSqliteWrapper.gate.set()
    first = GatedSqliteWrapper(settings_dict, "default")
    first.ensure_connection()
    pool = first.sapool_pool()
    GatedSqliteWrapper.gate.clear()
    connecting = [Holder(settings_dict, GatedSqliteWrapper, wait=False) for _ in range(3)]
    try:
        assert wait_until(lambda: pool.status().connecting == 3)
        status = pool.status()
        assert (status.size, status.checked_out, status.idle, status.overflow) == (1, 1, 0, 0)
        assert (status.connecting, status.connections_opened) == (3, 1)
        GatedSqliteWrapper.gate.set()
        assert all(holder.holding.wait(5) for holder in connecting)
        status = pool.status()
        assert (status.size, status.checked_out, status.idle, status.overflow) == (4, 4, 0, 2)
        assert (status.connecting, status.connections_opened) == (0, 4)
    finally:
        GatedSqliteWrapper.gate.set()
        for holder in connecting:
            holder.stop()
        first.close()


def test_overflow_counts_open_connections_beyond_pool_size(tmp_path: Path) -> None:
    """After evict(), connections closed at their return no longer count as overflow."""
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=2, MAX_OVERFLOW=2)
    holders = [Holder(settings_dict) for _ in range(4)]
    try:
        pool = SqliteWrapper(settings_dict, "default").sapool_pool()
        status = pool.status()
        assert (status.size, status.checked_out, status.overflow) == (4, 4, 2)
        pool.evict("a test")
        for holder in holders[:2]:
            holder.stop()  # closed when returned: their records stay in the queue, empty
        status = pool.status()
        assert status.connections_closed == 2
        assert (status.size, status.checked_out, status.idle, status.overflow) == (2, 2, 0, 0)
        holders[2].stop()
        status = pool.status()
        assert (status.size, status.checked_out, status.overflow) == (1, 1, 0)
    finally:
        for holder in holders:
            holder.stop()
    status = pool.status()
    assert (status.size, status.checked_out, status.idle, status.overflow) == (0, 0, 0, 0)


def test_an_idle_connection_past_recycle_counts_as_idle_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RECYCLE while idle closes it (idle closed); reconnecting it later is the recycle."""
    monkeypatch.setattr(housekeeper, "register", lambda pool: None)  # no thread: we sweep
    wrapper = SqliteWrapper(sqlite_settings(tmp_path, RECYCLE=0.05, RECYCLE_JITTER=0), "default")
    cycle(wrapper)
    pool = wrapper.sapool_pool()
    pool.remembered.give_back_idle(0.0, 0.0)  # to the queue, where the sweep looks
    time.sleep(0.1)
    assert housekeeper.housekeep(pool) == 1
    status = pool.status()
    assert (status.size, status.connections_closed, status.connections_idle_closed) == (0, 1, 1)
    assert status.connections_recycled == 0  # counted when the record connects again
    cycle(wrapper)
    status = pool.status()
    assert (status.connections_idle_closed, status.connections_recycled) == (1, 1)
    assert (status.connections_opened, status.size) == (2, 1)
