"""The failover machinery itself: a streaming hot standby of our own PostgreSQL, promoted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.conftest import unavailable

from .harness import wait_until
from .servers import PgInstance, ServerError, cleanup_stale, launch

pytestmark = pytest.mark.postgresql


@pytest.fixture
def primary() -> Iterator[PgInstance]:
    cleanup_stale()
    try:
        server = launch("postgresql")
    except ServerError as exc:
        unavailable(f"could not start a PostgreSQL server of our own: {exc}")
    assert isinstance(server, PgInstance)
    try:
        yield server
    finally:
        server.destroy()


def test_standby_replicates_and_promotes(primary: PgInstance) -> None:
    """A row written on the primary shows on the standby; promoted, the standby takes writes."""
    started = time.monotonic()
    standby = primary.make_standby()
    try:
        made = time.monotonic() - started
        assert standby.port != primary.port and standby.root != primary.root
        assert not primary.in_recovery() and standby.in_recovery()
        assert primary.scalar("SELECT count(*) FROM pg_stat_replication") == 1

        primary.execute("CREATE TABLE failover (id int PRIMARY KEY, side text)")
        primary.execute("INSERT INTO failover VALUES (1, 'primary')")
        lsn = primary.scalar("SELECT pg_current_wal_lsn()::text")
        assert wait_until(
            lambda: standby.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]),
            timeout=10,
        ), "the standby did not replay the primary's write within 10 s"
        assert standby.query("SELECT id, side FROM failover") == [(1, "primary")]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            standby.execute("INSERT INTO failover VALUES (2, 'standby')")

        before = time.monotonic()
        promoted = standby.promote() - before
        assert not standby.in_recovery()
        standby.execute("INSERT INTO failover VALUES (2, 'standby')")
        assert standby.query("SELECT id, side FROM failover ORDER BY id") == [
            (1, "primary"),
            (2, "standby"),
        ]
        print(f"STANDBY made in {made:.2f} s, promoted in {promoted:.2f} s")
    finally:
        standby.destroy()
    assert not standby.root.exists()
