"""Silent failures: the path or the server stops answering without closing anything.

A fault proxy of our own (``proxy.py``) sits between the Django child and the
server; ``blackhole()`` keeps every TCP connection open and answers nothing, as
a dropped NAT entry, a hung server or a partition do. Unless a test says
otherwise the pool runs with its default options (PING_TIMEOUT 5 s,
CONNECT_TIMEOUT 10 s), and OPTIONS sets no ``connect_timeout``. Each scenario also
runs Django's stock backend (``CONN_MAX_AGE=0``, ``connect_timeout`` 3 s) for the
report's baseline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import BOTH, FOUR_DRIVERS, Target, target_param, unavailable
from .harness import Child, Rec, names_connection_problem, pool_counters, records, report
from .proxy import FaultProxy

#: The defaults (django_sapool.conf.PoolOptions).
PING_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
#: How much longer than its bound a request may take on a busy 2-core machine.
MARGIN = 2.5
#: The stock baseline's OPTIONS["connect_timeout"].
STOCK_CONNECT_TIMEOUT = 3
#: Idle longer than PRE_PING_INTERVAL, so a checkout makes a real ping.
IDLE = 2.0


@pytest.fixture
def proxy(target: Target) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", target.server.port) as p:
        yield p


def via(proxy: FaultProxy) -> dict[str, Any]:
    return {"HOST": "127.0.0.1", "PORT": str(proxy.port)}


def one(child: Child, url: str = "/q") -> Rec:
    (rec,) = records([child.call("request", url=url, timeout=120)["record"]])
    return rec


def pool_of(child: Child) -> dict[str, Any]:
    (pool,) = child.call("status")["pools"]
    return pool


#: How long the stock baseline is watched (PyMySQL's connect_timeout does not cover
#: the handshake: Django's stock backend then waits for ever).
STOCK_WATCH = STOCK_CONNECT_TIMEOUT + 5.0


def stock_black_hole_seconds(target: Target, proxy: FaultProxy) -> float | str:
    """Django's own backend, its connect through the black hole: seconds until it errs."""
    proxy.forward()
    stock = target.child(stock=True, connect_timeout=STOCK_CONNECT_TIMEOUT, **via(proxy))
    proxy.blackhole()
    stock.call("spawn", url="/q")
    result = stock.call("collect", join_timeout=STOCK_WATCH)
    proxy.forward()
    if result["alive"]:
        return f"still waiting after {STOCK_WATCH:g} s"
    (rec,) = records(result["records"])
    assert not rec.ok, "the stock baseline was expected to fail through the black hole"
    return round(rec.seconds, 3)


def report_black_hole(
    scenario: str,
    target: Target,
    proxy: FaultProxy,
    rec: Rec,
    pool: dict[str, Any],
    bound_seconds: float,
    **facts: Any,
) -> None:
    """Report a request that met the black hole, ``facts`` and then stock Django's
    baseline through the same black hole (stock_black_hole_seconds)."""
    report(
        scenario,
        target,
        request_seconds=round(rec.seconds, 3),
        bound_seconds=bound_seconds,
        error=rec.error,
        message=rec.message,
        pool=pool_counters(pool),
        **facts,
        stock_seconds_until_error=stock_black_hole_seconds(target, proxy),
    )


