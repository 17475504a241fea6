"""What a request inherits from the previous user of its pooled server session.

For every RESET_ON_RETURN mode and every driver, request 1 leaves session state
behind (a role, settings, variables, a temporary table, a lock, a prepared
statement and, last, an open transaction), the connection goes back to the pool,
and request 2 gets the very same server session (POOL_SIZE=1, MAX_OVERFLOW=0; the
backend pid / CONNECTION_ID() is asserted equal) and reports what is still there.
Before that, two clean requests check that Django's own session setup (time zone,
OPTIONS' assume_role, isolation_level, init_command) holds at every checkout,
including the ones after a strict reset.

EXPECTED below is the single source of the answers: each test asserts one mode's
column of it, and ``docs/session-state.md`` shows the same tables, which
``test_doc_matches_expected`` compares cell by cell.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import MySQLServer, PgServer, mysql_admin_cursor, run_child
from .logins import mysql_create, mysql_drop, pg_create, pg_drop

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "session-state.md"

#: Columns: the RESET_ON_RETURN modes, as the doc's tables name them.
MODES = ("rollback", "commit", "None", "reset", "SQL")
#: The custom statement of the "SQL" column, per vendor.
CUSTOM_SQL = {"postgresql": "RESET ALL", "mysql": "DO RELEASE_ALL_LOCKS()"}
#: Django alias of each mode in the child (Django insists on a 'default' too).
ALIASES = dict(zip(MODES, ("rollback", "commit", "none", "reset", "sql"), strict=True))

KEPT, CLEARED, RESTORED = "kept", "cleared", "restored"
COMMITTED, ROLLED_BACK = "committed", "rolled back"
SET, LOST = "set", "lost"


def _row(*cells: str) -> dict[str, str]:
    """One row of EXPECTED: the outcome per mode, in MODES' order."""
    return dict(zip(MODES, cells, strict=True))


R, C, K = ROLLED_BACK, CLEARED, KEPT
#: Vendor -> state left by request 1 (or Django's setup) -> mode -> outcome in request 2.
EXPECTED: dict[str, dict[str, dict[str, str]]] = {
    "postgresql": {
        "open transaction (BEGIN; INSERT)": _row(R, COMMITTED, R, R, R),
        "SET ROLE": _row(K, K, K, C, K),
        "SET ROLE, with OPTIONS['assume_role']": _row(K, K, K, C, C),
        "SET search_path": _row(K, K, K, C, C),
        "set_config('sapool.x', 'v', false)": _row(K, K, K, C, C),
        "SET TIME ZONE": _row(*[RESTORED] * 5),
        "temporary table": _row(K, K, K, C, K),
        "pg_advisory_lock(n)": _row(K, K, K, C, K),
        "PREPARE": _row(K, K, K, C, K),
        "Django: TimeZone 'UTC'": _row(*[SET] * 5),
        "Django: OPTIONS['assume_role']": _row(*[SET] * 5),
        "Django: OPTIONS['isolation_level']": _row(*[SET] * 5),
        "Django: OPTIONS['options'] (-c statement_timeout)": _row(*[SET] * 5),
    },
    "mysql": {
        "open transaction (START TRANSACTION; INSERT)": _row(R, COMMITTED, R, R, R),
        # MariaDB's COM_RESET_CONNECTION leaves the active role alone.
        "SET ROLE": _row(K, K, K, K, K),
        "SET SESSION time_zone": _row(K, K, K, C, K),
        "SET SESSION TRANSACTION ISOLATION LEVEL": _row(K, K, K, RESTORED, RESTORED),
        "SET @x": _row(K, K, K, C, K),
        "temporary table": _row(K, K, K, C, K),
        "GET_LOCK(name, 0)": _row(K, K, K, C, C),
        "PREPARE": _row(K, K, K, C, K),
        "Django: OPTIONS['isolation_level']": _row(*[SET] * 5),
        # Under "reset" only because django_sapool re-runs init_command after
        # COM_RESET_CONNECTION (the driver runs it at connect only).
        "Django: OPTIONS['init_command'] (sql_mode)": _row(*[SET] * 5),
    },
}

