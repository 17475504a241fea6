"""No pool outlives its settings: credential rotation and aliases used once.

A rotation changes an alias's settings in place while the process runs (a
secrets manager writing the new password into ``settings.DATABASES``). Each
change opens a new pool; the previous one must be disposed of, or the process
keeps a pool, and its server sessions, per password it ever had. An alias used
once (a management command's, an old tenant's) must give its sessions back
after IDLE_TIMEOUT even though MIN_IDLE would keep one warm: the whole pool is
disposed of, not only its surplus.

MariaDB rotates for real (``ALTER USER ... IDENTIFIED BY`` on a user of the
test's own, granted the test database only); the throwaway PostgreSQL trusts
every local connection, so there the password change is a settings change the
server does not check, and the user is rotated too, between two roles.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .conftest import POOL, Target
from .harness import Child, Rec, Timeline, error_counts, records, report, wait_until

ROTATIONS = 20
THREADS = 3
URL = "/q?sleep=0.05"
LIMIT = POOL["POOL_SIZE"] + POOL["MAX_OVERFLOW"]
#: Old pools' connections are closed when returned: the server needs a moment to show it.
SETTLE = 5.0

ALIASES = 50
IDLE_TIMEOUT = 1
#: Bound on the disposal of unused pools: IDLE_TIMEOUT, the housekeeper's interval, margin.
DISPOSAL_BOUND = 10.0
#: How long the control (IDLE_TIMEOUT None) waits before counting again.
CONTROL_WAIT = 3.0


def new_password() -> str:
    return f"rot-{secrets.token_hex(12)}"


class Credentials:
    """Users of the test's own, whose passwords the test rotates on the server."""

    def __init__(self, target: Target) -> None:
        self.target = target
        tag = secrets.token_hex(4)
        # MariaDB: one user whose password really changes. PostgreSQL (trust auth):
        # two roles, so the rotation also changes who connects.
        count = 1 if target.vendor == "mysql" else 2
        self.users = [f"rot_{tag}_{i}" for i in range(count)]
        self.passwords: list[str] = []  # every password used, to look for in the logs
        self.current: tuple[str, str] = ("", "")

    def create(self) -> tuple[str, str]:
        server, db = self.target.server, self.target.dbname
        password = self._remember(new_password())
        for user in self.users:
            if self.target.vendor == "mysql":
                server.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
                server.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'%'")
            else:
                server.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
                server.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{db}" TO "{user}"')
                # PostgreSQL 15: only the owner creates in public (the child's setup does).
                server.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{user}"', dbname=db)
        self.current = (self.users[0], password)
        return self.current

    def rotate(self, i: int) -> tuple[str, str]:
        """Give the next user a new password on the server; return (user, password)."""
        user = self.users[(i + 1) % len(self.users)]
        password = self._remember(new_password())
        if self.target.vendor == "mysql":
            self.target.server.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'")
        else:
            self.target.server.execute(f"ALTER ROLE \"{user}\" PASSWORD '{password}'")
        self.current = (user, password)
        return self.current

    def refused(self, user: str, password: str) -> bool | None:
        """Whether the server refuses ``password`` for ``user`` (None: it does not check)."""
        if self.target.vendor != "mysql":
            return None
        import MySQLdb

        try:
            MySQLdb.connect(
                host="127.0.0.1",
                port=self.target.server.port,
                user=user,
                password=password,
                database=self.target.dbname,
                connect_timeout=5,
            ).close()
        except MySQLdb.OperationalError as exc:
            return exc.args[0] == 1045  # access denied
        return False

    def drop(self) -> None:
        server, db = self.target.server, self.target.dbname
        for user in self.users:
            if self.target.vendor == "mysql":
                server.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            elif server.scalar("SELECT count(*) FROM pg_roles WHERE rolname = %s", [user]):
                # The child's setup made the role own fault_write; the database still exists.
                server.execute(f'DROP OWNED BY "{user}"', dbname=db)
                server.execute(f'DROP ROLE "{user}"')

    def _remember(self, password: str) -> str:
        self.passwords.append(password)
        return password


@contextmanager
def rotating_users(target: Target) -> Iterator[Credentials]:
    credentials = Credentials(target)
    try:
        yield credentials
    finally:
        # Children first: their sessions would keep a role's objects busy.
        for child in target.children:
            child.close()
        credentials.drop()