@pytest.mark.parametrize(
    ("target", "pool_options"),
    [pytest.param(p.values[0], {}, id=f"{p.values[0]}-defaults", marks=p.marks) for p in BOTH]
    + [
        pytest.param(
            name,
            {"PING_TIMEOUT": 2, "CONNECT_TIMEOUT": 3},
            id=f"{name}-timeouts-2-3",
            marks=target_param(name).marks,
        )
        for name in ("postgresql-psycopg2", "mysql-pymysql")
    ],
    indirect=["target"],
)
def test_black_hole_after_idle_fails_within_ping_and_connect_timeouts(
    target: Target, proxy: FaultProxy, pool_options: dict[str, Any]
) -> None:
    """A pooled connection idle for 2 s, then a black hole: the request ends in bounded time.

    The ping gets no answer: after PING_TIMEOUT the watchdog shuts its socket
    down and the connection is discarded; the reconnect goes into the black hole
    too and ends at CONNECT_TIMEOUT. After the heal the next request succeeds.
    """
    ping_timeout = pool_options.get("PING_TIMEOUT", PING_TIMEOUT)
    connect_timeout = pool_options.get("CONNECT_TIMEOUT", CONNECT_TIMEOUT)
    child = target.child(pool_options, **via(proxy))
    assert one(child).ok
    time.sleep(IDLE)
    proxy.blackhole()
    rec = one(child)
    after_black_hole = pool_of(child)
    proxy.forward()
    healed = one(child)
    pool = pool_of(child)
    report_black_hole(
        "black_hole_after_idle",
        target,
        proxy,
        rec,
        pool,
        ping_timeout + connect_timeout,
        pool_options=pool_options,
        request_after_heal_ok=healed.ok,
        request_after_heal_seconds=round(healed.seconds, 3),
        pings_timed_out=pool["pings_timed_out"],
    )
    assert not rec.ok
    assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    assert names_connection_problem(rec.message) or "timeout" in rec.message.lower(), rec.brief()
    # It waited for the ping's deadline, then for the connect's: no longer.
    assert ping_timeout - 0.2 <= rec.seconds <= ping_timeout + connect_timeout + MARGIN
    assert after_black_hole["pings_timed_out"] == 1
    assert after_black_hole["checked_out"] == 0
    assert (after_black_hole["connecting"], after_black_hole["pinging"]) == (0, 0)
    assert healed.ok, healed.brief()
    assert healed.seconds < ping_timeout


@pytest.mark.parametrize("target", [target_param("mysql-mysqlclient")], indirect=True)
def test_black_hole_under_gevent_with_a_driver_that_waits_in_c(
    target: Target, proxy: FaultProxy
) -> None:
    """gevent and mysqlclient: the ping's deadline fires although the hub's thread is blocked.

    mysqlclient waits in libmariadb, so no greenlet runs meanwhile; a watchdog
    that gevent had turned into a greenlet never ran, and the request waited
    until the network healed (minutes). The watchdog is an OS thread of its own.
    """
    ping_timeout, connect_timeout = 2.0, 3.0
    child = target.child(
        {"PING_TIMEOUT": ping_timeout, "CONNECT_TIMEOUT": connect_timeout},
        gevent=True,
        **via(proxy),
    )
    assert one(child).ok
    time.sleep(IDLE)
    proxy.blackhole()
    # Bounded well below one(): a request stuck until the heal fails here, not hangs.
    bound = ping_timeout + connect_timeout + MARGIN
    (rec,) = records([child.call("request", url="/q", timeout=bound + 10)["record"]])
    after_black_hole = pool_of(child)
    proxy.forward()
    healed = one(child)
    assert not rec.ok
    assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    assert ping_timeout - 0.2 <= rec.seconds <= bound, rec.brief()
    assert after_black_hole["pings_timed_out"] == 1
    assert after_black_hole["checked_out"] == 0
    assert healed.ok, healed.brief()


@pytest.mark.parametrize("target", [target_param("postgresql-psycopg2")], indirect=True)
@pytest.mark.parametrize("fault", ["silent", "after_login", "refused_then_silent"])
def test_psycopg2_under_a_gevent_wait_callback_connects_within_connect_timeout(
    target: Target, proxy: FaultProxy, fault: str
) -> None:
    """gevent and psycopg2 with psycogreen's wait callback: a new connection to a silent server.

    With a wait callback psycopg2 connects asynchronously, and libpq applies
    connect_timeout only to its blocking connect: the request waited until the
    server answered or the kernel gave up (for ever, here: the proxy accepted).
    After the login, Django's session setup has CONNECT_TIMEOUT of its own.
    ``refused_then_silent``: a multi-host HOST whose first host refuses; libpq
    opens the next host's socket under the same descriptor number.
    """
    connect_timeout = 3.0
    where = via(proxy)
    if fault == "refused_then_silent":
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        refusing = closed.getsockname()[1]
        closed.close()  # nothing listens there: refused at once
        where = {"HOST": "127.0.0.1,127.0.0.1", "PORT": f"{refusing},{proxy.port}"}
    child = target.child({"CONNECT_TIMEOUT": connect_timeout}, gevent=True, **where)
    assert child.call("setup")["wait_callback"] == "BoundedWait"  # the pool wrapped it
    child.call("evict")  # the next request opens a new connection
    if fault in ("silent", "refused_then_silent"):
        proxy.blackhole()
        bound, expected = connect_timeout + MARGIN, "within connect_timeout=3s"
    else:
        proxy.forward_first(LOGIN_CHUNKS["postgresql"])
        bound, expected = 2 * connect_timeout + MARGIN, "session setup"
    (rec,) = records([child.call("request", url="/q", timeout=bound + 10)["record"]])
    pool = pool_of(child)
    proxy.forward()
    healed = one(child)
    assert not rec.ok
    assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    assert expected in rec.message, rec.brief()
    assert connect_timeout - 0.2 <= rec.seconds <= bound, rec.brief()
    assert (pool["checked_out"], pool["connecting"], pool["size"]) == (0, 0, 0)
    assert healed.ok, healed.brief()