PG_ISOLATION = "repeatable read"  # not the server's default (read committed)
PG_DB_TIME_ZONE = "America/Chicago"  # the database's default: not Django's UTC
PG_STATEMENT_TIMEOUT = "4321ms"  # a startup parameter, through OPTIONS['options']
MY_ISOLATION = "read committed"  # Django's default; MariaDB's is REPEATABLE-READ
MY_INIT_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"  # not the server's default


def _supports_assume_role() -> bool:
    """Whether this Django applies OPTIONS['assume_role'] (SET ROLE) at connect (5.2+)."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    return hasattr(DatabaseWrapper, "_configure_role")


def _reset_on_return(vendor: str, mode: str) -> str | None:
    return {"None": None, "SQL": CUSTOM_SQL[vendor]}.get(mode, mode)


# -- servers: a database, roles and a table of our own -------------------------


@pytest.fixture(scope="module")
def pg_env(pg: PgServer) -> Iterator[dict[str, Any]]:
    """A database whose default time zone is not UTC, a login role and two roles."""
    import psycopg

    tag = uuid.uuid4().hex[:10]
    env = {
        "dbname": f"sapool_ss_{tag}",
        "login": f"sapool_ss_{tag}_login",
        "assumed": f"sapool_ss_{tag}_assumed",
        "other": f"sapool_ss_{tag}_other",
        "password": f"pw-{uuid.uuid4().hex}",  # trust auth ignores it; it is still given
    }
    try:
        pg_create(pg, env["dbname"], [(env["login"], env["password"])])
        with psycopg.connect(pg.conninfo(pg.admin_db), autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE \"{env['dbname']}\" SET timezone TO '{PG_DB_TIME_ZONE}'")
            for role in ("assumed", "other"):
                admin.execute(f'CREATE ROLE "{env[role]}" NOLOGIN')
                admin.execute(f'GRANT "{env[role]}" TO "{env["login"]}"')
        with psycopg.connect(pg.conninfo(env["dbname"]), autocommit=True) as db:
            db.execute("CREATE TABLE item (id serial PRIMARY KEY, name text)")
            db.execute("GRANT SELECT, INSERT ON item TO PUBLIC")
            db.execute("GRANT USAGE ON SEQUENCE item_id_seq TO PUBLIC")
        yield env
    finally:
        pg_drop(pg, env["dbname"], [env["login"], env["assumed"], env["other"]])


@pytest.fixture(scope="module")
def mysql_env(mysql: MySQLServer) -> Iterator[dict[str, Any]]:
    """A database, a login user of our own and a role granted to it."""
    tag = uuid.uuid4().hex[:10]
    env = {
        "dbname": f"sapool_ss_{tag}",
        "login": f"sapool_ss_{tag}",
        "role": f"sapool_ss_{tag}_role",
        "password": f"pw-{uuid.uuid4().hex}",
    }
    try:
        mysql_create(mysql, env["dbname"], [(env["login"], env["password"])])
        with mysql_admin_cursor(mysql) as cursor:
            cursor.execute(f"CREATE ROLE `{env['role']}`")
            cursor.execute(f"GRANT `{env['role']}` TO '{env['login']}'@'%'")
            cursor.execute(
                f"CREATE TABLE `{env['dbname']}`.item "
                "(id int AUTO_INCREMENT PRIMARY KEY, name varchar(100)) ENGINE=InnoDB"
            )
        yield env
    finally:
        mysql_drop(mysql, env["dbname"], [env["login"]], [env["role"]])


def _pg_settings(pg: PgServer, env: dict[str, Any], mode: str, assume: bool) -> dict[str, Any]:
    options: dict[str, Any] = {
        "application_name": f"sapool-ss-{mode}",
        "isolation_level": PG_ISOLATION.upper().replace(" ", "_"),  # the child resolves it
        "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT}",
    }
    if assume:
        options["assume_role"] = env["assumed"]
    return {
        "ENGINE": "django_sapool.backends.postgresql",
        "NAME": env["dbname"],
        "USER": env["login"],
        "PASSWORD": env["password"],
        "HOST": pg.host,
        "PORT": pg.port,
        "OPTIONS": options,
        "POOL_OPTIONS": {
            "POOL_SIZE": 1,
            "MAX_OVERFLOW": 0,
            "TIMEOUT": 10,
            "RESET_ON_RETURN": _reset_on_return("postgresql", mode),
        },
    }


def _mysql_settings(mysql: MySQLServer, env: dict[str, Any], mode: str) -> dict[str, Any]:
    return {
        "ENGINE": "django_sapool.backends.mysql",
        "NAME": env["dbname"],
        "USER": env["login"],
        "PASSWORD": env["password"],
        "HOST": mysql.host,
        "PORT": mysql.port,
        "OPTIONS": {
            "isolation_level": MY_ISOLATION,
            "init_command": f"SET SESSION sql_mode = '{MY_INIT_SQL_MODE}'",
        },
        "POOL_OPTIONS": {
            "POOL_SIZE": 1,
            "MAX_OVERFLOW": 0,
            "TIMEOUT": 10,
            "RESET_ON_RETURN": _reset_on_return("mysql", mode),
        },
    }


def _run_matrix(driver: str, databases: dict[str, Any], **config: Any) -> dict[str, Any]:
    aliases = list(databases)
    facts = run_child(
        {
            "scenario": "matrix",
            "drivers": [driver],
            "databases": {"default": databases[aliases[0]], **databases},
            "token": uuid.uuid4().hex[:8],
            "params": {"aliases": aliases},
            **config,
        },
        timeout=120,
        module="tests.integration.session_child",
        env_var="SAPOOL_SESSION_CHILD",
    )
    assert set(facts["drivers"].values()) == {"MySQLdb" if driver == "mysqlclient" else driver}
    return facts


@pytest.fixture(scope="module")
def pg_matrix(pg: PgServer, pg_env: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    """One child per driver runs every mode; its facts are shared by that driver's tests."""
    cache: dict[str, Any] = {}

    def run(driver: str) -> dict[str, Any]:
        pytest.importorskip(driver)
        databases = {ALIASES[m]: _pg_settings(pg, pg_env, m, False) for m in MODES}
        if _supports_assume_role():
            databases |= {f"{ALIASES[m]}_assume": _pg_settings(pg, pg_env, m, True) for m in MODES}
        return _run_matrix(
            driver,
            databases,
            observer=pg.conninfo(pg_env["dbname"]),
            role=pg_env["other"],
            lock_base=random.randrange(1, 2**30),
        )

    return _cached(cache, run)


