"""The django-health-check plugin's decisions, on real pools (SQLite) and real PoolStatus objects.

Runs with whichever django-health-check pip installs next to the Django under
test: 3.24 for Django 4.2 (a plugin registry, ``check_status()``), 4.x for
Django >= 5.2 (no registry, ``run()`` and ``timeout``). The server cases
(unreachable, silent, PostgreSQL and MariaDB) are in
tests/integration/test_health_check.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connections
from django.test import RequestFactory

import django_sapool
from django_sapool.stats import PoolStatus

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
if not IN_CI:  # under CI a missing django-health-check (the test extra has it) fails the run
    pytest.importorskip("health_check", reason="pip install 'django-sapool[health]'")
import health_check  # noqa: E402
from health_check.exceptions import ServiceUnavailable  # noqa: E402
from health_check.views import HealthCheckView  # noqa: E402

from django_sapool.conf import read_pool_options  # noqa: E402
from django_sapool.contrib.health_check import PooledDatabase, pooled_checks  # noqa: E402
from django_sapool.contrib.health_check.apps import SapoolHealthCheckConfig  # noqa: E402
from django_sapool.contrib.health_check.probe import (  # noqa: E402
    bound,
    exhausted,
    pooled_aliases,
    probe,
)

pytestmark = pytest.mark.usefixtures("clean_registry")

PASSWORD = "Zebra-4711-do-not-leak"
V3 = health_check.__version__.startswith("3.")
#: Keys the probe of an exhausted pool must leave as they were.
UNCHANGED = ("checkouts", "checkout_waits", "waiting", "timeouts", "checked_out", "size")


def a_status(**values: Any) -> PoolStatus:
    """A real pool's PoolStatus, with the sizes of the case at hand."""
    connections["default"].ensure_connection()
    connections["default"].close()
    (status,) = django_sapool.pool_status("default")
    return dataclasses.replace(status, **values)


def status_of(alias: str) -> dict[str, Any]:
    (status,) = django_sapool.pool_status(alias)
    return {key: getattr(status, key) for key in UNCHANGED}


@pytest.mark.parametrize(
    ("pool_size", "max_overflow", "checked_out", "idle", "waiting", "found"),
    [
        (2, 1, 0, 0, 0, None),  # nothing open yet
        (2, 1, 1, 1, 0, None),
        (2, 1, 2, 0, 0, None),  # the overflow is left
        (2, 1, 3, 1, 0, None),  # one just returned, nobody waits for it
        (2, 1, 3, 0, 0, "all 3 connections checked out (POOL_SIZE=2 + MAX_OVERFLOW=1), none idle"),
        (2, 0, 2, 0, 0, "all 2 connections checked out (POOL_SIZE=2 + MAX_OVERFLOW=0)"),
        (2, 1, 3, 0, 4, "4 thread(s) waiting for a connection, 3 checked out"),
        (2, 1, 3, 1, 1, "1 thread(s) waiting"),  # the returned one goes to a waiter
        (0, 2, 2, 0, 0, "all 2 connections checked out (POOL_SIZE=0 + MAX_OVERFLOW=2)"),
        (2, -1, 500, 0, 0, None),  # no overflow limit: a checkout never waits
        # A connection being opened holds its slot (status() counts it apart):
        (1, 0, (0, 1), 0, 0, "all 1 connections checked out, 1 of them connecting"),
        (2, 1, (2, 1), 0, 0, "all 3 connections checked out, 1 of them connecting"),
        (2, 1, (1, 1), 0, 0, None),
    ],
)
def test_the_exhaustion_rule(
    pool_size: int,
    max_overflow: int,
    checked_out: int | tuple[int, int],
    idle: int,
    waiting: int,
    found: str | None,
) -> None:
    checked_out, connecting = checked_out if isinstance(checked_out, tuple) else (checked_out, 0)
    status = a_status(
        pool_size=pool_size,
        max_overflow=max_overflow,
        checked_out=checked_out,
        connecting=connecting,
        idle=idle,
        size=checked_out + idle,
        waiting=waiting,
    )
    reason = exhausted(status)
    if found is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith("pool exhausted: ") and found in reason


