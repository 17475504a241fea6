"""django_sapool in front of PgBouncer in transaction pooling mode.

``scripts/ensure-pgbouncer`` provides the PgBouncer (installs it, starts our own
instance on 127.0.0.1:6432 or SAPOOL_PGBOUNCER_PORT); the ``pgbouncer`` fixture
runs it, and skips when it cannot work (fails under CI=true).

- Django's ``backends``, ``transactions`` and ``transaction_hooks`` modules through
  PgBouncer with psycopg 3 and psycopg2 (tests/django_suite/settings_pgbouncer.py,
  expected failures under the "pgbouncer" key of expected_failures.py).
- Two layers of pooling, measured: many threads through our pool through PgBouncer;
  PostgreSQL sees at most PgBouncer's ``default_pool_size`` sessions while our pool
  holds POOL_SIZE client connections to PgBouncer, and idle pooled connections hold
  no server session at all.
- Why docs/pgbouncer.md asks for DISABLE_SERVER_SIDE_CURSORS: a server-side cursor
  used across transactions breaks as soon as PgBouncer runs the next FETCH on
  another server connection; with the setting the same code works.
- What else does not survive a transaction (plain psycopg, no Django): session
  ``SET`` and advisory locks leak to other clients, the ``options`` startup
  parameter is refused, prepared statements are lost; TimeZone is tracked.

The failure modes are forced, not left to chance: with one client PgBouncer hands
the same server connection back every time, so other clients open transactions
until one sits on the server connection that holds the state in question.

Each scenario runs in a fresh Django process: this module is also the child
(``python -m tests.integration.test_pgbouncer`` with a JSON config in
SAPOOL_PGBOUNCER_CHILD), since Django's settings and its psycopg choice are per
process.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.child_setup import setup_django, use_driver

ROOT = Path(__file__).resolve().parents[2]
PGBOUNCER_PORT = int(os.environ.get("SAPOOL_PGBOUNCER_PORT") or 6432)
CHILD_ENV = "SAPOOL_PGBOUNCER_CHILD"

# Our pool is larger than PgBouncer's server-side cap on purpose (ensure-pgbouncer
# sets default_pool_size = 10): the test shows the cap, not the pool, bounding
# what PostgreSQL sees.
POOL_SIZE = 16
THREADS = 32


# ----------------------------------------------------------------------------
# The child: one Django process per scenario.
# ----------------------------------------------------------------------------


def _child_main() -> None:
    config: dict[str, Any] = json.loads(os.environ[CHILD_ENV])
    use_driver(config["driver"])
    setup_django(
        # A model for QuerySet.iterator() (_cursors); its table is created there.
        INSTALLED_APPS=["django.contrib.contenttypes"],
        DATABASES=config["databases"],
    )
    from django.db import connection

    scenarios: dict[str, Callable[..., dict[str, Any]]] = {"load": _load, "cursors": _cursors}
    scenario = scenarios[config["scenario"]]
    facts = scenario(config, **config.get("params", {}))
    facts["driver"] = connection.Database.__name__
    print("SAPOOL-RESULT " + json.dumps(facts, default=str))


class _Watcher:
    """Unpooled sessions that watch ours: PostgreSQL directly, and PgBouncer's console."""

    def __init__(self, config: dict[str, Any]) -> None:
        from django.db import connection

        database = connection.Database  # the driver Django picked
        self.dbname: str = config["dbname"]
        self.server = database.connect(config["server_conninfo"])
        self.server.autocommit = True
        # The admin console understands the simple query protocol only, which
        # both drivers use for a statement without parameters, unless psycopg 3
        # prepares it (after prepare_threshold runs of the same statement).
        extra = {"prepare_threshold": None} if database.__name__ == "psycopg" else {}
        self.admin = database.connect(config["admin_conninfo"], **extra)
        self.admin.autocommit = True
        self.lock = threading.Lock()

    def _rows(self, conn: Any, sql: str, params: Any = None) -> list[dict[str, Any]]:
        with self.lock:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, params) if params else cursor.execute(sql)
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            finally:
                cursor.close()

    def server_sessions(self) -> int:
        """Sessions PostgreSQL has on our database: PgBouncer's server connections."""
        rows = self._rows(
            self.server,
            "SELECT count(*) AS n FROM pg_stat_activity "
            "WHERE datname = %s AND backend_type = 'client backend'",
            [self.dbname],
        )
        return int(rows[0]["n"])

    def clients(self) -> int:
        """Client connections PgBouncer has for our database: our pool's connections."""
        return sum(
            1 for r in self._rows(self.admin, "SHOW CLIENTS") if r["database"] == self.dbname
        )

    def pool(self) -> dict[str, Any]:
        for row in self._rows(self.admin, "SHOW POOLS"):
            if row["database"] == self.dbname:
                return row
        return {}

    def wait_no_server_sessions(self, timeout: float = 10.0) -> int:
        """Wait for PgBouncer to close its idle server connections to our database."""
        deadline = time.monotonic() + timeout
        while (sessions := self.server_sessions()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return sessions

    def config(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._rows(self.admin, "SHOW CONFIG")}

    def close(self) -> None:
        self.server.close()
        self.admin.close()


def _load(config: dict[str, Any], threads: int, cycles: int, hold: float) -> dict[str, Any]:
    """``threads`` threads run ``cycles`` short transactions each through our pool."""
    from dataclasses import asdict

    from django.db import connection, transaction

    import django_sapool

    watcher = _Watcher(config)
    done = threading.Event()
    peak = {"server": 0, "clients": 0, "cl_waiting": 0, "sv_active": 0}

    def sample() -> None:
        while not done.is_set():
            pool = watcher.pool()
            now = {
                "server": watcher.server_sessions(),
                "clients": watcher.clients(),
                "cl_waiting": int(pool.get("cl_waiting", 0)),
                "sv_active": int(pool.get("sv_active", 0)),
            }
            for key, value in now.items():
                peak[key] = max(peak[key], value)
            time.sleep(0.005)

    lock = threading.Lock()
    backends: set[int] = set()
    split_transactions: list[tuple[int, int]] = []
    errors: list[str] = []

    def work() -> None:
        try:
            for _ in range(cycles):
                with transaction.atomic(), connection.cursor() as cursor:
                    # Two statements of one transaction: PgBouncer must run both
                    # on the same server connection.
                    cursor.execute("SELECT pg_backend_pid(), pg_sleep(%s)", [hold])
                    first = cursor.fetchone()[0]
                    cursor.execute("SELECT pg_backend_pid()")
                    second = cursor.fetchone()[0]
                with lock:
                    backends.add(first)
                    if first != second:
                        split_transactions.append((first, second))
                connection.close()  # back to our pool, as at the end of a request
        except Exception as exc:  # reported, not raised: the parent asserts on it
            with lock:
                errors.append(repr(exc))
            connection.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.monotonic()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()

    # Idle, our pool keeps its client connections to PgBouncer; PgBouncer closes
    # its idle server connections (server_idle_timeout), so idle pooled
    # connections cost PostgreSQL nothing.
    clients_idle = watcher.clients()
    server_sessions_idle = watcher.wait_no_server_sessions()
    facts = {
        "elapsed": elapsed,
        "errors": errors,
        "split_transactions": split_transactions,
        "distinct_backends": len(backends),
        "peak": peak,
        "clients_idle": clients_idle,
        "server_sessions_idle": server_sessions_idle,
        "pgbouncer_config": {
            k: v
            for k, v in watcher.config().items()
            if k in ("pool_mode", "default_pool_size", "max_client_conn", "reserve_pool_size")
        },
        "pools": [asdict(s) for s in django_sapool.pool_status("default")],
    }
    watcher.close()
    return facts


def _cursors(config: dict[str, Any]) -> dict[str, Any]:
    """``QuerySet.iterator()`` read across transactions, with and without server-side cursors.

    Between two chunks another client takes the server connection that holds the
    cursor; PgBouncer must then run the next FETCH on another one.
    """
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections

    watcher = _Watcher(config)
    cap = int(watcher.config()["default_pool_size"])
    # A cursor lost by an earlier run stays open on its server connection until
    # PgBouncer closes that (server_idle_timeout): start without any.
    watcher.wait_no_server_sessions()
    watcher.close()
    setup = connections["default"]
    if ContentType._meta.db_table not in setup.introspection.table_names():
        with setup.schema_editor() as editor:
            editor.create_model(ContentType)
    ContentType.objects.all().delete()
    ContentType.objects.bulk_create(
        ContentType(app_label="sapool", model=f"m{i:03}") for i in range(100)
    )
    setup.close()

    database = setup.Database
    facts: dict[str, Any] = {}
    # The default alias first: the other one leaves its cursor behind.
    for alias in ("default", "server_side_cursors"):
        rows = ContentType.objects.using(alias).order_by("pk").iterator(chunk_size=10)
        seen = [next(rows)]  # the first chunk of 10 is fetched
        # Other clients open transactions until one sits on the server connection
        # holding the cursor (pg_cursors lists the session's own cursors). With
        # PgBouncer's LIFO reuse the first one does; the loop makes it certain.
        holders: list[Any] = []
        holds_cursor = False
        for _ in range(cap - 1):
            other = database.connect(config["through_pgbouncer_conninfo"])
            holders.append(other)
            cursor = other.cursor()
            cursor.execute("SELECT count(*) FROM pg_cursors")  # starts a transaction
            if cursor.fetchone()[0]:
                holds_cursor = True
                break
        error = None
        try:
            seen.extend(rows)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            for other in holders:
                other.rollback()
                other.close()
            try:
                rows.close()
            except Exception:
                pass  # CLOSE of a cursor PgBouncer lost fails as well
            connections[alias].close()
        facts[alias] = {
            "rows": len(seen),
            "error": error,
            "other_client_held_the_cursor": holds_cursor,
        }
    return facts


if __name__ == "__main__":
    _child_main()
    raise SystemExit(0)


# ----------------------------------------------------------------------------
# The tests.
# ----------------------------------------------------------------------------

import pytest  # noqa: E402

from .conftest import PgServer, own_pg_database, run_child, unavailable  # noqa: E402
from .suite_runs import run_suite  # noqa: E402


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    user: str

    def conninfo(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"


@pytest.fixture(scope="session")
def pgbouncer(pg: PgServer) -> PgBouncer:
    """Our PgBouncer on 127.0.0.1, started or reused by scripts/ensure-pgbouncer."""
    try:
        proc = subprocess.run(
            [str(ROOT / "scripts" / "ensure-pgbouncer")],
            capture_output=True,
            text=True,
            timeout=300,  # a first run installs the package
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"scripts/ensure-pgbouncer could not run: {exc!r}")
    if proc.returncode != 0:
        unavailable(
            f"scripts/ensure-pgbouncer failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    return PgBouncer(host="127.0.0.1", port=PGBOUNCER_PORT, user=pg.user)


@pytest.fixture(scope="module")
def pgb_database(pg: PgServer, pgbouncer: PgBouncer) -> Iterator[str]:
    """A database of our own, created and dropped directly on PostgreSQL (the drop
    terminates the server connections PgBouncer may still keep to it)."""
    with own_pg_database(pg, "sapool_pgb") as name:
        yield name


# -- Django's test suite through PgBouncer ------------------------------------


@pytest.mark.postgresql
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_django_suite_through_pgbouncer(
    driver: str, pgbouncer: PgBouncer, django_tests: None
) -> None:
    pytest.importorskip(driver)
    # run.py picks the driver for settings_postgresql*; settings_pgbouncer reads
    # the same variable (through settings_postgresql) to hide psycopg for psycopg2.
    env = {"SAPOOL_PG_DRIVER": driver, "SAPOOL_PGBOUNCER_PORT": str(PGBOUNCER_PORT)}
    output = run_suite("--settings", "settings_pgbouncer", "--driver", driver, timeout=600, env=env)
    # The driver really used, and our runner marking the "pgbouncer" expectations.
    assert f"is_psycopg3={driver == 'psycopg'}" in output
    assert "(pgbouncer: PostgreSQL through PgBouncer" in output
    assert f"'default': django_sapool.backends.postgresql, driver {driver}" in output


# -- Two layers of pooling -----------------------------------------------------


def _databases(pgbouncer: PgBouncer, dbname: str, **extra: Any) -> dict[str, Any]:
    """DATABASES as docs/pgbouncer.md recommends, pointing at our PgBouncer."""
    base = {
        "ENGINE": "django_sapool.backends.postgresql",
        "NAME": dbname,
        "USER": pgbouncer.user,
        "HOST": pgbouncer.host,
        "PORT": pgbouncer.port,
        "DISABLE_SERVER_SIDE_CURSORS": True,
        "POOL_OPTIONS": {"POOL_SIZE": POOL_SIZE, "MAX_OVERFLOW": 0, "TIMEOUT": 60},
    }
    return {"default": {**base, **extra}}


def _run_child(config: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    facts = run_child(config, timeout, module="tests.integration.test_pgbouncer", env_var=CHILD_ENV)
    assert facts["driver"] == config["driver"]
    return facts


def _config(
    driver: str, scenario: str, pg: PgServer, pgbouncer: PgBouncer, dbname: str, **kw: Any
) -> dict[str, Any]:
    return {
        "driver": driver,
        "scenario": scenario,
        "dbname": dbname,
        "server_conninfo": pg.conninfo(pg.admin_db),
        "admin_conninfo": pgbouncer.conninfo("pgbouncer"),
        "through_pgbouncer_conninfo": pgbouncer.conninfo(dbname),
        **kw,
    }


@pytest.fixture(params=["psycopg", "psycopg2"])
def pgb_run(
    request: pytest.FixtureRequest, pg: PgServer, pgbouncer: PgBouncer, pgb_database: str
) -> Callable[..., dict[str, Any]]:
    """run(scenario, params=..., aliases=...): a child's facts, with psycopg 3, then psycopg2.

    Its DATABASES are _databases() through our PgBouncer, plus each of ``aliases``:
    the default alias's settings with the changes given.
    """
    driver: str = request.param
    pytest.importorskip(driver)

    def run(
        scenario: str,
        params: dict[str, Any] | None = None,
        aliases: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        databases = _databases(pgbouncer, pgb_database)
        for alias, changes in (aliases or {}).items():
            databases[alias] = {**databases["default"], **changes}
        config = _config(driver, scenario, pg, pgbouncer, pgb_database, databases=databases)
        return _run_child({**config, "params": params or {}})

    return run


@pytest.mark.postgresql
def test_server_sees_pgbouncer_cap_not_our_pool(pgb_run: Callable[..., dict[str, Any]]) -> None:
    facts = pgb_run("load", params={"threads": THREADS, "cycles": 5, "hold": 0.05})
    print(json.dumps({k: v for k, v in facts.items() if k != "pools"}, indent=1))
    config = facts["pgbouncer_config"]
    cap = int(config["default_pool_size"])
    assert config["pool_mode"] == "transaction"
    assert int(config["reserve_pool_size"]) == 0
    assert cap < POOL_SIZE < THREADS, "the scenario needs pool > PgBouncer's cap"

    assert facts["errors"] == []
    # Within atomic(), every statement ran on one server connection.
    assert facts["split_transactions"] == []
    [pool] = facts["pools"]
    assert pool["pool_size"] == POOL_SIZE and pool["timeouts"] == 0
    # Our pool held POOL_SIZE client connections to PgBouncer, all at once...
    assert pool["connections_opened"] == POOL_SIZE
    assert facts["peak"]["clients"] == POOL_SIZE
    # ...while PostgreSQL saw at most PgBouncer's cap, and it was reached: the
    # remaining clients queued inside PgBouncer.
    assert facts["peak"]["server"] <= cap
    assert facts["peak"]["sv_active"] == cap
    assert facts["peak"]["cl_waiting"] > 0
    assert facts["distinct_backends"] <= cap
    # Idle, our pooled connections stay open to PgBouncer and hold no server session.
    assert facts["clients_idle"] == POOL_SIZE
    assert facts["server_sessions_idle"] == 0


@pytest.mark.postgresql
def test_server_side_cursors_break_across_transactions(
    pgb_run: Callable[..., dict[str, Any]],
) -> None:
    """What DISABLE_SERVER_SIDE_CURSORS=True (docs/pgbouncer.md) is for."""
    facts = pgb_run(
        "cursors", aliases={"server_side_cursors": {"DISABLE_SERVER_SIDE_CURSORS": False}}
    )
    print(json.dumps(facts, indent=1))
    broken, fine = facts["server_side_cursors"], facts["default"]
    assert broken["other_client_held_the_cursor"]
    assert broken["error"] and "does not exist" in broken["error"], broken
    assert fine == {"rows": 100, "error": None, "other_client_held_the_cursor": False}


# -- What survives a transaction (docs/pgbouncer.md) ----------------------------


@pytest.mark.postgresql
def test_session_state_through_transaction_pooling(pgbouncer: PgBouncer) -> None:
    """Session state leaks to other clients and is lost for its own; TimeZone is tracked.

    Plain psycopg connections, no Django: this is PgBouncer's behaviour, which
    docs/pgbouncer.md builds its advice on.
    """
    import psycopg

    conninfo = pgbouncer.conninfo("postgres")
    # A startup parameter PgBouncer doesn't know is refused (OPTIONS["options"]).
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(conninfo + " options='-c search_path=elsewhere'").close()

    lock = 0x5A9001  # an advisory lock key of our own
    show = "SELECT current_setting('search_path'), current_setting('TimeZone')"
    mine = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
    others: list[psycopg.Connection[Any]] = []
    try:
        with psycopg.connect(pgbouncer.conninfo("pgbouncer"), autocommit=True) as admin:
            config = {row[0]: row[1] for row in admin.execute("SHOW CONFIG").fetchall()}
        cap = int(config["default_pool_size"])
        mine.execute("SET TIME ZONE 'Asia/Tokyo'")
        # One statement, so one server connection gets both.
        mine.execute(
            "SELECT set_config('search_path', 'sapool_elsewhere, public', false), "
            f"pg_advisory_lock({lock})"
        )
        # Other clients open transactions until one runs on that server connection
        # (PgBouncer reuses the last one first; the loop is a guard).
        leaked = None
        for _ in range(cap - 1):
            other = psycopg.connect(conninfo, prepare_threshold=None)  # not autocommit
            others.append(other)
            row = other.execute(f"{show}, pg_try_advisory_lock({lock})").fetchone()
            path, zone, got_lock = row  # type: ignore[misc]
            if "sapool_elsewhere" in path:
                leaked = (path, zone, got_lock)
                other.execute("SELECT pg_advisory_unlock_all()")  # that session's locks
                break
            if got_lock:
                other.execute(f"SELECT pg_advisory_unlock({lock})")
        assert leaked is not None, "no other client got the server connection we SET"
        # Another client sees our search_path, and "takes" our session advisory lock
        # (re-entrant within one server session): no mutual exclusion. It does not
        # see our time zone: PgBouncer re-applies each client's own TimeZone (and
        # client_encoding, DateStyle, standard_conforming_strings,
        # application_name), and nothing else.
        assert leaked[2] is True
        assert leaked[1] != "Asia/Tokyo"
        # Our next statement ran elsewhere: our search_path is gone, our time zone is not.
        path, zone = mine.execute(show).fetchone()  # type: ignore[misc]
        assert "sapool_elsewhere" not in path
        assert zone == "Asia/Tokyo"
    finally:
        for other in others:
            other.close()
        mine.close()


@pytest.mark.postgresql
def test_prepared_statements_through_transaction_pooling(pgbouncer: PgBouncer) -> None:
    """Why prepare_threshold must stay None (Django's default) with PgBouncer < 1.21."""
    import psycopg

    conninfo = pgbouncer.conninfo("postgres")
    # prepare_threshold=0: psycopg prepares every statement on its first execution.
    mine = psycopg.connect(conninfo, autocommit=True, prepare_threshold=0)
    others: list[psycopg.Connection[Any]] = []
    try:
        with psycopg.connect(pgbouncer.conninfo("pgbouncer"), autocommit=True) as admin:
            config = {row[0]: row[1] for row in admin.execute("SHOW CONFIG").fetchall()}
        query = "SELECT 'sapool prepared'"
        mine.execute(query)  # prepared on the server connection that ran it
        # Other clients hold server connections until one sits on that one.
        for _ in range(int(config["default_pool_size"]) - 1):
            other = psycopg.connect(conninfo, prepare_threshold=None)  # not autocommit
            others.append(other)
            row = other.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = %s", [query]
            ).fetchone()
            if row and row[0]:
                break
        else:
            pytest.fail("no other client got the server connection holding the statement")
        with pytest.raises(psycopg.errors.InvalidSqlStatementName, match="does not exist"):
            mine.execute(query)  # runs the prepared statement, on another server connection
    finally:
        for other in others:
            other.close()
        mine.close()