def rotate(child: Child, credentials: Credentials) -> tuple[list[Rec], int, bool | None]:
    """ROTATIONS times: new password on the server, then in the settings, then a burst.

    Return the records, the bursts with a thread still alive, and whether the
    server refused the old password after the first rotation.
    """
    recs: list[Rec] = []
    alive = 0
    old_refused: bool | None = None
    for i in range(ROTATIONS):
        old_user, old_password = credentials.current
        user, password = credentials.rotate(i)
        if i == 0:
            old_refused = credentials.refused(old_user, old_password)
        if user != old_user:
            child.call("set_setting", key="USER", value=user)
        child.call("set_setting", key="PASSWORD", value=password)
        result = child.call("burst", threads=THREADS, url=URL)
        alive += result["alive"]
        recs += records(result["records"])
    return recs, alive, old_refused


def session_count(target: Target) -> int:
    return len(target.server.sessions(target.dbname))


def test_credential_rotation_leaves_one_pool(target: Target) -> None:
    """After 20 rotations one pool is left, and the server sees only its sessions.

    Every request succeeds (each burst runs on the current credentials); the
    alias's previous pools are disposed of, so the server's sessions of the
    database drop to at most the pool's size (at most POOL_SIZE+MAX_OVERFLOW),
    where a leak would leave up to three per rotation. The churn warning names
    the alias and never a password. Baseline: stock Django (CONN_MAX_AGE=0)
    closes every connection after its request, so no session is left.
    """
    with rotating_users(target) as credentials:
        user, password = credentials.create()
        child = target.child(USER=user, PASSWORD=password)
        started = time.monotonic()
        recs, alive, old_refused = rotate(child, credentials)
        seconds = time.monotonic() - started
        pools = child.call("status")["pools"]
        size = pools[0]["size"] if len(pools) == 1 else -1
        settled = wait_until(
            lambda: session_count(target) <= min(size, LIMIT), timeout=SETTLE, interval=0.1
        )
        sessions = session_count(target)
        pools = child.call("status")["pools"]
        child.close()
        log = child.log.read_text(errors="replace")
        churn = [
            line for line in log.splitlines() if "changed" in line and "alias 'default'" in line
        ]

        # The baseline, alone on the database (the pooled child has exited).
        wait_until(lambda: session_count(target) == 0, timeout=SETTLE, interval=0.1)
        user, password = credentials.current
        stock = target.child(stock=True, USER=user, PASSWORD=password)
        stock_recs, stock_alive, _ = rotate(stock, credentials)
        wait_until(lambda: session_count(target) == 0, timeout=SETTLE, interval=0.1)
        stock_sessions = session_count(target)
        stock_pools = stock.call("status")["pools"]
        stock.close()
        logs = log + stock.log.read_text(errors="replace")
        leaked_passwords = [p for p in credentials.passwords if p in logs]

    failed = Timeline.failed(recs)
    stock_failed = Timeline.failed(stock_recs)
    report(
        "credential_rotation",
        target,
        rotations=ROTATIONS,
        threads=THREADS,
        rotation="ALTER USER IDENTIFIED BY (real)"
        if target.vendor == "mysql"
        else "USER between 2 roles + PASSWORD (trust auth: password not checked)",
        old_password_refused=old_refused,
        seconds=round(seconds, 2),
        requests=len(recs),
        failed=len(failed),
        errors=error_counts(recs),
        distinct_sessions=len({r.pid for r in recs if r.ok}),
        pools_left=len(pools),
        pool_size=[p["size"] for p in pools],
        pool_connections_opened=[p["connections_opened"] for p in pools],
        server_sessions_after=sessions,
        settled_within_bound=settled,
        churn_warnings=len(churn),
        passwords_in_logs=len(leaked_passwords),
        stock={
            "requests": len(stock_recs),
            "failed": len(stock_failed),
            "server_sessions_after": stock_sessions,
            "pools": len(stock_pools),
        },
    )
    assert alive == 0 and stock_alive == 0
    assert len(recs) == ROTATIONS * THREADS
    assert failed == [], [r.brief() for r in failed[:10]]
    assert len(pools) == 1, pools
    (pool,) = pools
    assert pool["checked_out"] == 0, pool
    assert settled, (sessions, pool)
    assert sessions <= pool["size"] <= LIMIT, (sessions, pool)
    assert churn, log[-3000:]
    assert leaked_passwords == []
    if target.vendor == "mysql":
        assert old_refused is True  # the rotation was real
    # The baseline itself ran on the rotated credentials.
    assert stock_failed == [], [r.brief() for r in stock_failed[:10]]


def aliases_child(target: Target, idle_timeout: float | None) -> Child:
    """A child with ALIASES aliases a0.. on the target's database, and a default."""
    options = {**POOL, "IDLE_TIMEOUT": idle_timeout, "MIN_IDLE": 1}
    databases: dict[str, Any] = {
        # default (the child's setup) keeps the usual IDLE_TIMEOUT: its session stays.
        "default": target.server.settings(target.dbname, POOL_OPTIONS=POOL),
        **{
            f"a{i}": target.server.settings(target.dbname, POOL_OPTIONS=options)
            for i in range(ALIASES)
        },
    }
    log = target.log_dir / f"child-{len(target.children)}.log"
    child = Child({"driver": target.driver, "databases": databases}, log)
    target.children.append(child)
    child.call("setup")
    return child


