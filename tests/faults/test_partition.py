"""A real partition: the network namespace's loopback goes down under the application.

The server and the Django child run inside a network namespace of the test's
own (``netns.py``); ``partition()`` takes its ``lo`` down, so packets are dropped
silently in both directions, nothing is closed and nothing is refused. The test
process reaches the servers over their UNIX sockets meanwhile.

With the pool's defaults, a dead path is found on an idle connection by the
ping's deadline (PING_TIMEOUT), and under a running query by TCP keepalives
with TCP_USER_TIMEOUT (about TCP_KEEPALIVE + TCP_USER_TIMEOUT seconds); a
healthy long query (90 s) on a path that stays up is never interrupted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import unavailable

from . import netns
from .conftest import TARGETS, Target, ensure_up
from .harness import Child, Rec, pool_counters, records, report
from .servers import Instance, ServerError, launch

PING_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
TCP_KEEPALIVE = 10.0
TCP_USER_TIMEOUT = 10.0
MARGIN = 3.0
STOCK_CONNECT_TIMEOUT = 3
#: A healthy query this long must not be interrupted by the keepalive defaults.
LONG_QUERY = 90
#: How long the stock baseline's query is watched under the partition.
STOCK_WATCH = TCP_KEEPALIVE + TCP_USER_TIMEOUT + 8

PARAMS = [
    pytest.param("postgresql-psycopg", id="postgresql-psycopg", marks=pytest.mark.postgresql),
    pytest.param("mysql-mysqlclient", id="mysql-mysqlclient", marks=pytest.mark.mysql),
]


@pytest.fixture(scope="module")
def namespace() -> Iterator[netns.Namespace]:
    ok, why = netns.available()
    if not ok:
        unavailable(f"network namespaces are not available: {why}")
    with netns.Namespace() as ns:
        yield ns


@pytest.fixture(scope="module")
def ns_servers(namespace: netns.Namespace) -> Iterator[dict[str, Instance]]:
    servers: dict[str, Instance] = {}
    try:
        for vendor in ("postgresql", "mysql"):
            try:
                servers[vendor] = launch(vendor, namespace=namespace)
            except ServerError as exc:
                unavailable(f"could not start a {vendor} server in a namespace: {exc}")
        yield servers
    finally:
        namespace.heal()
        for server in servers.values():
            server.destroy()


@pytest.fixture
def ns_target(
    request: pytest.FixtureRequest,
    namespace: netns.Namespace,
    ns_servers: dict[str, Instance],
    tmp_path: Path,
) -> Iterator[Target]:
    vendor, driver = TARGETS[request.param]
    server = ns_servers[vendor]
    namespace.heal()
    ensure_up(server)
    dbname = f"part_{uuid.uuid4().hex[:10]}"
    server.create_database(dbname)
    target = Target(server, vendor, driver, dbname, tmp_path)
    try:
        yield target
    finally:
        namespace.heal()
        for child in target.children:
            child.close()
        server.drop_database(dbname)


def one(child: Child, url: str = "/q") -> Rec:
    (rec,) = records([child.call("request", url=url, timeout=120)["record"]])
    return rec


# -- healthy long queries, started before the partition tests and checked last ---------


@pytest.fixture(scope="module", autouse=True)
def healthy_long_queries(
    pg_instance: Instance, mariadb_instance: Instance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """90 s queries on servers outside the namespace, run while the other tests run."""
    started: dict[str, Any] = {}
    made: list[tuple[Instance, str]] = []
    children: list[Child] = []
    try:
        for name, server in (
            ("postgresql-psycopg", pg_instance),
            ("mysql-mysqlclient", mariadb_instance),
        ):
            vendor, driver = TARGETS[name]
            ensure_up(server)
            dbname = f"long_{uuid.uuid4().hex[:10]}"
            server.create_database(dbname)
            made.append((server, dbname))
            target = Target(server, vendor, driver, dbname, tmp_path_factory.mktemp(vendor))
            child = target.child()
            children.append(child)
            child.call("spawn", url=f"/q?sleep={LONG_QUERY}")
            started[name] = (target, child, time.monotonic())
        yield started
    finally:
        for child in children:
            child.close()
        for server, dbname in made:
            server.drop_database(dbname)


# -- the partition tests -----------------------------------------------------------


@pytest.mark.parametrize("ns_target", PARAMS, indirect=True)
def test_partition_with_idle_connections_fails_within_the_bound(
    ns_target: Target, namespace: netns.Namespace
) -> None:
    """Partition after 2 s of idleness: the request ends within PING_TIMEOUT + CONNECT_TIMEOUT."""
    child = ns_target.child(prefix=namespace.prefix())
    stock = ns_target.child(
        stock=True, connect_timeout=STOCK_CONNECT_TIMEOUT, prefix=namespace.prefix()
    )
    assert one(child).ok and one(stock).ok
    time.sleep(2.0)
    namespace.partition()
    try:
        rec = one(child)
        baseline = one(stock)
    finally:
        namespace.heal()
    healed = one(child)
    (pool,) = child.call("status")["pools"]
    report(
        "partition_idle",
        ns_target,
        request_seconds=round(rec.seconds, 3),
        bound_seconds=PING_TIMEOUT + CONNECT_TIMEOUT,
        message=rec.message,
        request_after_heal_ok=healed.ok,
        request_after_heal_seconds=round(healed.seconds, 3),
        pool=pool_counters(pool),
        pings_timed_out=pool["pings_timed_out"],
        stock_seconds_until_error=round(baseline.seconds, 3),
        stock_ok=baseline.ok,
    )
    assert not rec.ok
    assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    assert PING_TIMEOUT - 0.2 <= rec.seconds <= PING_TIMEOUT + CONNECT_TIMEOUT + MARGIN
    assert pool["pings_timed_out"] == 1
    assert healed.ok, healed.brief()
    assert healed.seconds < PING_TIMEOUT
    assert not baseline.ok and baseline.seconds <= STOCK_CONNECT_TIMEOUT + MARGIN


@pytest.mark.parametrize("ns_target", PARAMS, indirect=True)
def test_partition_under_a_running_query_is_found_by_keepalives(
    ns_target: Target, namespace: netns.Namespace
) -> None:
    """A 60 s query when the path dies: TCP keepalives end it within the documented bound.

    Django's stock backend, same query, same partition: still waiting when the
    test stops watching (the kernel's default gives up after about 15 minutes).
    """
    child = ns_target.child(prefix=namespace.prefix())
    stock = ns_target.child(stock=True, prefix=namespace.prefix())
    child.call("spawn", url="/q?sleep=60")
    stock.call("spawn", url="/q?sleep=60")
    time.sleep(1.0)
    namespace.partition()
    partitioned = time.monotonic()
    try:
        ours = child.call("collect", join_timeout=TCP_KEEPALIVE + TCP_USER_TIMEOUT + 20, timeout=90)
        theirs = stock.call(
            "collect",
            join_timeout=max(0.0, partitioned + STOCK_WATCH - time.monotonic()),
            timeout=90,
        )
    finally:
        namespace.heal()
    (rec,) = records(ours["records"])
    seconds_after_partition = rec.end - partitioned
    (pool,) = ours["pools"]
    report(
        "partition_running_query",
        ns_target,
        seconds_from_partition_to_error=round(seconds_after_partition, 3),
        bound_seconds=TCP_KEEPALIVE + TCP_USER_TIMEOUT,
        ok=rec.ok,
        message=rec.message,
        pool=pool_counters(pool),
        stock_still_waiting_after_seconds=STOCK_WATCH if theirs["alive"] else None,
        stock_records=theirs["records"],
    )
    assert ours["alive"] == 0
    assert not rec.ok
    assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    assert seconds_after_partition <= TCP_KEEPALIVE + TCP_USER_TIMEOUT + MARGIN
    assert pool["checked_out"] == 0
    assert theirs["alive"] == 1  # the baseline: nothing bounds it


def test_healthy_long_queries_are_never_interrupted(healthy_long_queries: dict[str, Any]) -> None:
    """The 90 s queries started with the module, on paths that stay up, all succeed."""
    for name, (target, child, started) in healthy_long_queries.items():
        left = max(0.0, started + LONG_QUERY - time.monotonic())
        result = child.call("collect", join_timeout=left + 30, timeout=left + 60)
        (rec,) = records(result["records"])
        (pool,) = result["pools"]
        report(
            "healthy_long_query",
            target,
            query_seconds=LONG_QUERY,
            request_seconds=round(rec.seconds, 3),
            ok=rec.ok,
            message=rec.message,
            tcp_keepalive=TCP_KEEPALIVE,
            tcp_user_timeout=TCP_USER_TIMEOUT,
            pool=pool_counters(pool),
        )
        assert rec.ok, f"{name}: {rec.brief()}"
        assert rec.seconds >= LONG_QUERY - 0.5
        assert pool["connections_invalidated"] == 0
