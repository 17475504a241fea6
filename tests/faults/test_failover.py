"""Failover: the server behind the application's address turns read-only, or is replaced.

After a failover the pooled sessions are healthy but wrong: they sit on a demoted
primary (read-only) or on the old server behind an address that now leads
elsewhere. The pool must retire them when a write says "read-only" (PostgreSQL
SQLSTATE 25006, MariaDB 1290), and ``django_sapool.evict()`` must retire them on
demand; new connections then reach the writer.

The load runs as rounds of four concurrent requests (``spawn``/``collect``, from a
thread of the test); each write has its own id, so every write has a timed record
and its id can be looked for on either server. Django's stock backend
(``CONN_MAX_AGE=0``, ``connect_timeout`` 3 s) runs every scenario too, for the
report's baseline: it opens a new connection per request, so it follows a
failover at once and has nothing to retire.

Scenarios and rules (POOL_SIZE 4, MAX_OVERFLOW 2; "at most one failure per pooled
connection" = POOL_SIZE+MAX_OVERFLOW; one round in four writes, the others read):

- ``read_only_server_retires_the_pool`` (PostgreSQL, MariaDB): PostgreSQL gets
  ``ALTER DATABASE SET default_transaction_read_only = on`` and its sessions are
  killed (the pool reconnects into sessions that stay read-only for life), RESET
  1.5 s later; MariaDB gets ``read_only = 1`` for 1.5 s (the app connects as a user
  of its own: root bypasses read_only). Writes pause from 0.15 s before the
  writable moment to 0.2 s after it while reads go on (see HOLD_BEFORE). Writes
  fail in the window naming read-only; after the writable moment at most one
  failure per pooled connection, none started more than 1 s after it;
  ``evictions`` >= 1; every acked write is in the table.
- ``promoted_standby_behind_the_same_address`` (PostgreSQL): a proxy in front of the
  primary; the primary is demoted (``ALTER SYSTEM``, reload: sessions and flows
  stay), the standby promoted, the proxy retargeted with the old flows kept
  (writes paused around the switch as above). After the switch at most one
  failure per pooled connection, none (and no read on the old primary) started
  more than 1 s after it; later writes land on the new primary; the old primary
  loses the app's sessions within 5 s.
- ``evict_moves_readers_to_the_new_server`` (PostgreSQL): reads only, the proxy
  retargeted to a promoted standby with the old flows kept: the pool keeps reading
  from the old server until ``evict()``; every request started after it returned
  is served by the new one; nothing fails.
- ``multi_host_target_session_attrs_reaches_the_writer`` (PostgreSQL): HOST/PORT
  lists with the standby first and ``target_session_attrs=read-write``: the writer
  is found; the primary is stopped and the standby promoted: after the promotion
  at most one failure per pooled connection, then /where shows the standby's port
  and the writes land there.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import unavailable

from .conftest import POOL, Target
from .harness import (
    Child,
    Rec,
    Timeline,
    error_counts,
    names_connection_problem,
    pool_counters,
    report,
    stop_load,
    time_bound,
    timeline,
    wait_until,
)
from .proxy import FaultProxy
from .servers import HOST, PgInstance, ServerError, cleanup_stale, launch

THREADS = 4
#: One failure per pooled connection at most.
LIMIT = POOL["POOL_SIZE"] + POOL["MAX_OVERFLOW"]
#: Load before the fault, the read-only window, and load after the recovery.
WARM_SECONDS = 1.0
READ_ONLY_SECONDS = 1.5
AFTER_SECONDS = 2.0
#: Writes fail on the demoted primary this long before the standby is promoted.
DEMOTED_SECONDS = 0.5
#: No failure may start later than this after the writable moment (or the switch).
LATE = 1.0
#: Bound on the old server losing the application's sessions.
GONE_BOUND = 5.0
STOCK_CONNECT_TIMEOUT = 3
#: Bound on each whole test (fixtures included): a hang, not a slow machine (they take
#: 9-20 s).
TEST_SECONDS = 150.0


bounded = time_bound(TEST_SECONDS)


# -- load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """One request of the rounds: its record, its key (a write's id), whether it wrote."""

    rec: Rec
    key: str
    write: bool


def write_url(key: str, slot: int) -> str:
    return f"/write?id={key}&thread={slot}"


#: Every 4th round writes (in every slot), the others read (/where).
WRITE_EVERY = 4
#: Writes pause from this long before the recovery (the writable moment, the
#: switch) until HOLD_AFTER after it; reads go on. A write on a read-only session
#: retires the whole pool, so under continuous writes no session of the window
#: would be left at the recovery and the rule would hold trivially. Reads succeed
#: on read-only sessions and give them back to the pool: the pool surely holds
#: sessions of the window at the recovery, as in an application that reads more
#: than it writes, and the first write round after it meets them.
HOLD_BEFORE = 0.15
HOLD_AFTER = 0.2


class Rounds:
    """Keep THREADS requests in flight, round after round, from a thread of the test.

    The child's load plans record no per-request write (the soak plan keeps ids, not
    times), so this drives it with spawn/collect: each round starts one request per
    slot at once, each write with its own id, and waits for all of them. A spawned
    request's ``thread`` is its slot in the round.
    """

    def __init__(self, child: Child, write_every: int = WRITE_EVERY) -> None:
        self.child = child
        self.write_every = write_every
        self.done: list[Done] = []
        #: pid -> port, from /where bodies (matched by pid: bodies and records are
        #: appended by the request threads in two steps, so their orders may differ).
        self.ports: dict[Any, int] = {}
        self.alive = 0
        self.error: BaseException | None = None
        #: Set: every round reads.
        self.hold_writes = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rounds", daemon=True)

    def __enter__(self) -> Rounds:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                write = n % self.write_every == 0 and not self.hold_writes.is_set()
                keys = [f"r{n}-{slot}-{secrets.token_hex(4)}" for slot in range(THREADS)]
                for slot, key in enumerate(keys):
                    url = write_url(key, slot) if write else "/where"
                    self.child.call("spawn", url=url)
                result = self.child.call("collect", timeout=40, join_timeout=20)
                if result["alive"]:
                    self.alive = result["alive"]
                    return
                for raw in result["records"]:
                    rec = Rec.parse(raw)
                    self.done.append(Done(rec, keys[rec.thread], write))
                for body in result["bodies"]:
                    if body and "port" in body:
                        self.ports[body["pid"]] = body["port"]
                n += 1
                self._stop.wait(0.005)
        except BaseException as exc:  # re-raised in the test thread by stop()
            self.error = exc

    def stop(self) -> list[Done]:
        """End the rounds; return every request, by start time."""
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise self.error
        assert not self._thread.is_alive(), "the request rounds did not end"
        assert self.alive == 0, f"{self.alive} requests still running after 20 s"
        return sorted(self.done, key=lambda d: d.rec.start)


def where(child: Child) -> tuple[Rec, int | None]:
    """Serve one /where request now; return its record and the server's port."""
    answer = child.call("request", url="/where")
    body = answer["body"]
    return Rec.parse(answer["record"]), body["port"] if body else None


def probe(
    child: Child, seconds: float, watch: Callable[[], None] | None = None
) -> list[tuple[Rec, int | None]]:
    """/where, one request after another, for ``seconds``; call ``watch`` between them."""
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found.append(where(child))
        if watch is not None:
            watch()
        time.sleep(0.01)
    return found


def run_of(child: Child, done: list[Done], **facts: Any) -> dict[str, Any]:
    """A scenario's run: its requests, the child's pools after them, the scenario's facts.

    ``facts`` are evaluated (in order) before the child is asked for its pools.
    """
    return {
        "done": done,
        "recs": [d.rec for d in done],
        "pools": child.call("status")["pools"],
        **facts,
    }


def pooled_then_stock(
    scenario: Callable[[Child], dict[str, Any]],
    pooled: Callable[[], Child],
    stock: Callable[[], Child],
    between: Callable[[], None] = lambda: None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``scenario`` in a pooled child, then (after ``between``) in a stock one.

    The stock backend's run is the report's baseline. Each child is closed after
    its run, so the second starts with no session of the first.
    """
    child = pooled()
    run = scenario(child)
    child.close()
    between()
    child = stock()
    base = scenario(child)
    child.close()
    return run, base


def report_rounds(
    name: str,
    target: Target,
    facts_of: Callable[[dict[str, Any]], dict[str, Any]],
    run: dict[str, Any],
    base: dict[str, Any],
    **details: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Report a scenario run in rounds with its stock baseline; return both facts."""
    facts, base_facts = facts_of(run), facts_of(base)
    report(
        name,
        target,
        threads=THREADS,
        write_every_rounds=WRITE_EVERY,
        **details,
        **facts,
        stock=base_facts,
    )
    return facts, base_facts


def table_ids(server: Any, dbname: str) -> set[str]:
    return {row[0] for row in server.query("SELECT id FROM fault_write", dbname=dbname)}


def failed(recs: Sequence[Rec]) -> list[Rec]:
    return [r for r in recs if not r.ok]


def started_from(recs: Sequence[Rec], moment: float) -> list[Rec]:
    return [r for r in recs if r.start >= moment]


def in_flight_at(recs: Sequence[Rec], moment: float) -> list[Rec]:
    return [r for r in recs if r.start < moment <= r.end]


def names_read_only(message: str) -> bool:
    text = message.lower()
    return "read-only" in text or "read_only" in text


def write_facts(done: Sequence[Done], ids: set[str]) -> dict[str, int]:
    """Acked writes missing from ``ids``, writes failed before COMMIT found in it."""
    writes = [d for d in done if d.write]
    acked = {d.key for d in writes if d.rec.ok}
    in_doubt = {d.key for d in writes if not d.rec.ok and d.rec.phase == "commit"}
    refused = {d.key for d in writes if not d.rec.ok and d.rec.phase != "commit"}
    return {
        "writes": len(writes),
        "reads": len(done) - len(writes),
        "acked": len(acked),
        "acked_missing": len(acked - ids),
        "failed_before_commit_present": len(refused & ids),
        "in_doubt": len(in_doubt),
    }


def pool_facts(pools: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not pools:
        return None  # the stock backend has no pool
    (pool,) = pools
    return {**pool_counters(pool), "evictions": pool["evictions"]}


def briefs(recs: Sequence[Rec], limit: int = 8) -> list[str]:
    return [r.brief() for r in recs[:limit]]


@dataclass(frozen=True)
class Outage:
    """How a scenario's run and report name its fault and its recovery.

    Every scenario measures the same things around [fault, recovery) and holds the
    same rule after the recovery; only the names differ (the report keeps the
    scenario's own words: "writable", "switch", "promotion").
    """

    fault_at: str  # the run's key of the fault's moment
    recovered_at: str  # the run's key of the recovery's moment
    before: str  # report: failed_before_<before>
    during: str  # report: failed_<during>
    seconds: str  # report: seconds from the fault to the recovery
    after: str  # report: failed_after_<after>, ...

    def around(self, run: dict[str, Any]) -> tuple[list[Rec], float, Timeline, list[Rec]]:
        """The run's requests, the recovery's moment, their timeline, the failures after it."""
        recs: list[Rec] = run["recs"]
        recovered = run[self.recovered_at]
        line = timeline(recs, run[self.fault_at], recovered)
        return recs, recovered, line, failed(line.after)

    def facts(self, run: dict[str, Any]) -> dict[str, Any]:
        recs, recovered, line, after = self.around(run)
        return {
            "requests": len(recs),
            "failed": len(failed(recs)),
            f"failed_before_{self.before}": len(failed(line.before)),
            f"failed_{self.during}": len(failed(line.while_down)),
            self.seconds: round(recovered - run[self.fault_at], 3),
            f"failed_in_flight_at_{self.after}": len(failed(in_flight_at(recs, recovered))),
            f"failed_after_{self.after}": len(after),
            f"last_failure_after_{self.after}_s": round(max(r.start for r in after) - recovered, 3)
            if after
            else None,
            f"requests_after_{self.after}": len(line.after),
        }

    def assert_recovered(self, run: dict[str, Any]) -> None:
        """At most one failure per pooled connection after the recovery, none started late."""
        _, recovered, _, after = self.around(run)
        assert len(after) <= LIMIT, briefs(after)
        late = [r for r in after if r.start > recovered + LATE]
        assert late == [], briefs(late)


READ_ONLY = Outage(
    "read_only_at", "writable_at", "read_only", "in_window", "read_only_seconds", "writable"
)
SWITCHOVER = Outage(
    "demoted_at", "switched_at", "demotion", "while_switching", "switch_seconds", "switch"
)
MULTI_HOST = Outage(
    "stopped_at", "promoted_at", "stop", "until_promoted", "outage_seconds", "promotion"
)


# -- 1. a read-only server -------------------------------------------------------------------


@contextmanager
def app_credentials(target: Target) -> Iterator[dict[str, str]]:
    """MariaDB: a user of the test's own, granted the test database only.

    root holds READ ONLY ADMIN and would write through ``read_only``; an
    application's user does not. PostgreSQL's read-only default binds superusers
    too, so there the usual user serves.
    """
    if target.vendor != "mysql":
        yield {}
        return
    server = target.server
    user = f"fo_{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    server.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    try:
        server.execute(f"GRANT ALL PRIVILEGES ON `{target.dbname}`.* TO '{user}'@'%'")
        yield {"USER": user, "PASSWORD": password}
    finally:
        for child in target.children:  # their sessions first
            child.close()
        server.execute(f"DROP USER IF EXISTS '{user}'@'%'")


class ReadOnlySwitch:
    """Make the test database read-only for new writes, and writable again."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def on(self) -> None:
        server, db = self.target.server, self.target.dbname
        if self.target.vendor == "postgresql":
            # Sessions started from now on default to read-only, and keep that
            # default for life, as on a demoted primary; kill the current ones so
            # the pool reconnects into read-only sessions.
            server.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
            server.kill_sessions(db)
        else:
            server.execute("SET GLOBAL read_only = 1")

    def off(self) -> None:
        if self.target.vendor == "postgresql":
            # New sessions are writable; those opened meanwhile stay read-only.
            self.target.server.execute(
                f'ALTER DATABASE "{self.target.dbname}" RESET default_transaction_read_only'
            )
        else:
            self.target.server.execute("SET GLOBAL read_only = 0")


@contextmanager
def read_only_switch(target: Target) -> Iterator[ReadOnlySwitch]:
    switch = ReadOnlySwitch(target)
    try:
        yield switch
    finally:
        switch.off()  # a server-wide setting on MariaDB: never leave it on


def read_only_run(target: Target, child: Child, switch: ReadOnlySwitch) -> dict[str, Any]:
    with Rounds(child) as rounds:
        time.sleep(WARM_SECONDS)
        read_only_at = time.monotonic()
        switch.on()
        time.sleep(READ_ONLY_SECONDS - HOLD_BEFORE)
        rounds.hold_writes.set()
        time.sleep(HOLD_BEFORE)
        switch.off()
        writable_at = time.monotonic()
        time.sleep(HOLD_AFTER)
        rounds.hold_writes.clear()
        time.sleep(AFTER_SECONDS - HOLD_AFTER)
        done = rounds.stop()
    return run_of(
        child,
        done,
        read_only_at=read_only_at,
        writable_at=writable_at,
        ids=table_ids(target.server, target.dbname),
    )


def read_only_facts(run: dict[str, Any]) -> dict[str, Any]:
    recs, _, line, _ = READ_ONLY.around(run)
    return {
        **READ_ONLY.facts(run),
        "read_only_errors_in_window": sum(
            names_read_only(r.message) for r in failed(line.while_down)
        ),
        "errors": error_counts(recs),
        **write_facts(run["done"], run["ids"]),
        "pool": pool_facts(run["pools"]),
    }


def test_read_only_server_retires_the_pool(target: Target) -> None:
    """Writes hit a read-only server for 1.5 s: once writable, the pool leaves its sessions.

    PostgreSQL keeps a session's read-only default for life, so without a
    retirement every session the pool opened in the window would fail every write
    forever. Rule: at most one failure per pooled connection after the writable
    moment, none started more than 1 s after it; no acked write is lost.
    """
    with app_credentials(target) as credentials, read_only_switch(target) as switch:
        run, base = pooled_then_stock(
            lambda child: read_only_run(target, child, switch),
            lambda: target.child(**credentials),
            lambda: target.child(stock=True, connect_timeout=STOCK_CONNECT_TIMEOUT, **credentials),
        )
    facts, base_facts = report_rounds(
        "read_only_server",
        target,
        read_only_facts,
        run,
        base,
        writes_paused_s=[-HOLD_BEFORE, HOLD_AFTER],
        fault="ALTER DATABASE SET default_transaction_read_only + sessions killed, then RESET"
        if target.vendor == "postgresql"
        else "SET GLOBAL read_only = 1, then 0 (non-privileged app user)",
    )
    recs, writable, line, _ = READ_ONLY.around(run)
    assert facts["failed_before_read_only"] == 0, briefs(failed(line.before))
    # The fault was real: writes failed in the window, saying read-only.
    assert facts["read_only_errors_in_window"] >= 1, briefs(failed(line.while_down))
    for rec in failed(recs):
        assert "django.db.utils.OperationalError" in rec.classes or (
            "django.db.utils.InternalError" in rec.classes
        ), rec.brief()
        assert names_read_only(rec.message) or names_connection_problem(rec.message), rec.brief()
    READ_ONLY.assert_recovered(run)
    # Every slot writes again once writable.
    writes_after = [d.rec for d in run["done"] if d.write and d.rec.start >= writable]
    assert {r.thread for r in writes_after if r.ok} == set(range(THREADS))
    assert facts["pool"] is not None and facts["pool"]["evictions"] >= 1, facts["pool"]
    assert facts["pool"]["checked_out"] == 0, facts["pool"]
    assert facts["acked_missing"] == 0 and facts["failed_before_commit_present"] == 0
    # The baseline reconnects per request: nothing fails once writable.
    assert base_facts["failed_after_writable"] == 0, briefs(
        failed(started_from(base["recs"], base["writable_at"]))
    )
    assert base_facts["acked_missing"] == 0


# -- PostgreSQL clusters of our own ------------------------------------------------------------


@dataclass
class Cluster:
    """A primary of the test's own, its streaming hot standby, and a database on both."""

    primary: PgInstance
    standby: PgInstance
    target: Target  # psycopg on the primary's database; tests override HOST/PORT
    instances: list[PgInstance]

    @property
    def dbname(self) -> str:
        return self.target.dbname

    def next_pair(self) -> None:
        """After a failover: the promoted standby becomes the primary of a new pair."""
        self.primary = self.standby
        self.standby = self.primary.make_standby()
        self.instances.append(self.standby)
        self.target.server = self.primary


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        unavailable(f"psycopg is not installed: {exc}")
    cleanup_stale()
    try:
        primary = launch("postgresql")
    except ServerError as exc:
        unavailable(f"could not start a PostgreSQL server of our own: {exc}")
    assert isinstance(primary, PgInstance)
    instances = [primary]
    target: Target | None = None
    try:
        dbname = f"fault_{uuid.uuid4().hex[:10]}"
        primary.create_database(dbname)  # before the clone: the standby has it too
        standby = primary.make_standby()
        instances.append(standby)
        target = Target(primary, "postgresql", "psycopg", dbname, tmp_path)
        yield Cluster(primary, standby, target, instances)
    finally:
        if target is not None:
            for child in target.children:
                child.close()
        for instance in reversed(instances):
            instance.destroy()


def via(proxy: FaultProxy) -> dict[str, Any]:
    return {"HOST": HOST, "PORT": str(proxy.port)}


def caught_up(primary: PgInstance, standby: PgInstance, timeout: float = 10.0) -> bool:
    """Wait until the standby has replayed everything the primary has written so far."""
    lsn = primary.scalar("SELECT pg_current_wal_lsn()::text")
    return wait_until(
        lambda: bool(standby.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])),
        timeout=timeout,
    )


def demote(server: PgInstance) -> None:
    """Make every transaction of the server read-only, its sessions and TCP flows kept."""
    server.execute("ALTER SYSTEM SET default_transaction_read_only = on")
    server.execute("SELECT pg_reload_conf()")
    # The reload is asynchronous: wait until a new session sees it.
    assert wait_until(
        lambda: server.scalar("SHOW default_transaction_read_only") == "on", timeout=5
    ), "the old primary did not turn read-only"


# -- 2. a promoted standby behind the same address ------------------------------------------------


def switchover_run(cluster: Cluster, child: Child, proxy: FaultProxy) -> dict[str, Any]:
    old, new, db = cluster.primary, cluster.standby, cluster.dbname
    with Rounds(child) as rounds:
        time.sleep(WARM_SECONDS)
        demoted_at = time.monotonic()
        demote(old)
        time.sleep(DEMOTED_SECONDS)
        replayed = caught_up(old, new)
        promote_started = time.monotonic()
        promoted_at = new.promote()
        rounds.hold_writes.set()
        time.sleep(HOLD_BEFORE)
        proxy.retarget(HOST, new.port, keep_old_flows=True)
        switched_at = time.monotonic()
        time.sleep(HOLD_AFTER)
        rounds.hold_writes.clear()
        # While the application keeps writing.
        gone = wait_until(lambda: not old.sessions(db), timeout=GONE_BOUND)
        gone_after = time.monotonic() - switched_at
        time.sleep(max(0.0, AFTER_SECONDS - (time.monotonic() - switched_at)))
        done = rounds.stop()
    old_left = old.sessions(db)
    return run_of(
        child,
        done,
        where=where(child),
        ports=rounds.ports,
        demoted_at=demoted_at,
        switched_at=switched_at,
        replayed=replayed,
        promote_seconds=round(promoted_at - promote_started, 3),
        gone=gone,
        gone_after=gone_after,
        old_left=old_left,
        old_port=old.port,
        new_port=new.port,
        on_old=table_ids(old, db),
        on_new=table_ids(new, db),
    )


def switchover_facts(run: dict[str, Any]) -> dict[str, Any]:
    recs, switched, _, _ = SWITCHOVER.around(run)
    done: list[Done] = run["done"]
    acked_after = {d.key for d in done if d.write and d.rec.ok and d.rec.start >= switched}
    reads_after = [d.rec for d in done if not d.write and d.rec.ok and d.rec.start >= switched]
    on_old = [r for r in reads_after if run["ports"].get(r.pid) == run["old_port"]]
    where_rec, where_port = run["where"]
    return {
        **SWITCHOVER.facts(run),
        "promote_seconds": run["promote_seconds"],
        "standby_caught_up": run["replayed"],
        "reads_after_switch": len(reads_after),
        "reads_after_switch_on_old": len(on_old),
        "last_read_on_old_after_switch_s": round(max(r.start for r in on_old) - switched, 3)
        if on_old
        else None,
        "acked_after_switch": len(acked_after),
        "acked_after_switch_on_new": len(acked_after & run["on_new"]),
        "acked_after_switch_on_old": len(acked_after & run["on_old"]),
        "old_primary_sessions_gone": run["gone"],
        "old_primary_sessions_gone_after_s": round(run["gone_after"], 3),
        "old_primary_sessions_left": len(run["old_left"]),
        "where_ok": where_rec.ok,
        "where_port_is_new": where_port == run["new_port"],
        "errors": error_counts(recs),
        **write_facts(done, run["on_new"]),
        "pool": pool_facts(run["pools"]),
    }


@pytest.mark.postgresql
def test_promoted_standby_behind_the_same_address(cluster: Cluster) -> None:
    """A planned failover behind a proxy: demote, promote, move the address, keep old flows.

    The pooled sessions stay connected to the demoted primary through the old
    flows; their first write fails read-only and retires the pool, so at most one
    request per pooled connection fails after the switch and every later write
    lands on the new primary. The old primary loses all the app's sessions.
    """
    with FaultProxy(HOST, cluster.primary.port) as proxy:
        run, base = pooled_then_stock(
            lambda child: switchover_run(cluster, child, proxy),
            lambda: cluster.target.child(**via(proxy)),
            lambda: cluster.target.child(
                stock=True, connect_timeout=STOCK_CONNECT_TIMEOUT, **via(proxy)
            ),
            # The baseline on a second pair: the promoted standby (already behind
            # the proxy) and a new standby of it.
            between=cluster.next_pair,
        )
    facts, base_facts = report_rounds(
        "promoted_standby_same_address",
        cluster.target,
        switchover_facts,
        run,
        base,
        writes_paused_s=[-HOLD_BEFORE, HOLD_AFTER],
        fault="ALTER SYSTEM SET default_transaction_read_only (reload), promote, "
        "proxy.retarget(keep_old_flows=True)",
    )
    recs, _, line, _ = SWITCHOVER.around(run)
    assert run["replayed"], "the standby did not catch up before the promotion"
    assert facts["failed_before_demotion"] == 0, briefs(failed(line.before))
    for rec in failed(recs):
        assert names_read_only(rec.message) or names_connection_problem(rec.message), rec.brief()
    SWITCHOVER.assert_recovered(run)
    last_old_read = facts["last_read_on_old_after_switch_s"]
    assert last_old_read is None or last_old_read <= LATE, last_old_read
    assert facts["acked_after_switch"] > 0
    assert facts["acked_after_switch_on_new"] == facts["acked_after_switch"]
    assert facts["acked_after_switch_on_old"] == 0
    # Acked on the old primary before the demotion, replicated, or acked on the new one.
    assert facts["acked_missing"] == 0 and facts["failed_before_commit_present"] == 0
    assert facts["where_ok"] and facts["where_port_is_new"], run["where"]
    assert run["gone"], f"the old primary still has sessions {run['old_left']}"
    assert facts["pool"] is not None and facts["pool"]["evictions"] >= 1, facts["pool"]
    assert base_facts["failed_after_switch"] == 0, briefs(failed(base["recs"]))


# -- 3. evict() moves readers ---------------------------------------------------------------------


@pytest.mark.postgresql
def test_evict_moves_readers_to_the_new_server(cluster: Cluster) -> None:
    """Reads only: after a retarget the pool stays on the old server until evict().

    Three load threads hold a connection 50 ms per request (so some are checked
    out when evict() runs: those are closed when returned) while the test sends
    /where requests one by one. Every request started after evict() returned is
    served by the new server; nothing fails.
    """
    old, new, db = cluster.primary, cluster.standby, cluster.dbname
    with FaultProxy(HOST, old.port) as proxy:
        child = cluster.target.child(**via(proxy))
        child.call("start_load", threads=3, plan="query", sleep=0.05, think=0.005)
        before = probe(child, WARM_SECONDS)
        promote_started = time.monotonic()
        new.promote()
        promote_seconds = time.monotonic() - promote_started
        proxy.retarget(HOST, new.port, keep_old_flows=True)
        switched_at = time.monotonic()
        switched = probe(child, 1.0)
        # No new flow reaches the old server since the retarget: these are all the
        # sessions there that could still serve a request.
        old_sessions = set(old.sessions(db))
        evict_called = time.monotonic()
        evicted = child.call("evict")["pools"]
        evicted_at = time.monotonic()
        gone_at: list[float] = []

        def watch() -> None:
            if not gone_at and not old.sessions(db):
                gone_at.append(time.monotonic())

        after = probe(child, AFTER_SECONDS, watch)
        gone = bool(gone_at) or wait_until(lambda: not old.sessions(db), timeout=GONE_BOUND)
        gone_after = (gone_at[0] if gone_at else time.monotonic()) - evicted_at
        load = stop_load(child)
        load_recs, pool = load.recs, load.pool
        child.close()

        # Baseline: the stock backend behind the same proxy, switched back to the
        # old server (reads only, so the direction does not matter).
        stock = cluster.target.child(
            stock=True, connect_timeout=STOCK_CONNECT_TIMEOUT, **via(proxy)
        )
        stock_before = probe(stock, 0.5)
        proxy.retarget(HOST, old.port, keep_old_flows=True)
        stock_after = probe(stock, 1.0)
        stock.close()

    def served(found: list[tuple[Rec, int | None]], port: int) -> int:
        return sum(1 for rec, p in found if rec.ok and p == port)

    load_switched = [r for r in load_recs if switched_at <= r.start < evict_called]
    load_after = started_from(load_recs, evicted_at)
    load_after_on_old = [r for r in load_after if r.pid in old_sessions]
    probes = [rec for rec, _ in before + switched + after]
    report(
        "evict_moves_readers",
        cluster.target,
        load_threads=3,
        promote_seconds=round(promote_seconds, 3),
        probes_before=len(before),
        probes_before_on_old=served(before, old.port),
        probes_after_switch=len(switched),
        probes_after_switch_on_old=served(switched, old.port),
        probes_after_switch_on_new=served(switched, new.port),
        load_after_switch=len(load_switched),
        load_after_switch_on_old=sum(1 for r in load_switched if r.pid in old_sessions),
        old_sessions_at_evict=len(old_sessions),
        pools_evicted=evicted,
        evict_seconds=round(evicted_at - evict_called, 3),
        probes_after_evict=len(after),
        probes_after_evict_on_new=served(after, new.port),
        load_after_evict=len(load_after),
        load_after_evict_on_old=len(load_after_on_old),
        old_sessions_gone=gone,
        old_sessions_gone_after_evict_s=round(gone_after, 3),
        failed=len(failed(probes)) + len(failed(load_recs)),
        errors=error_counts([*probes, *load_recs]),
        pool={**pool_counters(pool), "evictions": pool["evictions"]},
        stock={
            "probes_before": len(stock_before),
            "probes_after_switch": len(stock_after),
            "probes_after_switch_on_previous": served(stock_after, new.port),
            "failed": len(failed([rec for rec, _ in stock_before + stock_after])),
        },
    )
    assert load.alive == []
    assert failed(probes) == [] and failed(load_recs) == [], briefs(
        failed(probes) + failed(load_recs)
    )
    assert served(before, old.port) == len(before) > 0
    # Without evict() the pool keeps reading from the old server through the old flows.
    assert served(switched, old.port) > 0, switched
    assert evicted == 1
    assert after and served(after, new.port) == len(after), [
        (rec.brief(), port) for rec, port in after if port != new.port
    ]
    assert load_after and load_after_on_old == [], briefs(load_after_on_old)
    assert gone, "the old server kept sessions of the application after evict()"
    assert pool["evictions"] >= 1 and pool["checked_out"] == 0, pool
    # The baseline follows the address at once.
    assert stock_after and served(stock_after, old.port) == len(stock_after)


# -- 4. libpq's multi-host failover ---------------------------------------------------------------


def multi_host(cluster: Cluster, stock: bool = False) -> dict[str, Any]:
    """HOST/PORT lists with the standby first: target_session_attrs finds the writer."""
    options: dict[str, Any] = {"target_session_attrs": "read-write"}
    if stock:
        options["connect_timeout"] = STOCK_CONNECT_TIMEOUT
    return {
        "HOST": f"{HOST},{HOST}",
        "PORT": f"{cluster.standby.port},{cluster.primary.port}",
        "OPTIONS": options,
    }


def multi_host_run(cluster: Cluster, child: Child) -> dict[str, Any]:
    primary, standby, db = cluster.primary, cluster.standby, cluster.dbname
    first = [where(child) for _ in range(3)]
    with Rounds(child) as rounds:
        time.sleep(WARM_SECONDS)
        stopped_at = time.monotonic()
        primary.stop()
        promoted_at = standby.promote()
        time.sleep(AFTER_SECONDS)
        done = rounds.stop()
    return run_of(
        child,
        done,
        first=first,
        last=[where(child) for _ in range(3)],
        stopped_at=stopped_at,
        promoted_at=promoted_at,
        primary_port=primary.port,
        standby_port=standby.port,
        on_standby=table_ids(standby, db),
    )


def multi_host_facts(run: dict[str, Any]) -> dict[str, Any]:
    recs, promoted, _, _ = MULTI_HOST.around(run)
    done: list[Done] = run["done"]
    acked = [d for d in done if d.write and d.rec.ok]
    acked_before = {d.key for d in acked if d.rec.end < run["stopped_at"]}
    acked_after = {d.key for d in acked if d.rec.start >= promoted}
    return {
        **MULTI_HOST.facts(run),
        "first_where_on_primary": sum(
            1 for rec, port in run["first"] if rec.ok and port == run["primary_port"]
        ),
        "acked_after_promotion": len(acked_after),
        "acked_after_promotion_on_standby": len(acked_after & run["on_standby"]),
        # Replication is asynchronous: figures only (a fast shutdown sends all WAL).
        "acked_before_stop_missing_on_standby": len(acked_before - run["on_standby"]),
        "last_where_on_standby": sum(
            1 for rec, port in run["last"] if rec.ok and port == run["standby_port"]
        ),
        "errors": error_counts(recs),
        "pool": pool_facts(run["pools"]),
    }


@pytest.mark.postgresql
def test_multi_host_target_session_attrs_reaches_the_writer(cluster: Cluster) -> None:
    """HOST lists the standby first: libpq skips it for the writer; after a failover, uses it.

    The primary is stopped and the standby promoted under a write load. While
    neither is a writer every request fails (fast); once the standby accepts
    writes at most one request per pooled connection fails, /where shows the
    standby's port and the writes land there.
    """
    run, base = pooled_then_stock(
        lambda child: multi_host_run(cluster, child),
        lambda: cluster.target.child(**multi_host(cluster)),
        # After next_pair(): the standby's and primary's ports of the second pair.
        lambda: cluster.target.child(stock=True, **multi_host(cluster, stock=True)),
        # The baseline on a second pair: the promoted standby and a new standby of it.
        between=cluster.next_pair,
    )
    facts, base_facts = report_rounds(
        "multi_host_target_session_attrs",
        cluster.target,
        multi_host_facts,
        run,
        base,
        fault="primary stopped (fast), standby promoted; HOST/PORT lists, standby first, "
        "target_session_attrs=read-write",
    )
    recs, _, line, _ = MULTI_HOST.around(run)
    assert facts["first_where_on_primary"] == 3, run["first"]
    assert facts["failed_before_stop"] == 0, briefs(failed(line.before))
    assert any(r.ok for r in recs if r.end < run["stopped_at"])  # writes succeeded
    for rec in failed(recs):
        assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    MULTI_HOST.assert_recovered(run)
    assert facts["acked_after_promotion"] > 0
    assert facts["acked_after_promotion_on_standby"] == facts["acked_after_promotion"]
    assert facts["last_where_on_standby"] == 3, run["last"]
    assert facts["pool"] is not None and facts["pool"]["checked_out"] == 0, facts["pool"]
    assert base_facts["failed_after_promotion"] == 0, briefs(failed(base["recs"]))
