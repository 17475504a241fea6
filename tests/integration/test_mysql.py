"""Pooled MySQL/MariaDB (mysqlclient) against a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from django_sapool import registry
from tests.unit.pools import filled

from .conftest import MySQLServer, mysql_admin_cursor
from .server_scenarios import (  # noqa: F401  # collected here, on server_run
    test_a_checkout_moved_to_a_new_pool_still_fails_within_timeout,
    test_a_checkout_waiting_behind_a_failed_connect_opens_its_own_at_once,
    test_a_connection_its_borrower_closed_is_never_lent_again,
    test_a_forked_gevent_child_of_a_process_that_queried_is_not_frozen,
    test_a_greenlet_that_ends_without_closing_gives_its_connection_back,
    test_a_pool_disposed_while_checkouts_wait_opens_nothing_more,
    test_an_iterators_cursor_kept_past_its_request_leaves_the_next_borrower_alone,
    test_connections_of_threads_that_ended_without_closing_are_taken_back,
    test_exhaustion_raises_operational_error_after_timeout,
    test_forked_children_never_touch_the_parents_sessions,
    test_killed_idle_connection_is_replaced,
    test_no_transaction_survives_a_request,
    test_sequential_requests_share_one_server_connection,
    test_threads_never_exceed_pool_size,
    test_threads_that_end_while_others_wait_give_their_connections_to_the_waiters,
)

pytestmark = pytest.mark.mysql


@pytest.fixture
def server_run(mysql_run: Any) -> Any:
    """server_scenarios.py's tests run on this vendor's drivers."""
    return mysql_run


def test_one_query_request_costs_one_statement_and_no_ping(mysql_run: Any) -> None:
    facts = mysql_run("statements", params={"n": 100, "scope": "session"})
    assert facts["ok"] == 100
    assert facts["per_request"] == 1.0
    assert facts["pings_per_request"] == 0.0


def test_statement_counts_of_djangos_modes(mysql_run: Any) -> None:
    """Django's own modes, for comparison (reported, and sanity-checked)."""
    engine = "django.db.backends.mysql"
    default = mysql_run("statements", engine=engine, params={"n": 100})
    persistent = mysql_run(
        "statements", engine=engine, params={"n": 100, "scope": "session"}, CONN_MAX_AGE=None
    )
    print(
        f"\nMySQL statements per one-query request: default={default['per_request']} "
        f"persistent={persistent['per_request']}"
    )
    assert persistent["per_request"] == 1.0
    assert default["per_request"] > 1.0


@pytest.mark.parametrize("reset", ["rollback", None])
def test_a_transaction_whose_first_statement_failed_is_rolled_back(
    mysql_run: Any, reset: str | None
) -> None:
    """Autocommit off, first statement fails (data too long), the connection goes back.

    The status flags still said "no transaction" (only OK packets carry them),
    so the pool lent it on with the transaction open and the row locked: the
    other client's UPDATE waited innodb_lock_wait_timeout and failed. With
    RESET_ON_RETURN None too ("no connection is ever handed out with an open
    transaction"), which skipped the ROLLBACK when the driver could not tell.
    """
    facts = mysql_run(
        "failed_first_statement",
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "RESET_ON_RETURN": reset},
    )
    assert facts["error"] == "DataError"
    assert facts["open_transactions"] == 0
    assert facts["other_update"] == "ok"
    assert facts["other_seconds"] < 1.0
    (pool,) = facts["pools"]
    assert (pool["idle"], pool["checked_out"], pool["connections_invalidated"]) == (1, 0, 0)


@pytest.mark.parametrize("set_names", ["", "latin1"])
@pytest.mark.parametrize("reset", ["reset", "DELETE FROM item WHERE id = -1"])
def test_a_reset_session_is_set_up_as_a_new_one(mysql_run: Any, reset: str, set_names: str) -> None:
    """AUTOCOMMIT off, a collation, sql_mode, an init_command: each session as a new one's.

    After COM_RESET_CONNECTION mysqlclient kept its old status flags, so Django's
    autocommit(False) sent nothing and the requests ran in autocommit (their
    rollback undid nothing); the collation went back to the character set's
    default; init_command ran after Django's setup, so its isolation level won.
    A reset statement that touches InnoDB, with autocommit off, left its
    transaction open for the next request. OPTIONS['sql_mode'] (the drivers'
    own) was lost. A request's SET NAMES made the next setup pair its character
    set with the collation (mysqlclient: "COLLATION 'utf8mb4_unicode_ci' is not
    valid for CHARACTER SET 'latin1'", at every later checkout).
    """
    facts = mysql_run(
        "reset_rounds",
        params={"set_names": set_names},
        AUTOCOMMIT=False,
        OPTIONS={
            "collation": "utf8mb4_unicode_ci",
            "sql_mode": "STRICT_ALL_TABLES",
            "init_command": "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        },
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "RESET_ON_RETURN": reset},
    )
    fresh, *reset_ones = facts["seen"]
    # A new connection: autocommit off, the collation, Django's isolation level last.
    assert fresh[1:4] == [0, "utf8mb4_unicode_ci", "READ-COMMITTED"]
    assert fresh[5] == "STRICT_ALL_TABLES"
    assert reset_ones == [fresh] * len(reset_ones)  # the same session, set up alike
    assert facts["rows"] == 0  # every request's rollback undid its INSERT
    assert facts["open_after"] == [0, 0, 0]