@pytest.mark.parametrize(
    "target",
    [target_param("postgresql-psycopg"), target_param("postgresql-psycopg2")],
    indirect=True,
)
def test_a_return_that_closes_a_kept_server_side_cursor_ends_at_ping_timeout(
    target: Target, proxy: FaultProxy
) -> None:
    """A request kept an iterator's server-side cursor; the server goes silent before its end.

    The return closes the checkout's server-side cursors (CLOSE, a round trip)
    before the connection goes back: it waited as long as the silence lasted,
    holding the pool's only connection, so that requests after the heal failed
    with PoolExhausted blaming the application. Now it has PING_TIMEOUT, as the
    reset on return does, and the connection is discarded.
    """
    ping_timeout, view_sleep = 2.0, 2.0
    child = target.child(
        {"PING_TIMEOUT": ping_timeout, "POOL_SIZE": 1, "MAX_OVERFLOW": 0, "TIMEOUT": 3},
        **via(proxy),
    )
    child.call("spawn", url=f"/cursor-kept?sleep={view_sleep}")
    time.sleep(view_sleep / 2)  # the view has read its rows, and sleeps
    proxy.blackhole()
    bound = view_sleep + ping_timeout + MARGIN
    out = child.call("collect", join_timeout=bound + 5, timeout=bound + 15)
    proxy.forward()
    healed = one(child)
    assert out["alive"] == 0, "the request's end was still waiting for the server"
    (rec,) = records(out["records"])
    assert rec.ok, rec.brief()  # the view had its rows; only the return met the silence
    assert view_sleep + ping_timeout - 0.2 <= rec.seconds <= bound, rec.brief()
    (pool,) = out["pools"]
    assert pool["pings_timed_out"] == 1
    assert (pool["checked_out"], pool["connections_invalidated"]) == (0, 1)
    assert healed.ok, healed.brief()


#: The client's chunks of a login through the proxy: libpq's SSL request and
#: startup message (trust); MariaDB's handshake response (root, no password).
LOGIN_CHUNKS = {"postgresql": 2, "mysql": 1}


@pytest.mark.parametrize(
    "target",
    [
        target_param("postgresql-psycopg"),
        target_param("postgresql-psycopg2"),
        target_param("mysql-mysqlclient"),
        target_param("mysql-pymysql"),
    ],
    indirect=True,
)
def test_a_server_that_hangs_after_the_login_fails_within_connect_timeout(
    target: Target, proxy: FaultProxy
) -> None:
    """The login is answered, the session setup's statements are not.

    The driver's connect timeout ended with the login, so the setup's first
    statement waited for ever: Django's (SET TimeZone) on PostgreSQL,
    mysqlclient's own SET NAMES inside its connect on MySQL. Now the session
    setup of a new connection has CONNECT_TIMEOUT of its own (the login's and
    the setup's: twice at most). PyMySQL reads its whole connect with the
    connect timeout (drivers/mysql.py, HANDSHAKE_ONLY).
    """
    connect_timeout = 2.0
    child = target.child({"CONNECT_TIMEOUT": connect_timeout}, **via(proxy))
    assert one(child).ok
    child.call("evict")  # the next request opens a new connection
    proxy.forward_first(LOGIN_CHUNKS[target.vendor])  # the login, and nothing more
    bound = 2 * connect_timeout + MARGIN
    (rec,) = records([child.call("request", url="/q", timeout=bound + 10)["record"]])
    proxy.forward()
    healed = one(child)
    assert not rec.ok
    assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    if target.driver != "pymysql":
        assert "session setup" in rec.message, rec.brief()
    assert connect_timeout - 0.2 <= rec.seconds <= bound, rec.brief()
    assert healed.ok, healed.brief()
    assert pool_of(child)["checked_out"] == 0


