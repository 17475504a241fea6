"""Security against real servers: users never share a session, the password never shows.

- Two aliases on one server with different USERs, hammered by interleaving threads:
  every query runs as its alias's user, and the server's own session list
  (pg_stat_activity / information_schema.processlist) never shows a session of one
  alias under the other's user. Then USER and PASSWORD change at run time, the way
  Django's test tools change settings: the alias connects anew as the new user (a
  new pool), and never gets a session the old settings authenticated.
- A distinctive password, every log at DEBUG, and everything the library can say
  (checkouts, returns, recycling, a terminated session, exhaustion, a wrong password
  refused by MariaDB, reprs, pool_status(), the registry, ``manage.py sapool`` and
  ``manage.py check``): the password, in any encoding, appears nowhere.

Each scenario runs in a child process (tests/integration/session_child.py) with
users and databases made for it, dropped at the end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from .conftest import MySQLServer, PgServer, run_child
from .logins import mysql_create, mysql_drop, pg_create, pg_drop

POOL = {"POOL_SIZE": 2, "MAX_OVERFLOW": 0, "TIMEOUT": 30}


def child(config: dict[str, Any]) -> dict[str, Any]:
    return run_child(
        config,
        timeout=240,
        module="tests.integration.session_child",
        env_var="SAPOOL_SESSION_CHILD",
    )


# -- users and databases of our own --------------------------------------------

USERS = ("a", "b", "c")


def _new_users() -> dict[str, Any]:
    """A fresh database name, and for each of USERS a login name and password of its own."""
    tag = uuid.uuid4().hex[:10]
    env: dict[str, Any] = {"dbname": f"sapool_sec_{tag}"}
    for name in USERS:
        env[name] = (f"sapool_sec_{tag}_{name}", f"pw-{name}-{uuid.uuid4().hex}")
    return env


def _logins(env: dict[str, Any]) -> list[str]:
    return [env[name][0] for name in USERS]


@pytest.fixture(scope="module")
def pg_users(pg: PgServer) -> Iterator[dict[str, Any]]:
    """A database and three login roles (a, b, c), each with a password of its own."""
    env = _new_users()
    try:
        pg_create(pg, env["dbname"], [env[name] for name in USERS])
        yield env
    finally:
        pg_drop(pg, env["dbname"], _logins(env))


@pytest.fixture(scope="module")
def mysql_users(mysql: MySQLServer) -> Iterator[dict[str, Any]]:
    """A database and three users (a, b, c) with passwords, allowed only on it."""
    env = _new_users()
    try:
        mysql_create(mysql, env["dbname"], [env[name] for name in USERS])
        yield env
    finally:
        mysql_drop(mysql, env["dbname"], _logins(env))


def _alias(vendor: str, server: Any, env: dict[str, Any], name: str) -> dict[str, Any]:
    user, password = env[name]
    return {
        "ENGINE": f"django_sapool.backends.{vendor}",
        "NAME": env["dbname"],
        "USER": user,
        "PASSWORD": password,
        "HOST": server.host,
        "PORT": server.port,
        "POOL_OPTIONS": POOL,
    }


# -- two users, one server -----------------------------------------------------

DRIVERS = [
    pytest.param("postgresql", "psycopg", marks=pytest.mark.postgresql, id="psycopg"),
    pytest.param("postgresql", "psycopg2", marks=pytest.mark.postgresql, id="psycopg2"),
    pytest.param("mysql", "mysqlclient", marks=pytest.mark.mysql, id="mysqlclient"),
    pytest.param("mysql", "pymysql", marks=pytest.mark.mysql, id="pymysql"),
]
THREADS, ROUNDS = 8, 100


def _pids(seen: list[dict[str, Any]], alias: str) -> set[int]:
    return {entry["pid"] for entry in seen if entry["alias"] == alias}


def _users(seen: list[dict[str, Any]], alias: str) -> set[str]:
    return {entry["user"] for entry in seen if entry["alias"] == alias}


def _server_users(sessions: dict[str, list[str]], pids: set[int]) -> set[str]:
    """The login users the server listed for these sessions, over all its samples."""
    return {user for pid in pids for user in sessions.get(str(pid), [])}


@pytest.mark.parametrize(("vendor", "driver"), DRIVERS)
def test_two_users_never_share_a_session(
    request: pytest.FixtureRequest, vendor: str, driver: str
) -> None:
    """Per query and per server session, an alias is always its own user, also after a change."""
    pytest.importorskip("MySQLdb" if driver == "mysqlclient" else driver)
    if vendor == "postgresql":
        server = request.getfixturevalue("pg")
        env = request.getfixturevalue("pg_users")
        observer: Any = server.conninfo(server.admin_db)
    else:
        server = request.getfixturevalue("mysql")
        env = request.getfixturevalue("mysql_users")
        observer = server.conninfo()
    a, b = _alias(vendor, server, env, "a"), _alias(vendor, server, env, "b")
    user_a, user_b, (user_c, password_c) = env["a"][0], env["b"][0], env["c"]
    facts = child(
        {
            "scenario": "users",
            "drivers": [driver],
            "databases": {"default": a, "a": a, "b": b},
            "observer": observer,
            "dbname": env["dbname"],
            "user_c": user_c,
            "password_c": password_c,
            # A password nobody has: PostgreSQL (trust) accepts it, MariaDB must refuse it.
            "other_password": f"not-{env['b'][1]}",
            "params": {"threads": THREADS, "rounds": ROUNDS},
        }
    )
    assert set(facts["drivers"].values()) == {"MySQLdb" if driver == "mysqlclient" else driver}

    # 1. Interleaved: every query through 'a' ran as a, through 'b' as b.
    both = facts["both"]
    assert len(both) == THREADS * ROUNDS
    assert (_users(both, "a"), _users(both, "b")) == ({user_a}, {user_b})
    a_pids, b_pids = _pids(both, "a"), _pids(both, "b")
    assert a_pids.isdisjoint(b_pids)
    assert 1 <= len(a_pids) <= POOL["POOL_SIZE"] and 1 <= len(b_pids) <= POOL["POOL_SIZE"]
    # ... and the server agrees, session by session: no session changed hands.
    sessions = facts["both_sessions"]
    assert facts["both_samples"] >= 2
    assert _server_users(sessions, a_pids) == {user_a}
    assert _server_users(sessions, b_pids) == {user_b}
    assert all(len(users) == 1 for users in sessions.values()), sessions

    # 2. USER changed in the alias's settings_dict: new sessions as c, none of a's.
    switched = facts["switched"]
    assert len(switched) == THREADS * ROUNDS
    assert (_users(switched, "a"), _users(switched, "b")) == ({user_c}, {user_b})
    c_pids = _pids(switched, "a")
    assert c_pids.isdisjoint(a_pids | b_pids)
    assert _pids(switched, "b") <= b_pids  # b's pool was not touched
    assert _server_users(facts["switched_sessions"], c_pids) == {user_c}
    # a's old pool was disposed when its settings changed: no pool outlives them.
    assert facts["switched_pools"] == 1
    # Switched back: a new pool, new sessions, as a; none of c's.
    assert _users(facts["restored"], "a") == {user_a}
    restored_pids = _pids(facts["restored"], "a")
    assert restored_pids.isdisjoint(c_pids)
    assert facts["restored_pools"] == 1

    # 3. Only the PASSWORD changed: its own pool, never the authenticated sessions.
    # Its own pool, which replaced b's previous one.
    assert facts["new_password_pools"] == facts["b_pools_before"] == 1
    if vendor == "postgresql":  # trust authentication: a new session, same user
        assert facts["new_password"]["ok"] is True
        assert facts["new_password"]["user"] == user_b
        assert facts["new_password"]["pid"] not in b_pids
        assert "new_password_error" not in facts
    else:  # MariaDB checks it: refused, although b's idle sessions were right there
        assert facts["new_password"] == {"ok": False}
        assert "Access denied for user" in facts["new_password_error"]
        assert env["b"][1] not in facts["new_password_error"]
    assert _users(facts["restored_b"], "b") == {user_b}
    assert _pids(facts["restored_b"], "b").isdisjoint(a_pids | c_pids)

    # 4. override_settings(DATABASES=...): Django warns and keeps its handler's
    # settings, so the alias stays a, consistently; a new handler connects as c
    # from c's pool.
    assert facts["override_warned"] is True
    assert facts["override_existing"]["user"] == user_a
    assert facts["override_existing_settings_user"] == user_a
    assert facts["override_existing"]["pid"] in restored_pids
    assert facts["override_fresh"]["user"] == user_c
    assert facts["override_fresh"]["pid"] not in a_pids | b_pids | restored_pids

    # At the end, every session of the database still belongs to the user it was opened for.
    final = facts["final_sessions"]
    assert _server_users(final, a_pids) <= {user_a}
    assert _server_users(final, b_pids) <= {user_b}
    assert _server_users(final, c_pids) <= {user_c}
    assert all(len(users) == 1 for users in final.values()), final
    pools = {(p["alias"], p["checked_out"]) for p in facts["pools"]}
    assert {alias for alias, _ in pools} == {"a", "b"}
    assert all(out == 0 for _, out in pools)


# -- the password never shows --------------------------------------------------


@pytest.fixture
def secret_env(pg: PgServer, mysql: MySQLServer) -> Iterator[dict[str, Any]]:
    """A PostgreSQL role and a MariaDB user whose password is unmistakable."""
    tag = uuid.uuid4().hex
    # URL-encoding changes it ("/", "+", "@", ":", "%", " "), so both forms are searched.
    password = f"S3cr3t-pa55-{tag}/+@:% x"
    env = {"tag": tag, "password": password, "name": f"sapool_leak_{tag[:10]}"}
    try:
        # The database, the role and the user share the name.
        pg_create(pg, env["name"], [(env["name"], password)])
        mysql_create(mysql, env["name"], [(env["name"], password)])
        yield env
    finally:
        try:
            pg_drop(pg, env["name"], [env["name"]])
        finally:
            mysql_drop(mysql, env["name"], [env["name"]])


LEAK_POOL = {
    "POOL_SIZE": 1,
    "MAX_OVERFLOW": 0,
    "TIMEOUT": 0.3,
    "RECYCLE": 1,
    "ECHO": "debug",  # SQLAlchemy's own pool logging, to stdout, on top of ours
}


@pytest.mark.postgresql
@pytest.mark.mysql
@pytest.mark.parametrize(
    ("pg_driver", "my_driver"), [("psycopg", "mysqlclient"), ("psycopg2", "pymysql")]
)
def test_password_never_appears(
    pg: PgServer, mysql: MySQLServer, secret_env: dict[str, Any], pg_driver: str, my_driver: str
) -> None:
    """Nothing the library logs, prints, raises or reports contains the password."""
    pytest.importorskip(pg_driver)
    pytest.importorskip("MySQLdb" if my_driver == "mysqlclient" else my_driver)
    password, name = secret_env["password"], secret_env["name"]
    pg_db = {
        "ENGINE": "django_sapool.backends.postgresql",
        "NAME": name,
        "USER": name,
        "PASSWORD": password,
        "HOST": pg.host,
        "PORT": pg.port,
        "POOL_OPTIONS": LEAK_POOL,
    }
    my_db = {**pg_db, "ENGINE": "django_sapool.backends.mysql", "HOST": mysql.host}
    # libpq's key passphrase (unused without TLS): psycopg2's connection repr,
    # which SQLAlchemy's echo logs, shows every parameter but ``password``.
    pg_db["OPTIONS"] = {"sslmode": "disable", "sslpassword": f"key-{password}"}
    my_db["PORT"] = mysql.port
    facts = child(
        {
            "scenario": "leak",
            "drivers": [pg_driver, my_driver],
            "debug": True,  # django.db.backends logs every query
            "installed_apps": ["django_sapool"],
            "databases": {
                "default": pg_db,
                "pg": pg_db,
                "my": my_db,
                # Wrong, and containing the real one: leaking it would leak both.
                "my_wrong": {**my_db, "PASSWORD": f"wrong-{password}"},
            },
            "recycle": LEAK_POOL["RECYCLE"],
            "pg_observer": pg.conninfo(pg.admin_db),
            "my_observer": mysql.conninfo(),
        }
    )
    everything = json.dumps(facts) + facts["stderr"] + facts["stdout"]
    for needle in (password, quote(password, safe=""), quote_plus(password), secret_env["tag"]):
        assert needle not in everything
    # json.dumps escapes nothing in the password (ASCII, no quotes or backslashes),
    # so a leak inside the facts would have been found verbatim.
    assert json.dumps(password) == f'"{password}"'

    # The search means something: every path it claims to cover really ran.
    events = facts["events"]
    messages = "\n".join(facts["log_messages"])
    for alias in ("pg", "my"):
        first = events[f"{alias}_checkouts"]
        assert len(set(first)) == 1  # one session, checked out and returned 3 times
        assert events[f"{alias}_after_recycle"] != first[0]  # RECYCLE=1 s replaced it
        assert events[f"{alias}_after_kill"] != events[f"{alias}_after_recycle"]
        assert f"no connection for alias '{alias}' became free" in events[f"{alias}_exhausted"]
        assert f"checked out a connection of alias '{alias}'" in messages
        assert f"returned a connection of alias '{alias}'" in messages
        assert f"recycled a connection of alias '{alias}'" in messages
        assert f"discarded a connection of alias '{alias}'" in messages
    assert "Access denied for user" in events["wrong_password"]
    assert "sqlalchemy.pool" in messages and "django.db.backends" in messages
    assert "Created new connection" in facts["stdout"]  # SQLAlchemy's echo, on fd 1
    # Connect settings do reach the output (the drivers' reprs show the user), so a
    # password among them would have shown up too.
    assert name in facts["stdout"]
    status = {p["alias"]: p for p in facts["pool_status"]}
    for alias in ("pg", "my"):
        assert status[alias]["connections_recycled"] >= 1
        assert status[alias]["connections_invalidated"] >= 1
        assert status[alias]["timeouts"] == 1
    assert any("alias='pg'" in key for key in facts["registry_keys"])
    commands = facts["commands"]
    sapool_json = json.loads(commands["sapool_json"]["out"])
    assert {d["alias"]: d["user"] for d in sapool_json["databases"]}["my"] == name
    check = commands["sapool_check"]
    assert "live check failed for alias 'my_wrong'" in check["error"]
    assert "Access denied for user" in check["out"]
    check_json = json.loads(commands["sapool_check_json"]["out"])
    assert {c["alias"]: c["ok"] for c in check_json["checks"]} == {
        "default": True,
        "pg": True,
        "my": True,
        "my_wrong": False,
    }
    assert commands["check"]["error"] is None
    assert "System check identified" in commands["check"]["out"]
    assert commands["check_deploy"]["error"] is None