def test_a_reset_session_keeps_what_an_option_file_set_up(
    mysql_run: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """OPTIONS['read_default_file'] with a character set and an init-command of its own.

    The session's character set after COM_RESET_CONNECTION is the handshake's,
    the option file's latin1, while the driver goes on encoding in utf8mb4:
    from the second request on, text was stored double-encoded ('hÃ©â‚¬').
    The option file's init-command (sql_mode here) was lost too: only
    OPTIONS['init_command'] was run again.
    """
    option_file = tmp_path / "client.cnf"
    option_file.write_text(
        "[client]\ndefault-character-set=latin1\n"
        "init-command=SET SESSION sql_mode='ANSI_QUOTES,STRICT_ALL_TABLES'\n"
    )
    text = "h\u00e9\u20ac reset"
    facts = mysql_run(
        "reset_rounds",
        params={"text": text},
        OPTIONS={"read_default_file": str(option_file)},
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "RESET_ON_RETURN": "reset"},
    )
    fresh, *reset_ones = facts["seen"]
    assert fresh[4] == "utf8mb4"
    if request.node.callspec.params["mysql_run"] == "mysqlclient":  # PyMySQL reads no init-command
        assert fresh[5] == "ANSI_QUOTES,STRICT_ALL_TABLES"
    assert reset_ones == [fresh] * len(reset_ones)  # the same session, set up alike
    assert facts["text_rows"] == 3  # every request's text, stored as written


def test_an_iterator_read_after_its_request_ended_yields_its_rows(mysql_run: Any) -> None:
    """The rest of an iterator read after the request's end, and 50 iterators in one checkout.

    With its cursor closed at the return (so that its late close() leaves the
    next borrower alone), mysqlclient's next fetch raised TypeError; Django's
    own backend yields the rows it holds. And every finished iterator's
    cursor was kept until the connection went back (PyMySQL's with its rows:
    +108 MB for 30 iterators of 20,000 rows in a helper's run).
    """
    facts = mysql_run("iterator_read_after_return", params={"rows": 500})
    assert (facts["outcome"], facts["read"]) == ("ok", 500)
    assert facts["tracked"] == 0
    (pool,) = facts["pools"]
    assert (pool["checked_out"], pool["connections_opened"]) == (0, 1)


def test_a_query_longer_than_connect_timeout_is_not_cut(mysql_run: Any) -> None:
    """The login's bounds (PyMySQL's read and write timeouts: HANDSHAKE_ONLY) end with it."""
    facts = mysql_run("long_query", params={"seconds": 2.5}, POOL_OPTIONS={"CONNECT_TIMEOUT": 1})
    assert facts["outcome"] == "ok"


def test_ssl_asked_of_a_server_without_tls_leaves_no_login_timeout(
    mysql: MySQLServer, mysql_database: str, tmp_path: Path
) -> None:
    """OPTIONS["ssl"] with a server that has no TLS (this machine's): mysqlclient connects in plain.

    The login's read and write timeouts (CONNECT_TIMEOUT, for TLS logins)
    cannot be lifted from a plain socket, where they would cut every query
    longer than them: the connection is opened again without them.
    """
    from django_sapool.backends.mysql.base import DatabaseWrapper

    ca = tmp_path / "ca.pem"
    ca.write_text("")  # never read: the server offers no TLS
    settings_dict = filled(
        **mysql.settings(
            mysql_database,
            OPTIONS={"ssl": {"ca": str(ca)}},
            POOL_OPTIONS={"CONNECT_TIMEOUT": 1},
        )
    )
    wrapper = DatabaseWrapper(settings_dict, "default")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT SLEEP(2)")  # longer than CONNECT_TIMEOUT
            assert cursor.fetchone() == (0,)
            cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            assert cursor.fetchone()[1] == ""  # plain, as the server can only be
    finally:
        wrapper.close()
        registry.dispose()


def test_ssl_mode_preferred_logs_in_once(mysql: MySQLServer, mysql_database: str) -> None:
    """OPTIONS["ssl_mode"] = "PREFERRED" alone: a plain login, so no login timeouts to lift.

    Taken for a TLS request, it got them, could not lift them from the plain
    socket, and logged in a second time for every new connection.
    """
    from django_sapool.backends.mysql.base import DatabaseWrapper

    settings_dict = filled(**mysql.settings(mysql_database, OPTIONS={"ssl_mode": "PREFERRED"}))
    wrapper = DatabaseWrapper(settings_dict, "default")
    with mysql_admin_cursor(mysql) as admin:
        admin.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
        before = int(admin.fetchone()[1])
        try:
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            wrapper.close()
            registry.dispose()
        admin.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
        assert int(admin.fetchone()[1]) - before == 1