@pytest.mark.parametrize("target", [target_param("mysql-mysqlclient")], indirect=True)
@pytest.mark.parametrize("chunks", [2, 3])
def test_mysqlclient_over_tls_ends_a_silent_login_at_connect_timeout(
    target: Target, proxy: FaultProxy, chunks: int
) -> None:
    """OPTIONS["ssl"]: the TLS handshake is done, then the server (or path) says nothing.

    libmariadb's connect_timeout bounds a plain login only; over TLS it reads
    with read_timeout, none by default: the checkout waited for ever (still
    waiting at 100 s in a helper's run; Django's own backend too). The pool
    gives the login CONNECT_TIMEOUT as read and write timeouts, then lifts
    them: a query longer than CONNECT_TIMEOUT still runs on that connection.
    """
    ca = getattr(target.server, "tls_ca", None)  # servers.MariaDBInstance's
    if ca is None:
        unavailable("openssl is needed to give the fault MariaDB a TLS certificate")
    connect_timeout = 2.0
    child = target.child(
        {"CONNECT_TIMEOUT": connect_timeout},
        OPTIONS={"ssl": {"ca": str(ca)}},
        **via(proxy),
    )
    child.call("evict")  # the next request opens a new connection
    proxy.forward_first(chunks)  # the TLS handshake (its client half), then nothing
    bound = connect_timeout + MARGIN
    (rec,) = records([child.call("request", url="/q", timeout=bound + 10)["record"]])
    proxy.forward()
    slow = one(child, url="/q?sleep=3")  # longer than CONNECT_TIMEOUT: not cut
    assert not rec.ok
    assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    assert connect_timeout - 0.2 <= rec.seconds <= bound, rec.brief()
    assert slow.ok and slow.seconds >= 3, slow.brief()
    assert pool_of(child)["checked_out"] == 0


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_connect_to_a_silent_address_ends_at_connect_timeout(
    target: Target, proxy: FaultProxy
) -> None:
    """An address that accepts TCP and never answers: CONNECT_TIMEOUT bounds the checkout.

    TIMEOUT (the wait for a free slot) does not bound a connect and is set
    low on purpose: the connect timeout does.
    """
    child = target.child({"TIMEOUT": 1}, **via(proxy))
    child.call("evict")  # close the connection the child's setup left idle
    assert pool_of(child)["size"] == 0
    proxy.blackhole()
    rec = one(child)
    pool = pool_of(child)
    report_black_hole("connect_to_silent_address", target, proxy, rec, pool, CONNECT_TIMEOUT)
    assert not rec.ok
    assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
    assert CONNECT_TIMEOUT - 1.0 <= rec.seconds <= CONNECT_TIMEOUT + MARGIN
    assert (pool["checked_out"], pool["connecting"], pool["size"]) == (0, 0, 0)


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_stuck_pings_are_visible_and_the_pool_serves_again_after_the_heal(
    target: Target, proxy: FaultProxy
) -> None:
    """POOL_SIZE 2, both connections stuck in pings; the network heals meanwhile.

    While stuck, pool_status() shows them pinging, LEAK_TIMEOUT reports them,
    and PoolExhausted says the server is not answering (not that the
    application holds them). The stuck pings end at PING_TIMEOUT, and the
    first request after the heal succeeds within PING_TIMEOUT of it.
    """
    child = target.child(
        {"POOL_SIZE": 2, "MAX_OVERFLOW": 0, "TIMEOUT": 1, "LEAK_TIMEOUT": 1}, **via(proxy)
    )
    burst = child.call("burst", threads=2, url="/q?sleep=0.2")
    assert all(r[3] for r in burst["records"])
    time.sleep(IDLE)
    proxy.blackhole()
    black_hole = time.monotonic()
    child.call("spawn", url="/q", threads=2)
    time.sleep(0.5)
    stuck = pool_of(child)
    exhausted = one(child)  # waits TIMEOUT=1 s for a slot
    proxy.forward()
    healed = time.monotonic()
    # Requests one after another from the heal on, until one succeeds.
    after_heal: list[Rec] = []
    while time.monotonic() - healed < PING_TIMEOUT + 10:
        after_heal.append(one(child))
        if after_heal[-1].ok:
            break
    spawned = child.call("collect", join_timeout=30)
    pool = pool_of(child)
    log = child.log.read_text(errors="replace")
    first_ok = next((r for r in after_heal if r.ok), None)
    stuck_recs = records(spawned["records"])
    report(
        "stuck_pings_then_heal",
        target,
        status_while_stuck={k: stuck[k] for k in ("checked_out", "connecting", "pinging")},
        exhausted_message=exhausted.message,
        stuck_request_seconds=[round(r.seconds, 3) for r in stuck_recs],
        stuck_requests_ok=[r.ok for r in stuck_recs],
        requests_after_heal=len(after_heal),
        failed_after_heal=sum(not r.ok for r in after_heal),
        seconds_from_heal_to_first_success=(
            round(first_ok.end - healed, 3) if first_ok is not None else None
        ),
        seconds_from_black_hole_to_heal=round(healed - black_hole, 3),
        leak_reports=log.count("pinging the server"),
        pool=pool_counters(pool),
        leaks=pool["leaks"],
        stock_note="stock Django opens a new connection per request: served at once",
    )
    assert (stuck["pinging"], stuck["checked_out"]) == (2, 2)
    assert not exhausted.ok
    assert "django_sapool.errors.PoolExhausted" in exhausted.classes, exhausted.brief()
    assert "0 held by the application" in exhausted.message
    assert "2 pinging" in exhausted.message
    assert "not answering" in exhausted.message
    assert "close_old_connections" not in exhausted.message
    assert first_ok is not None, [r.brief() for r in after_heal]
    assert first_ok.end - healed <= PING_TIMEOUT + MARGIN
    assert spawned["alive"] == 0
    for rec in stuck_recs:  # the stuck ones reconnected once the path was back
        assert rec.seconds <= PING_TIMEOUT + MARGIN, rec.brief()
    assert "has been pinging the server" in log
    assert pool["leaks"] >= 2
    assert pool["pings_timed_out"] == 2
    assert (pool["checked_out"], pool["pinging"]) == (0, 0)