def _cached(
    cache: dict[str, Any], run: Callable[[str], dict[str, Any]]
) -> Callable[[str], dict[str, Any]]:
    """Run the child once per driver; a failed run fails each of its tests with its error."""

    def facts(driver: str) -> dict[str, Any]:
        if driver not in cache:
            try:
                cache[driver] = run(driver)
            except AssertionError as exc:
                cache[driver] = exc
        found = cache[driver]
        if isinstance(found, AssertionError):
            raise found
        return found

    return facts


@pytest.fixture(scope="module")
def mysql_matrix(mysql: MySQLServer, mysql_env: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    def run(driver: str) -> dict[str, Any]:
        pytest.importorskip("MySQLdb" if driver == "mysqlclient" else driver)
        databases = {ALIASES[m]: _mysql_settings(mysql, mysql_env, m) for m in MODES}
        return _run_matrix(
            driver,
            databases,
            observer=mysql.conninfo(mysql_env["dbname"]),
            role=mysql_env["role"],
        )

    return _cached({}, run)


# -- reading the facts ---------------------------------------------------------


def _same_session(run: dict[str, Any]) -> None:
    """All four requests of a mode were served by one server session, opened once."""
    pids = {s["pid"] for s in run["setup"]} | {run["dirty_pid"], run["observe"]["pid"]}
    assert len(pids) == 1, f"not one server session: {pids}"
    (pool,) = run["pools"]
    assert (pool["connections_opened"], pool["checked_out"], pool["idle"]) == (1, 0, 1)


def _kept(value: Any, dirty: Any, clean: Any) -> str:
    """'kept' if request 2 sees request 1's value, 'cleared' if the clean one."""
    if value == dirty:
        return KEPT
    assert value == clean, f"neither request 1's {dirty!r} nor the clean {clean!r}: {value!r}"
    return CLEARED


def pg_outcomes(
    run: dict[str, Any], assume: dict[str, Any] | None, env: dict[str, Any]
) -> dict[str, str]:
    """Classify one PostgreSQL mode's facts into the rows of EXPECTED['postgresql'].

    ``run`` is the alias without assume_role, ``assume`` the one with it (None on
    Django < 5.2, which has no assume_role: its rows are then left out).
    """
    runs = [run] if assume is None else [run, assume]
    for one in runs:
        _same_session(one)
        obs, out = one["observe"], one["after_dirty"]
        # No transaction ever survives: idle (not "idle in transaction") in the
        # pool, no transaction id in request 2, and request 2 sees what everyone sees.
        assert out["state"] == "idle", out
        assert obs["xact_id"] is None, obs
        assert obs["own_rows"] == out["rows"] == one["after_observe"]["rows"]
        assert out["rows"] in (0, 1)
    pid, obs, out = run["dirty_pid"], run["observe"], run["after_dirty"]
    # The lock as the rest of the server sees it, and as the session itself sees it.
    lock_kept = _kept(out["lock_holder"], pid, None)
    assert lock_kept == _kept(obs["own_lock"], 1, 0)
    setups = [s for one in runs for s in one["setup"]]
    time_zone = obs["time_zone"]
    outcomes = {
        "open transaction (BEGIN; INSERT)": COMMITTED if out["rows"] else ROLLED_BACK,
        "SET ROLE": _kept(obs["current_user"], env["other"], env["login"]),
        "SET search_path": _kept(obs["search_path"], "sapool_dirty, public", '"$user", public'),
        "set_config('sapool.x', 'v', false)": _kept(obs["variable"], "v", ""),
        "SET TIME ZONE": {"UTC": RESTORED, "Asia/Tokyo": KEPT}.get(time_zone, time_zone),
        "temporary table": _kept(obs["temp_table"], True, False),
        "pg_advisory_lock(n)": lock_kept,
        "PREPARE": _kept(obs["prepared"], 1, 0),
        "Django: TimeZone 'UTC'": SET if all(s["time_zone"] == "UTC" for s in setups) else LOST,
        "Django: OPTIONS['isolation_level']": (
            SET if all(s["isolation"] == PG_ISOLATION for s in setups) else LOST
        ),
        "Django: OPTIONS['options'] (-c statement_timeout)": (
            SET if all(s["statement_timeout"] == PG_STATEMENT_TIMEOUT for s in setups) else LOST
        ),
    }
    if assume is not None:
        outcomes["SET ROLE, with OPTIONS['assume_role']"] = _kept(
            assume["observe"]["current_user"], env["other"], env["assumed"]
        )
        outcomes["Django: OPTIONS['assume_role']"] = (
            SET if all(s["current_user"] == env["assumed"] for s in assume["setup"]) else LOST
        )
    assert all(s["current_user"] == env["login"] for s in run["setup"])
    return outcomes


def mysql_outcomes(run: dict[str, Any], env: dict[str, Any]) -> dict[str, str]:
    """Classify one MariaDB mode's facts into the rows of EXPECTED['mysql']."""
    _same_session(run)
    pid, obs, out = run["dirty_pid"], run["observe"], run["after_dirty"]
    assert out["in_transaction"] == 0, out  # no InnoDB transaction while idle in the pool
    assert obs["in_transaction"] == 0, obs
    assert obs["own_rows"] == out["rows"] == run["after_observe"]["rows"]
    assert out["rows"] in (0, 1)
    lock_kept = _kept(out["lock_holder"], pid, None)
    assert lock_kept == _kept(obs["own_lock"], 1, None)
    setup = run["setup"]
    isolation = {"SERIALIZABLE": KEPT, "READ-COMMITTED": RESTORED, "REPEATABLE-READ": CLEARED}
    return {
        "open transaction (START TRANSACTION; INSERT)": COMMITTED if out["rows"] else ROLLED_BACK,
        "SET ROLE": _kept(obs["current_role"], env["role"], None),
        "SET SESSION time_zone": _kept(obs["time_zone"], "+05:00", "SYSTEM"),
        "SET SESSION TRANSACTION ISOLATION LEVEL": isolation[obs["isolation"]],
        "SET @x": _kept(obs["variable"], 1, None),
        "temporary table": _kept(obs["temp_table"], True, False),
        "GET_LOCK(name, 0)": lock_kept,
        "PREPARE": _kept(obs["prepared"], True, False),
        "Django: OPTIONS['isolation_level']": (
            SET if all(s["isolation"] == "READ-COMMITTED" for s in setup) else LOST
        ),
        "Django: OPTIONS['init_command'] (sql_mode)": (
            SET if all(s["sql_mode"] == MY_INIT_SQL_MODE for s in setup) else LOST
        ),
    }


def _column(vendor: str, mode: str) -> dict[str, str]:
    return {row: cells[mode] for row, cells in EXPECTED[vendor].items()}


# -- the matrix ----------------------------------------------------------------


@pytest.mark.postgresql
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql_session_state(
    pg_matrix: Callable[[str], dict[str, Any]], pg_env: dict[str, Any], driver: str, mode: str
) -> None:
    """Request 2 on the same PostgreSQL session sees exactly EXPECTED's column for the mode."""
    facts = pg_matrix(driver)
    run, assume = facts[ALIASES[mode]], facts.get(f"{ALIASES[mode]}_assume")
    expected = _column("postgresql", mode)
    if assume is None:  # Django < 5.2: no assume_role
        expected = {row: v for row, v in expected.items() if "assume_role" not in row}
    assert pg_outcomes(run, assume, pg_env) == expected, run


@pytest.mark.mysql
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_mysql_session_state(
    mysql_matrix: Callable[[str], dict[str, Any]],
    mysql_env: dict[str, Any],
    driver: str,
    mode: str,
) -> None:
    """Request 2 on the same MariaDB session sees exactly EXPECTED's column for the mode."""
    run = mysql_matrix(driver)[ALIASES[mode]]
    assert mysql_outcomes(run, mysql_env) == _column("mysql", mode), run


# -- the doc shows the same tables ---------------------------------------------

TABLE_MARKER = re.compile(r"^<!--\s*session-state:\s*(?P<vendor>\w+)\s*-->\s*$")


def _cells(line: str) -> list[str]:
    """A table row's cells, without Markdown code/bold marks and footnote references."""
    cells = line.strip().strip("|").split("|")
    return [re.sub(r"\[\^\w+\]", "", c).replace("`", "").replace("*", "").strip() for c in cells]


def doc_tables(text: str) -> dict[str, tuple[list[str], dict[str, dict[str, str]]]]:
    """Return vendor -> (column headers, row -> mode -> cell) of the doc's marked tables."""
    lines = text.splitlines()
    tables: dict[str, tuple[list[str], dict[str, dict[str, str]]]] = {}
    for i, line in enumerate(lines):
        marker = TABLE_MARKER.match(line)
        if not marker:
            continue
        header = _cells(lines[i + 1])
        assert re.fullmatch(r"[\s|:-]+", lines[i + 2]), f"line {i + 3}: no separator row"
        rows: dict[str, dict[str, str]] = {}
        for row_line in lines[i + 3 :]:
            if not row_line.startswith("|"):
                break
            label, *cells = _cells(row_line)
            assert len(cells) == len(MODES), f"row {label!r} has {len(cells)} cells"
            rows[label] = dict(zip(MODES, cells, strict=True))
        tables[marker["vendor"]] = (header, rows)
    return tables


def test_doc_matches_expected() -> None:
    """docs/session-state.md shows EXPECTED, cell for cell, with the columns in order."""
    tables = doc_tables(DOC.read_text(encoding="utf-8"))
    assert set(tables) == set(EXPECTED)
    for vendor, (header, rows) in tables.items():
        assert header[1:] == [*MODES[:-1], CUSTOM_SQL[vendor]], vendor
        assert rows == EXPECTED[vendor], vendor


def test_doc_table_parser_sees_a_changed_cell() -> None:
    """The comparison above can fail: one edited cell makes the tables differ."""
    text = DOC.read_text(encoding="utf-8")
    row = "| `PREPARE` |"
    assert text.count(row) == 2
    changed = text.replace(row + " kept |", row + " cleared |", 1)
    assert changed != text
    tables = doc_tables(changed)
    assert any(rows != EXPECTED[vendor] for vendor, (_, rows) in tables.items())