@pytest.fixture
def busy(extra_alias: Any, tmp_path: Path) -> Iterator[tuple[str, threading.Event]]:
    """An alias of 1 + 1 connections, both held by two other threads until the event."""
    extra_alias(
        "busy",
        ENGINE="django_sapool.backends.sqlite3",
        NAME=str(tmp_path / "busy.sqlite3"),
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 1, "TIMEOUT": 5},
    )
    release, ready = threading.Event(), threading.Barrier(3)

    def hold() -> None:
        connections["busy"].ensure_connection()
        ready.wait(10)
        release.wait(10)
        connections["busy"].close()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    ready.wait(10)
    yield "busy", release
    release.set()
    for thread in threads:
        thread.join(10)


def test_an_exhausted_pool_is_reported_without_a_checkout(
    busy: tuple[str, threading.Event],
) -> None:
    alias, release = busy
    before = status_of(alias)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        PooledDatabase(alias=alias).run()
    seconds = time.monotonic() - started
    assert seconds < 0.5  # a checkout would have waited TIMEOUT = 5 s
    assert status_of(alias) == before and before["checked_out"] == 2
    message = caught.value.message
    assert message == (
        "alias 'busy': pool exhausted: all 2 connections checked out "
        "(POOL_SIZE=1 + MAX_OVERFLOW=1), none idle; not probed (a checkout would wait in "
        "the queue)"
    )

    release.set()
    for _ in range(500):
        if status_of(alias)["checked_out"] == 0:
            break
        time.sleep(0.01)
    returned = status_of(alias)
    PooledDatabase(alias=alias).run()  # healthy again: no exception
    after = status_of(alias)
    assert after["checkouts"] == returned["checkouts"] + 1  # the probe's own checkout
    assert (after["checked_out"], after["checkout_waits"]) == (0, 0)
    assert connections[alias].connection is None  # returned at once


def test_the_endpoint_answers_200_then_500(busy: tuple[str, threading.Event]) -> None:
    """HealthCheckView with pooled_checks(), asked for JSON."""
    view = HealthCheckView.as_view(checks=pooled_checks())  # now: it reads DATABASES
    response = view(RequestFactory().get("/health/", {"format": "json"}))
    if inspect.isawaitable(response):  # 4.x: an async view
        pending = response

        async def served() -> Any:
            return await pending

        response = async_to_sync(served)()
    assert response.status_code == 500
    body = json.loads(response.content)
    assert body["PooledDatabase(alias='default')"] == "OK"
    assert "pool exhausted" in body["PooledDatabase(alias='busy')"]


def test_an_unreachable_database(extra_alias: Any, tmp_path: Path) -> None:
    extra_alias("gone", ENGINE="django_sapool.backends.sqlite3", NAME=str(tmp_path / "no/x.db"))
    problem = probe("gone")
    assert problem is not None
    assert problem.startswith("alias 'gone': server unreachable (")
    assert problem.endswith("s): OperationalError: unable to open database file")
    assert connections["gone"].connection is None


def test_a_check_run_inside_an_event_loop_says_so_not_unreachable(
    extra_alias: Any, tmp_path: Path
) -> None:
    """Under gunicorn's gevent worker, django-health-check's executor runs in the loop.

    Django refuses database access there (SynchronousOnlyOperation), which the
    probe reported as "server unreachable" with a healthy server.
    """
    import asyncio

    extra_alias("looped", ENGINE="django_sapool.backends.sqlite3", NAME=str(tmp_path / "l.db"))

    async def in_the_loop() -> str | None:
        return probe("looped")

    problem = asyncio.run(in_the_loop())
    assert problem is not None
    assert problem.startswith("alias 'looped': not probed: You cannot call this from an async")
    assert "under gunicorn's gevent worker it cannot run" in problem
    assert "unreachable" not in problem