def test_server_gone_away_after_wait_timeout_is_invisible(mysql_run: Any) -> None:
    # The server drops our idle sessions after 1 s ("MySQL server has gone away").
    facts = mysql_run(
        "recycle",
        params={"wait": 2.5},
        OPTIONS={"init_command": "SET SESSION wait_timeout = 1"},
    )
    assert facts["second"] != facts["first"]
    assert not facts["first_alive"]


def test_strict_reset_clears_session_state(mysql_run: Any) -> None:
    facts = mysql_run(
        "session_state",
        POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0, "RESET_ON_RETURN": "reset"},
    )
    assert facts["pid"] == facts["dirty_pid"]  # same server session (COM_RESET_CONNECTION)
    assert facts["user_variable"] is None
    assert facts["temp_table"] is False
    # Django's session setup is redone after the reset.
    assert facts["sql_auto_is_null"] == 0
    assert facts["isolation"] == "READ-COMMITTED"


def test_rollback_reset_keeps_session_state_like_persistent_connections(
    mysql_run: Any,
) -> None:
    facts = mysql_run("session_state", POOL_OPTIONS={"POOL_SIZE": 1, "MAX_OVERFLOW": 0})
    assert facts["pid"] == facts["dirty_pid"]
    assert facts["user_variable"] == 42
    assert facts["temp_table"] is True


def test_status_and_error_code_are_read_in_place_and_agree_with_the_driver(
    mysql: Any, mysql_database: str
) -> None:
    """What every return asks of a mysqlclient connection, read from its MYSQL struct.

    The transaction flag and the last error code come from the struct's memory
    (no ctypes call); here they follow a real session through a transaction,
    an SQL error and a connection the server killed, and the pool's questions
    (``Flags``: closed? clean? autocommit?) answer as mysqlclient's own calls do.
    """
    import MySQLdb

    from django_sapool.drivers import MysqlclientOps
    from django_sapool.drivers.mysql import GONE, IN_TRANS, MysqlclientFlags
    from django_sapool.drivers.native import STATUS_ATTRIBUTE, mariadb_client

    conn = MySQLdb.connect(**mysql.conninfo(mysql_database))
    ops = MysqlclientOps()

    def flags_agree_with_the_driver() -> bool:
        """What the pool reads at every checkout and return, against mysqlclient's own calls."""
        closed = not conn.open or conn.errno() in GONE
        assert flags.is_closed() is ops.is_closed(conn) is closed
        assert flags.autocommit() is bool(conn.get_autocommit())
        assert flags.clean() is ops.clean(conn)
        return flags.clean()

    try:
        conn.autocommit(True)
        client = mariadb_client(conn)
        assert client is not None, "this machine's mysqlclient links libmariadb"
        assert client.status_offset is not None and client.errno_offset is not None
        flags = ops.flags(conn)  # what the pool keeps per connection (ConnState.flags)
        assert isinstance(flags, MysqlclientFlags)
        status = getattr(conn, STATUS_ATTRIBUTE)
        assert status.errno is not None and status._refresh is None  # both in place
        assert status.in_place
        assert ops.in_transaction(conn) is False
        assert flags_agree_with_the_driver()
        assert flags.autocommit() is True

        conn.query("BEGIN")
        assert status.read() & IN_TRANS
        assert status.read() == client.status_at(client.handle(conn))
        assert not flags_agree_with_the_driver()
        conn.query("ROLLBACK")
        assert not status.read() & IN_TRANS
        assert flags_agree_with_the_driver()

        conn.autocommit(False)  # Django's set_autocommit(False): SET autocommit=0
        assert flags.autocommit() is False
        # No transaction shown, but with autocommit off one may be open all the
        # same (a failed first statement opens one unannounced): not clean.
        assert ops.in_transaction(conn) is None
        assert not flags_agree_with_the_driver()
        conn.autocommit(True)
        assert flags.autocommit() is True

        with pytest.raises(MySQLdb.ProgrammingError):
            conn.query("SELEC 1")
        assert status.errno.value == conn.errno() == 1064  # ER_PARSE_ERROR: not gone
        assert flags_agree_with_the_driver()
        assert not flags.is_closed()

        pid = conn.thread_id()
        with mysql_admin_cursor(mysql) as admin:
            admin.execute(f"KILL {pid}")
        with pytest.raises(MySQLdb.OperationalError):
            conn.query("SELECT 1")
        assert status.errno.value == conn.errno()
        assert status.errno.value in GONE
        assert not ops.clean(conn)  # mysqlclient keeps .open true: the error code tells
        assert conn.open
        assert flags.is_closed()
        assert not flags_agree_with_the_driver()
    finally:
        conn.close()
    assert flags.is_closed()  # conn.open is false now: the struct is not read
    assert not flags.clean()