def use_each_alias_once(child: Child) -> tuple[list[Rec], int, list[dict[str, Any]]]:
    """Serve one request per alias, all at once; return records, threads alive, pools."""
    for i in range(ALIASES):
        # Held for 0.3 s so that all are in flight together and end close together:
        # the first must still be there when the last is counted.
        child.call("spawn", url=f"/q?alias=a{i}&sleep=0.3")
    result = child.call("collect")
    return records(result["records"]), result["alive"], result["pools"]


def alias_pools(pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pools if p["alias"] != "default"]


def test_aliases_used_once_give_their_sessions_back(target: Target) -> None:
    """50 aliases used once: their pools are disposed of after IDLE_TIMEOUT, sessions too.

    MIN_IDLE=1 keeps each alias's connection open after its request (the server
    shows all 50 right after); once unused for longer than IDLE_TIMEOUT=1 s,
    each pool is disposed of and its session ends (bound ~10 s), and
    pool_status() no longer lists it. Control: with IDLE_TIMEOUT None the 50
    sessions are all still there after the same kind of wait.
    """
    child = aliases_child(target, IDLE_TIMEOUT)
    recs, alive, pools_after_requests = use_each_alias_once(child)
    last_end = max((r.end for r in recs), default=time.monotonic())
    first_end = min((r.end for r in recs), default=last_end)
    alias_sessions = {r.pid for r in recs if r.ok}
    right_after = alias_sessions & set(target.server.sessions(target.dbname))
    counted_after = time.monotonic() - first_end
    total_right_after = session_count(target)
    started = time.monotonic()
    gone = wait_until(
        lambda: not alias_sessions & set(target.server.sessions(target.dbname)),
        timeout=DISPOSAL_BOUND,
        interval=0.1,
    )
    gone_after = time.monotonic() - last_end
    waited = time.monotonic() - started
    left = alias_sessions & set(target.server.sessions(target.dbname))
    total_left = session_count(target)
    pools_left = alias_pools(child.call("status")["pools"])
    child.close()
    failed = Timeline.failed(recs)

    # Control: the same without IDLE_TIMEOUT, alone on the database.
    wait_until(lambda: session_count(target) == 0, timeout=SETTLE, interval=0.1)
    control = aliases_child(target, None)
    control_recs, control_alive, _ = use_each_alias_once(control)
    control_sessions = {r.pid for r in control_recs if r.ok}
    control_right_after = control_sessions & set(target.server.sessions(target.dbname))
    time.sleep(CONTROL_WAIT)
    control_left = control_sessions & set(target.server.sessions(target.dbname))
    control_pools = alias_pools(control.call("status")["pools"])
    control.close()

    report(
        "aliases_used_once",
        target,
        aliases=ALIASES,
        idle_timeout=IDLE_TIMEOUT,
        min_idle=1,
        requests=len(recs),
        failed=len(failed),
        errors=error_counts(recs),
        alias_pools_after_requests=len(alias_pools(pools_after_requests)),
        alias_sessions_right_after=len(right_after),
        server_sessions_right_after=total_right_after,
        counted_seconds_after_first_end=round(counted_after, 2),
        alias_sessions_gone=gone,
        gone_seconds_after_last_end=round(gone_after, 2),
        waited_seconds=round(waited, 2),
        alias_sessions_left=len(left),
        server_sessions_left=total_left,
        alias_pools_left=len(pools_left),
        control={
            "idle_timeout": None,
            "failed": len(Timeline.failed(control_recs)),
            "alias_sessions_right_after": len(control_right_after),
            "wait_seconds": CONTROL_WAIT,
            "alias_sessions_left": len(control_left),
            "alias_pools_left": len(control_pools),
        },
    )
    assert alive == 0 and control_alive == 0
    assert len(recs) == ALIASES
    assert failed == [], [r.brief() for r in failed[:10]]
    assert len(alias_sessions) == ALIASES  # one session each
    assert len(alias_pools(pools_after_requests)) == ALIASES
    # Kept open by MIN_IDLE after the request, until the pool is disposed of.
    assert len(right_after) == ALIASES, (counted_after, sorted(alias_sessions - right_after))
    assert gone, sorted(left)
    assert pools_left == [], [(p["alias"], p["size"]) for p in pools_left]
    # The control: without IDLE_TIMEOUT nothing is given back.
    assert Timeline.failed(control_recs) == []
    assert len(control_left) == ALIASES, len(control_left)
    assert len(control_pools) == ALIASES
