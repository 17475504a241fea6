"""The partition machinery itself: servers inside a network namespace of our own.

A client inside the namespace holds a connection over 127.0.0.1; with the
namespace's ``lo`` down its query gets no answer (no error either) while the
test, outside, still reaches the server over its UNIX socket; once healed, the
held query completes and new connections work. A Django child runs inside too.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import unavailable

from .harness import Child, records
from .netns import Namespace, available
from .servers import Instance, ServerError, cleanup_stale, launch

#: Inside the namespace: open a connection over 127.0.0.1 (CONNECT[vendor]), print
#: its session id, then on a line from stdin run one query and print its result.
#: The alarm bounds it even if the test run is killed while it hangs.
HOLD = """
import signal, sys
signal.alarm(60)
{connect}
print(session, flush=True)
sys.stdin.readline()
cursor = conn.cursor()
cursor.execute("SELECT 42")
print(cursor.fetchone()[0], flush=True)
"""
#: Inside the namespace: one new connection and query.
ONCE = """
import signal, sys
signal.alarm(60)
{connect}
cursor = conn.cursor()
cursor.execute("SELECT 1")
print(cursor.fetchone()[0])
"""
CONNECT = {
    "postgresql": (
        "import psycopg\n"
        "conn = psycopg.connect(host='127.0.0.1', port=int(sys.argv[1]), user='postgres',\n"
        "                       dbname='postgres', connect_timeout={timeout}, autocommit=True)\n"
        "session = conn.info.backend_pid\n"
    ),
    "mysql": (
        "import MySQLdb\n"
        "conn = MySQLdb.connect(host='127.0.0.1', port=int(sys.argv[1]), user='root',\n"
        "                       password='', connect_timeout={timeout})\n"
        "session = conn.thread_id()\n"
    ),
}
#: The server's view of a session, ("tcp" or "unix", what it is doing); MariaDB
#: names a TCP peer "host:port" ("localhost:port": it resolves 127.0.0.1).
PEER = {
    "postgresql": "SELECT CASE WHEN client_port > 0 THEN 'tcp' ELSE 'unix' END, state "
    "FROM pg_stat_activity WHERE pid = %s",
    "mysql": "SELECT IF(host LIKE '%%:%%', 'tcp', 'unix'), command "
    "FROM information_schema.processlist WHERE id = %s",
}
IDLE = {"postgresql": ("tcp", "idle"), "mysql": ("tcp", "Sleep")}
#: Words of each driver's message for a connect that timed out.
CONNECT_TIMED_OUT = {"postgresql": "timeout expired", "mysql": "(110)"}  # ETIMEDOUT


@pytest.fixture(scope="module")
def namespace() -> Iterator[Namespace]:
    ok, why = available()
    if not ok:
        unavailable(f"no network namespace: {why}")
    cleanup_stale()
    with Namespace() as ns:
        yield ns


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
def netns_server(request: pytest.FixtureRequest, namespace: Namespace) -> Iterator[Instance]:
    try:
        server = launch(request.param, namespace=namespace)
    except ServerError as exc:
        unavailable(f"could not start a namespaced {request.param}: {exc}")
    try:
        yield server
    finally:
        server.destroy()


def readline(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The process's next stdout line, or None if none came within ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else None


def inside(ns: Namespace, server: Instance, script: str) -> subprocess.Popen[str]:
    code = script.format(connect=CONNECT[server.vendor].format(timeout=1))
    return subprocess.Popen(
        [*ns.prefix(), sys.executable, "-c", code, str(server.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_partition_hangs_established_connection(
    namespace: Namespace, netns_server: Instance
) -> None:
    """lo down: a held connection's query hangs silently; the UNIX socket still works."""
    ns, server = namespace, netns_server
    hold = inside(ns, server, HOLD)
    late: subprocess.Popen[str] | None = None
    try:
        line = readline(hold, 10)
        if not (line and line.isdigit()):
            hold.kill()
            pytest.fail(f"no connection from inside: {hold.communicate(timeout=5)[1]}")
        session = int(line)
        # Over TCP inside the namespace (the test's own sessions use the socket).
        assert tuple(server.query(PEER[server.vendor], [session])[0]) == IDLE[server.vendor]

        ns.partition()
        started = time.monotonic()
        assert hold.stdin is not None
        hold.stdin.write("go\n")
        hold.stdin.flush()
        late = inside(ns, server, ONCE)  # a new connection meanwhile
        answer = readline(hold, 2.0)
        assert answer is None and hold.poll() is None, "the query got through a partition"
        # The test process still reaches the server, which never saw the query.
        assert server.scalar("SELECT 1") == 1
        assert tuple(server.query(PEER[server.vendor], [session])[0]) == IDLE[server.vendor]
        out, err = late.communicate(timeout=10)
        assert late.returncode != 0 and CONNECT_TIMED_OUT[server.vendor] in err, (out, err)
        hung = time.monotonic() - started

        ns.heal()
        healed = time.monotonic()
        # Queued segments go at the next retransmission (after ~2 s down: within 2 s).
        assert readline(hold, 15) == "42"
        delivered = time.monotonic() - healed
        assert hold.wait(5) == 0
        late = inside(ns, server, ONCE)
        out, err = late.communicate(timeout=10)
        assert late.returncode == 0 and out.strip() == "1", (out, err)
        print(
            f"NETNS {server.vendor}: partitioned {hung:.2f} s; "
            f"held query delivered {delivered:.2f} s after heal"
        )
    finally:
        if ns.partitioned:
            ns.heal()
        for proc in (hold, late):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate(timeout=5)


@pytest.mark.postgresql
def test_child_runs_inside(namespace: Namespace, tmp_path: Path) -> None:
    """A Django child started with the namespace prefix serves requests over 127.0.0.1."""
    try:
        server = launch("postgresql", namespace=namespace)
    except ServerError as exc:
        unavailable(f"could not start a namespaced PostgreSQL: {exc}")
    child = None
    try:
        dbname = f"netns_{uuid.uuid4().hex[:10]}"
        server.create_database(dbname)
        db = server.settings(dbname, POOL_OPTIONS={"POOL_SIZE": 2, "MAX_OVERFLOW": 0})
        child = Child(
            {"driver": "psycopg", "databases": {"default": db}},
            tmp_path / "child.log",
            prefix=namespace.prefix(),
        )
        assert child.call("setup")["driver"] == "psycopg"
        result = child.call("burst", threads=2, url="/q", requests=3, timeout=30)
        recs = records(result["records"])
        assert len(recs) == 6 and all(r.ok for r in recs), [r.brief() for r in recs]
        addrs = server.query(
            "SELECT DISTINCT client_addr::text FROM pg_stat_activity WHERE datname = %s",
            [dbname],
        )
        assert addrs == [("127.0.0.1/32",)]
    finally:
        if child is not None:
            child.close()
        server.destroy()