#: A MySQL packet header announcing 255 bytes of payload, then only 3 of them:
#: the client waits for the rest, which never comes.
TRUNCATED_PACKET = b"\xff\x00\x00\x01\x00\x00\x00"


@pytest.mark.mysql
@pytest.mark.parametrize(
    "target", [p for p in FOUR_DRIVERS if p.id.startswith("mysql")], indirect=True
)
@pytest.mark.parametrize("fault", ["garbage", "stall"])
def test_mysql_ping_answered_with_garbage_or_stalled_is_bounded(
    target: Target, proxy: FaultProxy, fault: str
) -> None:
    """COM_PING answered with a truncated packet, or a server that stops reading mid-ping."""
    options = {"PING_TIMEOUT": 2, "CONNECT_TIMEOUT": 3}
    child = target.child(options, **via(proxy))
    assert one(child).ok
    time.sleep(IDLE)
    if fault == "garbage":
        proxy.garbage(TRUNCATED_PACKET)
    else:
        proxy.stall()
    rec = one(child)
    pool = pool_of(child)
    report(
        f"mysql_ping_{fault}",
        target,
        request_seconds=round(rec.seconds, 3),
        bound_seconds=options["PING_TIMEOUT"] + options["CONNECT_TIMEOUT"],
        ok=rec.ok,
        message=rec.message,
        pool=pool_counters(pool),
        pings_timed_out=pool["pings_timed_out"],
    )
    assert not rec.ok
    assert rec.seconds <= options["PING_TIMEOUT"] + options["CONNECT_TIMEOUT"] + MARGIN
    assert pool["pings_failed"] >= 1
    assert pool["checked_out"] == 0
