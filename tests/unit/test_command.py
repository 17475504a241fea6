"""``manage.py sapool`` in-process: SQLite, an unreachable server, never the password.

The arithmetic is tested in test_capacity.py, the settings in test_aliases.py;
against real servers in tests/integration/test_observability.py.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_sapool.management.commands import sapool
from django_sapool.management.commands.sapool import Command

from .pools import PASSWORD, UNREACHABLE_PG

pytestmark = pytest.mark.usefixtures("clean_registry")


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(Command(), *args, stdout=out)
    return out.getvalue()


def run_failing(*args: str) -> tuple[str, str]:
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(Command(), *args, stdout=out)
    return out.getvalue(), str(info.value)


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
    assert '"PASSWORD"' not in json.dumps(data)  # the setting; PASSWORD_PROVIDER is an option
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


def test_threads_option_reaches_the_capacity_table() -> None:
    data = json.loads(run("--workers", "2", "--threads", "3", "--processes", "1", "--json"))
    assert data["capacity"]["workers"] == 2
    assert (data["capacity"]["processes"], data["capacity"]["threads"]) == (1, 3)
    with pytest.raises(CommandError, match="--processes: must be an integer >= 0"):
        call_command(Command(), "--processes", "-1", stdout=io.StringIO())


@pytest.fixture
def with_password(extra_alias: Any, tmp_path: Path) -> None:
    """A SQLite alias and an unreachable PostgreSQL alias, both with a password."""
    extra_alias(
        "lite",
        ENGINE="django_sapool.backends.sqlite3",
        NAME=str(tmp_path / "lite.sqlite3"),
        PASSWORD=PASSWORD,
    )
    extra_alias("pg", **UNREACHABLE_PG)


@pytest.mark.parametrize("output", ["text", "json"])
def test_the_password_is_never_shown(
    with_password: None, output: str, caplog: pytest.LogCaptureFixture, capsys: Any
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


def test_native_paths_are_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    paths = {"socket poll": "libc poll(2), GIL kept", "mysqlclient status": "off (test)"}
    monkeypatch.setattr(sapool, "native_paths", lambda: paths)
    lines = run().splitlines()
    assert lines[1] == (
        "Native helpers: socket poll: libc poll(2), GIL kept; mysqlclient status: off (test)"
    )
    assert json.loads(run("--json"))["native"] == paths
    monkeypatch.setattr(sapool, "native_paths", dict)
    assert run().splitlines()[1] == ""  # none to show: no line
    assert json.loads(run("--json"))["native"] == {}


def test_native_paths_come_from_the_drivers() -> None:
    try:
        from django_sapool.drivers.native import native_paths
    except ImportError:
        assert sapool.native_paths() == {}
    else:
        assert sapool.native_paths() == native_paths()


def test_a_bad_alias_does_not_fail_the_live_check_of_the_others(
    extra_alias: Any, tmp_path: Path
) -> None:
    """Its errors once under Settings; each other alias's live check, its own outcome.

    Run in a new thread, as in a fresh ``manage.py`` process: no wrapper exists
    yet, and making one refuses every alias's bad settings. Before, every live
    check FAILED with the bad alias's CONN_MAX_AGE error.
    """
    import threading

    extra_alias(
        "bad",
        ENGINE="django_sapool.backends.sqlite3",
        NAME=str(tmp_path / "bad.db"),
        CONN_MAX_AGE=60,
        POOL_OPTIONS={"POOL_SIZ": 3},
    )
    extra_alias(
        "files",
        ENGINE="django_sapool.backends.sqlite3",
        NAME=str(tmp_path / "files.db"),
        POOL_OPTIONS={"PASSWORD_PROVIDER": "os.getcwd"},  # bad on SQLite
    )
    extra_alias("dead", ENGINE="django_sapool.backends.sqlite3", NAME=str(tmp_path / "no/x.db"))
    outcome: dict[str, Any] = {}

    def command() -> None:
        try:
            outcome["out"], outcome["error"] = run_failing("--check")
        finally:
            connections.close_all()

    from django.db import connections

    thread = threading.Thread(target=command)
    thread.start()
    thread.join(60)
    out, error = outcome["out"], outcome["error"]
    assert error == (
        "django_sapool: invalid settings for alias 'bad', 'files'; "
        "live check failed for alias 'dead'"
    )
    lines = out.splitlines()
    live = lines[lines.index("Live check") + 1 :]
    assert live[0].split() == ["default", "dead"]
    assert live[1].split() == ["result", "ok", "FAILED"]
    assert "error: dead: OperationalError: unable to open database file" in live
    assert "not checked: bad (invalid settings, see above)" in live
    assert "not checked: files (invalid settings, see above)" in live
    # Each error of the bad aliases once, under their own names.
    assert sum("settings.DATABASES['bad']" in line for line in lines) == 2
    assert [line for line in lines if "settings.DATABASES['files']" in line] == [
        "error: files: settings.DATABASES['files']['POOL_OPTIONS']['PASSWORD_PROVIDER'] has "
        "no use with the 'sqlite' backend, which connects without a password: remove it."
    ]
    assert all(
        line.startswith(("error: bad: ", "error: files: "))
        for line in lines
        if "DATABASES[" in line
    )
