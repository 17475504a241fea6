"""``manage.py sapool`` in-process on SQLite, and its capacity arithmetic."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from django_sapool import registry
from django_sapool.management.commands.sapool import (
    AliasInfo,
    Command,
    LiveCheck,
    capacity,
    describe,
    thread_notes,
)


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    connections.close_all()
    registry.dispose()
    yield
    connections.close_all()
    registry.dispose()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(Command(), *args, stdout=out)
    return out.getvalue()


def run_failing(*args: str) -> tuple[str, str]:
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(Command(), *args, stdout=out)
    return out.getvalue(), str(info.value)


@pytest.fixture
def extra_alias(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Add aliases to the process's DATABASES (Django fills in its defaults)."""
    added: list[str] = []

    def add(alias: str, **settings_dict: Any) -> None:
        filled = connections.configure_settings({"default": settings_dict})["default"]
        monkeypatch.setitem(settings.DATABASES, alias, filled)
        added.append(alias)

    yield add
    for alias in added:
        if hasattr(connections._connections, alias):
            connections[alias].close()
            del connections[alias]


def test_shows_effective_options_and_no_pool_yet() -> None:
    text = run()
    lines = text.splitlines()
    assert lines[0].startswith("django_sapool 0.1.0 (Django ")
    assert "Settings (effective POOL_OPTIONS; the password is never shown)" in lines
    assert any(line.split() == ["ENGINE", "django_sapool.backends.sqlite3"] for line in lines)
    assert any(line.split() == ["POOL_SIZE", "10"] for line in lines)
    assert any(line.split() == ["RESET_ON_RETURN", "'rollback'"] for line in lines)
    assert "Pools in this process" in lines
    assert lines[-1].startswith("none yet: pools are per process")
    assert "Live check" not in text


def test_check_connects_and_lists_the_pool() -> None:
    text = run("--check")
    lines = text.splitlines()
    assert any(line.split() == ["result", "ok"] for line in lines)
    server = next(line for line in lines if line.startswith("server"))
    assert server.split()[1:] == ["SQLite", sqlite3.sqlite_version]
    assert any(line.split() == ["max_connections", "-"] for line in lines)
    pool_rows = {
        line.split()[0]: line.split()[1:]
        for line in lines[lines.index("Pools in this process") + 1 :]
    }
    assert pool_rows["vendor"] == ["sqlite"]
    assert pool_rows["checkouts"] == ["1"]
    assert pool_rows["checked_out"] == ["0"]  # the check returned what it took


def test_columns_are_aligned() -> None:
    lines = run("--check").splitlines()
    table = lines[lines.index("Live check") + 1 : lines.index("Live check") + 7]
    starts = {line.index(line.split()[-1]) for line in table if not line.startswith("server")}
    assert len(starts) == 1, table


def test_json_output() -> None:
    data = json.loads(run("--check", "--json"))
    (database,) = data["databases"]
    assert database["alias"] == "default" and database["pooled"] is True
    assert database["options"]["POOL_SIZE"] == 10
    assert "PASSWORD" not in json.dumps(data)
    (check,) = data["checks"]
    assert check["ok"] is True and check["server_version"].startswith("SQLite ")
    assert check["ping_ms"] >= 0 and check["connect_ms"] >= 0
    (pool,) = data["pools"]
    assert pool["alias"] == "default" and pool["checkouts"] == 1
    assert data["capacity"]["servers"] == []


def test_invalid_settings_are_reported_and_fail(extra_alias: Any, tmp_path: Path) -> None:
    extra_alias(
        "bad",
        ENGINE="django_sapool.backends.sqlite3",
        NAME=str(tmp_path / "bad.db"),
        POOL_OPTIONS={"POOL_SIZE": 0, "PREPING": True},
    )
    out, error = run_failing("--check")
    assert "error: bad: settings.DATABASES['bad']['POOL_OPTIONS']['POOL_SIZE'] must be" in out
    assert "unknown key 'PREPING'. Did you mean 'PRE_PING'?" in out
    assert error == "django_sapool: invalid settings for alias 'bad'"
    assert any(line.split() == ["result", "ok"] for line in out.splitlines())  # default


def test_a_failed_live_check_exits_non_zero(extra_alias: Any, tmp_path: Path) -> None:
    extra_alias(
        "broken", ENGINE="django_sapool.backends.sqlite3", NAME=str(tmp_path / "no" / "x.db")
    )
    out, error = run_failing("--check", "--database", "broken")
    assert any(line.split() == ["result", "FAILED"] for line in out.splitlines())
    assert "error: broken: OperationalError: unable to open database file" in out
    assert error == "django_sapool: live check failed for alias 'broken'"


def test_not_pooled_aliases_are_named(extra_alias: Any) -> None:
    extra_alias("memory", ENGINE="django_sapool.backends.sqlite3", NAME=":memory:")
    extra_alias("plain", ENGINE="django.db.backends.sqlite3", NAME=":memory:")
    text = run("--check")
    assert "memory: in-memory SQLite: not pooled" in text
    assert "Not pooled: plain (django.db.backends.sqlite3)" in text
    assert [c["alias"] for c in json.loads(run("--check", "--json"))["checks"]] == ["default"]


def test_options_errors() -> None:
    with pytest.raises(CommandError, match="unknown alias 'nope'"):
        call_command(Command(), "--database", "nope", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--workers: must be an integer >= 1"):
        call_command(Command(), "--workers", "0", stdout=io.StringIO())


def test_workers_without_a_server_alias() -> None:
    assert "No pooled server alias" in run("--workers", "4")


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
        "other": live("other", 20),
        "mysql": live("mysql", 151),
    }
    servers = {s.server: s for s in capacity(infos, checks, processes=4, checked=True)}
    main = servers["postgresql db:5432"]
    assert (main.aliases, main.per_process, main.total) == (["default", "replica"], 23, 92)
    assert (main.max_connections, main.connections_in_use, main.verdict) == (200, 3, "ok")
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


def test_threads_option_reaches_the_capacity_table() -> None:
    data = json.loads(run("--workers", "2", "--threads", "3", "--processes", "1", "--json"))
    assert data["capacity"]["workers"] == 2
    assert (data["capacity"]["processes"], data["capacity"]["threads"]) == (1, 3)
    with pytest.raises(CommandError, match="--processes: must be an integer >= 0"):
        call_command(Command(), "--processes", "-1", stdout=io.StringIO())