def test_the_password_is_masked_and_no_cause_is_chained(
    extra_alias: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra_alias(
        "secret",
        ENGINE="django_sapool.backends.sqlite3",
        NAME=str(tmp_path / "secret.db"),
        PASSWORD=PASSWORD,
    )
    wrapper = connections["secret"]

    def refuse() -> None:
        raise OperationalError(f'password authentication failed ("{PASSWORD}")\nfor "app"')

    monkeypatch.setattr(wrapper, "ensure_connection", refuse)
    with pytest.raises(ServiceUnavailable) as caught:
        PooledDatabase(alias="secret").run()
    message = caught.value.message
    assert PASSWORD not in message and PASSWORD not in str(caught.value)
    assert message.endswith(
        'OperationalError: password authentication failed ("********") for "app"'
    )
    # django-health-check logs the exception with its chain: there is none.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_connection_held_by_the_thread_is_pinged_and_left() -> None:
    wrapper = connections["default"]
    wrapper.ensure_connection()
    raw = wrapper.connection
    before = status_of("default")
    assert probe("default") is None
    assert wrapper.connection is raw
    assert status_of("default") == before  # no checkout


def test_aliases_that_are_not_pooled(extra_alias: Any) -> None:
    extra_alias("plain", ENGINE="django.db.backends.sqlite3", NAME=":memory:")
    extra_alias("memory", ENGINE="django_sapool.backends.sqlite3", NAME=":memory:")
    assert pooled_aliases() == ["default"]
    assert pooled_checks() == [(PooledDatabase, {"alias": "default"})]
    assert probe("plain") == (
        "alias 'plain' is not pooled by django_sapool: check it with django-health-check's "
        "own Database check"
    )
    assert probe("nope") is not None and probe("nope").startswith("alias 'nope': ")


def test_the_report_key_names_the_alias() -> None:
    assert repr(PooledDatabase(alias="replica")) == "PooledDatabase(alias='replica')"


@pytest.mark.parametrize(
    ("pool_options", "options", "seconds"),
    [
        ({}, {}, 20.0),  # 2 x PING_TIMEOUT 5 + CONNECT_TIMEOUT 10
        ({"PING_TIMEOUT": 1, "CONNECT_TIMEOUT": 2.5}, {}, 5.0),  # the driver rounds 2.5 up
        ({"PING_TIMEOUT": 0.5, "CONNECT_TIMEOUT": 0.2}, {}, 2.0),  # ... and at least 1
        ({"PING_TIMEOUT": None}, {}, None),
        # The driver's own, when OPTIONS sets it, wins over CONNECT_TIMEOUT (the
        # probe took 8 s where django-health-check gave up after 4).
        ({"PING_TIMEOUT": 1, "CONNECT_TIMEOUT": 2}, {"connect_timeout": 8}, 10.0),
        ({"PING_TIMEOUT": 1, "CONNECT_TIMEOUT": None}, {"connect_timeout": "3"}, 5.0),
    ],
)
def test_the_probe_bound(
    extra_alias: Any,
    tmp_path: Path,
    pool_options: dict[str, Any],
    options: dict[str, Any],
    seconds: float | None,
) -> None:
    extra_alias(
        "timed",
        ENGINE="django_sapool.backends.postgresql",
        NAME="never-connected",
        OPTIONS=options,
        POOL_OPTIONS=pool_options,
    )
    settings_dict = connections["timed"].settings_dict
    assert bound(read_pool_options("timed", settings_dict), settings_dict) == seconds
    # django-health-check 4 waits that long (its own default, 5 s, when unbounded).
    expected = datetime.timedelta(seconds=5 if seconds is None else seconds)
    assert PooledDatabase(alias="timed").timeout == expected


def test_the_app_registers_each_pooled_alias_where_there_is_a_registry(
    monkeypatch: pytest.MonkeyPatch, extra_alias: Any, tmp_path: Path
) -> None:
    extra_alias("replica", ENGINE="django_sapool.backends.sqlite3", NAME=str(tmp_path / "r.db"))
    extra_alias("plain", ENGINE="django.db.backends.sqlite3", NAME=":memory:")
    config = SapoolHealthCheckConfig.create("django_sapool.contrib.health_check")
    assert isinstance(config, SapoolHealthCheckConfig)
    assert config.label == "sapool_health_check"  # not django-health-check's "health_check"
    if V3:
        from health_check.plugins import plugin_dir

        monkeypatch.setattr(plugin_dir, "_registry", [])
        config.ready()
        assert plugin_dir._registry == [
            (PooledDatabase, {"alias": "default"}),
            (PooledDatabase, {"alias": "replica"}),
        ]
    else:
        with pytest.raises(ImportError):
            import health_check.plugins  # noqa: F401  # 4.x: no registry to fill
        config.ready()  # nothing to register, nothing to fail


def test_the_app_without_django_health_check(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SapoolHealthCheckConfig.create("django_sapool.contrib.health_check")
    monkeypatch.setitem(sys.modules, "health_check", None)
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'django-sapool\[health\]'"):
        config.ready()
