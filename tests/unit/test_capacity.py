"""Capacity arithmetic: connections per process and per server, against max_connections."""

from __future__ import annotations

from typing import Any

import pytest

from django_sapool.aliases import AliasInfo, describe
from django_sapool.capacity import TIGHT, capacity, per_process, server_key, thread_notes, verdict
from django_sapool.livecheck import LiveCheck


def info(alias: str, port: int = 5432, vendor: str = "postgresql", **options: Any) -> AliasInfo:
    settings_dict = {
        "ENGINE": f"django_sapool.backends.{vendor}",
        "NAME": "app",
        "HOST": "db",
        "PORT": port,
        "USER": "app",
        "PASSWORD": "pw",
        "POOL_OPTIONS": options,
    }
    return describe(alias, settings_dict)


def live(alias: str, max_connections: int, in_use: int = 3) -> LiveCheck:
    return LiveCheck(alias, ok=True, max_connections=max_connections, connections_in_use=in_use)


def test_capacity_sums_aliases_on_one_server() -> None:
    infos = [
        info("default", POOL_SIZE=10, MAX_OVERFLOW=10),
        info("replica", POOL_SIZE=3, MAX_OVERFLOW=0),
        info("other", port=6432, POOL_SIZE=5, MAX_OVERFLOW=0),
        info("mysql", port=3306, vendor="mysql", POOL_SIZE=2, MAX_OVERFLOW=2),
    ]
    checks = {
        "default": live("default", 200),
        # Checked after "default", whose pooled connection it counts too.
        "replica": live("replica", 200, in_use=4),
        "other": live("other", 20),
        "mysql": live("mysql", 151),
    }
    servers = {s.server: s for s in capacity(infos, checks, processes=4, checked=True)}
    main = servers["postgresql db:5432"]
    assert (main.aliases, main.per_process, main.total) == (["default", "replica"], 23, 92)
    assert (main.max_connections, main.connections_in_use, main.verdict) == (200, 4, "ok")
    assert main.message == (
        "OK: postgresql db:5432: at most 4 processes x (default 10+10 + replica 3+0) = 92 "
        "connections, 46% of max_connections=200."
    )
    assert servers["postgresql db:6432"].verdict == "tight"  # 20 of 20
    assert servers["mysql db:3306"].total == 16


@pytest.mark.parametrize(
    ("max_connections", "verdict", "start"),
    [(100, "ok", "OK: "), (90, "tight", "WARNING: "), (79, "exceeds", "WARNING: ")],
)
def test_capacity_verdicts(max_connections: int, verdict: str, start: str) -> None:
    (server,) = capacity([info("default")], {"default": live("default", max_connections)}, 4, True)
    assert (server.total, server.verdict) == (80, verdict)
    assert server.message.startswith(start)
    if verdict == "exceeds":
        assert f"more than max_connections={max_connections}" in server.message


def test_capacity_unbounded_and_unknown() -> None:
    (unbounded,) = capacity([info("default", MAX_OVERFLOW=-1)], {}, 2, False)
    assert (unbounded.verdict, unbounded.total, unbounded.per_process) == ("unbounded", None, None)
    assert "MAX_OVERFLOW=-1 on alias 'default'" in unbounded.message
    (unknown,) = capacity([info("default")], {}, 2, False)
    assert (unknown.verdict, unknown.total) == ("unknown", 40)
    assert "run with --check to compare" in unknown.message
    failed = {"default": LiveCheck("default", ok=False, error="refused")}
    (after_failure,) = capacity([info("default")], failed, 2, True)
    assert "the live check failed" in after_failure.message


def test_thread_notes() -> None:
    notes = thread_notes([info("default", POOL_SIZE=4, MAX_OVERFLOW=2)], threads=8, processes=3)
    assert notes == [
        "note: 8 threads per process share at most 6 connections of alias 'default' "
        "(POOL_SIZE=4 + MAX_OVERFLOW=2); when more than 6 run queries at once, the others "
        "wait up to TIMEOUT=30s.",
        "note: Django's default backend would hold one connection per thread: up to "
        "3 processes x 8 threads = 24 per alias.",
    ]
    assert thread_notes([info("default")], threads=8, processes=1)[0].startswith(
        "note: Django's default"
    )


def test_threads_cap_what_a_process_can_open() -> None:
    infos = [
        info("default", POOL_SIZE=10, MAX_OVERFLOW=10),
        info("replica", POOL_SIZE=2, MAX_OVERFLOW=0),
        info("other", port=6432, MAX_OVERFLOW=-1),
    ]
    checks = {"default": live("default", 100), "other": live("other", 100)}
    servers = {s.server: s for s in capacity(infos, checks, 4, True, threads=8)}
    main = servers["postgresql db:5432"]
    # default: min(8, 20) = 8; replica: 2 (fewer than the threads).
    assert (main.per_process, main.total, main.verdict) == (10, 40, "ok")
    assert "(default min(8 threads, 10+10) + replica 2+0) = 40 connections" in main.message
    # Threads bound even an unlimited overflow.
    other = servers["postgresql db:6432"]
    assert (other.per_process, other.total, other.verdict) == (8, 32, "ok")
    assert "other min(8 threads, 10+unlimited)" in other.message


@pytest.mark.parametrize(
    ("vendor", "host", "port", "key"),
    [
        ("postgresql", "db", "", "postgresql db:5432"),
        ("postgresql", "db", "6432", "postgresql db:6432"),
        ("mysql", "", "", "mysql local socket:3306"),
        ("postgresql", "", "5433", "postgresql local socket:5433"),
        ("oracle", "", "", "oracle local socket"),
    ],
)
def test_server_key_fills_in_the_vendors_default_port(
    vendor: str, host: str, port: str, key: str
) -> None:
    assert server_key(vendor, host, port) == key


def test_per_process() -> None:
    assert per_process({"POOL_SIZE": 5, "MAX_OVERFLOW": 3}, None) == (8, "5+3")
    assert per_process({"POOL_SIZE": 5, "MAX_OVERFLOW": -1}, None) == (None, "5+unlimited")
    assert per_process({"POOL_SIZE": 5, "MAX_OVERFLOW": 3}, 4) == (4, "min(4 threads, 5+3)")
    assert per_process({"POOL_SIZE": 5, "MAX_OVERFLOW": 3}, 8) == (8, "5+3")  # not below
    assert per_process({"POOL_SIZE": 5, "MAX_OVERFLOW": -1}, 9) == (
        9,
        "min(9 threads, 5+unlimited)",
    )


def test_verdict_thresholds() -> None:
    assert TIGHT == 0.8
    assert [verdict(total, 100) for total in (80, 81, 100, 101)] == [
        "ok",
        "tight",
        "tight",
        "exceeds",
    ]


def test_sqlite_and_unpooled_aliases_are_left_out() -> None:
    sqlite = describe("lite", {"ENGINE": "django_sapool.backends.sqlite3", "NAME": "x.db"})
    plain = describe("plain", {"ENGINE": "django.db.backends.postgresql", "NAME": "app"})
    invalid = info("bad", POOL_SIZE="10")
    assert invalid.options is None and invalid.errors
    assert capacity([sqlite, plain, invalid], {}, 4, False) == []
