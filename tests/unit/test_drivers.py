"""The driver classes without a server: which class, which native path, and the switch."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_sapool.drivers import (
    DriverOps,
    MysqlclientOps,
    MySQLOps,
    PyMySQLOps,
    mysql_ops,
    native,
    native_paths,
)

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != native.ENV}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the switch ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "off"),
    [
        ("", set()),
        ("on", set()),
        ("off", {"poll", "mariadb"}),
        ("OFF", {"poll", "mariadb"}),
        ("no-poll", {"poll"}),
        ("no-mariadb", {"mariadb"}),
        ("no-poll,no-mariadb", {"poll", "mariadb"}),
        (" no-mariadb , ", {"mariadb"}),
    ],
)
def test_switch_is_parsed(value: str, off: set[str]) -> None:
    assert native.parse_switch(value) == off


@pytest.mark.parametrize("value", ["no", "no-pol", "poll", "false", "no-poll;no-mariadb"])
def test_unknown_switch_words_are_refused(value: str) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        native.parse_switch(value)
    assert "DJANGO_SAPOOL_NATIVE" in str(raised.value)
    assert "'no-poll', 'no-mariadb'" in str(raised.value)


def test_unknown_switch_word_stops_the_import() -> None:
    proc = _python("import django_sapool.drivers", {native.ENV: "no-pol"})
    assert proc.returncode != 0
    assert "DJANGO_SAPOOL_NATIVE='no-pol': unknown word 'no-pol'" in proc.stderr


#: Run with one DJANGO_SAPOOL_NATIVE: which paths, and what the drivers really do.
SWITCH_CHILD = """
    import json, select, socket
    from django_sapool.drivers import DriverOps, MysqlclientOps, native, native_paths

    class Ops(DriverOps):
        def socket_fd(self, conn):
            return conn.fileno()

    class FakeMysqlclient:
        probed = False
        open = 1

        def get_autocommit(self):
            return True

        def _get_native_connection(self):
            FakeMysqlclient.probed = True
            raise OSError("no native handle in this fake")

    ours, theirs = socket.socketpair()
    poller = Ops().poller(ours)
    quiet = bool(poller.poll(0))
    theirs.close()
    in_transaction = MysqlclientOps().in_transaction(FakeMysqlclient())
    print(json.dumps({
        "paths": native_paths(),
        "poller": type(poller).__name__,
        "news_on_quiet_socket": quiet,
        "news_on_closed_socket": bool(poller.poll(0)),
        "in_transaction": in_transaction,
        "probed": FakeMysqlclient.probed,
    }))
"""


def _switched(value: str | None) -> dict[str, Any]:
    proc = _python(SWITCH_CHILD, None if value is None else {native.ENV: value})
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    # Whatever the path, the socket check answers the same.
    assert result["news_on_quiet_socket"] is False
    assert result["news_on_closed_socket"] is True
    return result


@pytest.mark.parametrize("value", [None, "", "on", "no-mariadb"])
def test_poll_is_native_unless_switched_off(value: str | None) -> None:
    result = _switched(value)
    assert result["paths"]["socket poll"] == "libc poll(2), GIL kept"
    assert result["poller"] == "HeldPoll"


@pytest.mark.parametrize("value", ["no-poll", "off", "no-mariadb,no-poll"])
def test_no_poll_switches_to_select_poll(value: str) -> None:
    result = _switched(value)
    assert result["paths"]["socket poll"] == f"select.poll (DJANGO_SAPOOL_NATIVE={value})"
    assert result["poller"] == type(select.poll()).__name__


@pytest.mark.parametrize("value", [None, "no-poll"])
def test_mariadb_is_probed_unless_switched_off(value: str | None) -> None:
    result = _switched(value)
    assert result["probed"]  # it tried the fake's native handle
    assert result["paths"]["mysqlclient status"].startswith("unavailable: OSError: no native")
    assert result["in_transaction"] is None  # autocommit on, status unknown: ROLLBACK


@pytest.mark.parametrize("value", ["no-mariadb", "off"])
def test_no_mariadb_switches_to_rollback_on_every_return(value: str) -> None:
    result = _switched(value)
    assert not result["probed"]
    assert result["paths"]["mysqlclient status"] == (
        f"off (DJANGO_SAPOOL_NATIVE={value}): ROLLBACK on every return, no RESET_ON_RETURN='reset'"
    )
    assert result["in_transaction"] is None


def test_native_paths_in_this_process() -> None:
    paths = native_paths()
    assert set(paths) == {"socket poll", "mysqlclient status"}
    if "poll" not in native.SWITCHED_OFF:
        assert paths["socket poll"] == "libc poll(2), GIL kept"


def test_mariadb_path_before_any_connection() -> None:
    """Not probed yet: mysqlclient's library is loaded to say what the probe would find."""
    proc = _python(
        """
        from django_sapool.drivers import native_paths
        print(native_paths()["mysqlclient status"])
        import MySQLdb
        print(native_paths()["mysqlclient status"])
        """
    )
    assert proc.returncode == 0, proc.stderr
    before, after = proc.stdout.splitlines()
    assert before == "not probed (mysqlclient not imported)"
    assert after.startswith(("libmariadb ", "unavailable: "))


# -- the socket check ------------------------------------------------------------


def test_held_poll_sees_data_and_hang_up() -> None:
    if native.held_poll(0) is None:
        pytest.skip("libc poll(2) unavailable or switched off")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        poller = native.HeldPoll(ours.fileno())
        assert not poller.poll(0)
        theirs.send(b"x")
        assert poller.poll(0)
        ours.recv(1)
        assert not poller.poll(0)
        theirs.close()
        assert poller.poll(0)


def test_no_socket_always_has_news() -> None:
    poller = DriverOps().poller(object())
    assert poller.poll(0)


# -- MySQL: one class per driver ---------------------------------------------------


def test_mysql_ops_follows_the_module_django_connects_with() -> None:
    assert type(mysql_ops(types.ModuleType("pymysql"))) is PyMySQLOps
    assert type(mysql_ops(types.ModuleType("MySQLdb"))) is MysqlclientOps


BACKEND_CHILD = """
    import sys
    from django.conf import settings
    settings.configure()
    import pymysql
    if {before}:
        pymysql.install_as_MySQLdb()
    from django_sapool.backends.mysql.base import DatabaseWrapper
    from django_sapool.backends.mysql_gis.base import DatabaseWrapper as GISWrapper
    if not {before}:
        pymysql.install_as_MySQLdb()
    print(DatabaseWrapper.Database.__name__, type(DatabaseWrapper.sapool_driver).__name__)
    assert GISWrapper.sapool_driver is DatabaseWrapper.sapool_driver
"""


@pytest.mark.parametrize(
    ("before", "expected"),
    [(True, "pymysql PyMySQLOps"), (False, "MySQLdb MysqlclientOps")],
    ids=["install_as_MySQLdb-first", "install_as_MySQLdb-later"],
)
def test_mysql_backend_picks_the_driver_django_uses(before: bool, expected: str) -> None:
    """A later install_as_MySQLdb() does not change what Django connects with, nor do we."""
    pytest.importorskip("MySQLdb")
    pytest.importorskip("pymysql")
    proc = _python(BACKEND_CHILD.format(before=before))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_psycopg_status_codes_are_libpqs() -> None:
    """PgconnFlags compares psycopg's pgconn codes with plain ints: they must be libpq's."""
    from psycopg.pq import ConnStatus, TransactionStatus

    from django_sapool.drivers.postgresql import BAD, IDLE

    assert (BAD, IDLE) == (ConnStatus.BAD, TransactionStatus.IDLE)
    assert type(BAD) is int and type(IDLE) is int


class FakePyMySQL:
    def __init__(self, server_status: int = 0, open: bool = True) -> None:
        self.server_status = server_status
        self.open = open
        self._sock: Any = None
        self.pinged: list[dict[str, Any]] = []

    def ping(self, **kwargs: Any) -> None:
        self.pinged.append(kwargs)


def test_pymysql_reads_its_own_status() -> None:
    ops = PyMySQLOps()
    assert ops.in_transaction(FakePyMySQL(server_status=0x0003)) is True
    assert ops.in_transaction(FakePyMySQL(server_status=0x0002)) is False
    # Autocommit off, none shown: a failed first statement opens one unannounced.
    assert ops.in_transaction(FakePyMySQL(server_status=0x0000)) is None
    assert ops.is_closed(FakePyMySQL(open=False))
    assert not ops.is_closed(FakePyMySQL())
    conn = FakePyMySQL()
    assert ops.socket_fd(conn) is None  # no socket
    ops.ping(conn)
    assert conn.pinged == [{"reconnect": False}]  # never reconnect behind Django's back
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn._sock = ours
        assert ops.socket_fd(conn) == ours.fileno()


def test_only_pymysql_bounds_the_handshake_by_the_connect_timeout() -> None:
    params: dict[str, Any] = {}
    PyMySQLOps().add_connect_timeout(params, 2.5)
    assert params == {
        "connect_timeout": 3,
        "read_timeout": 3,
        "write_timeout": 3,  # its TLS handshake runs under the write timeout
        MySQLOps.HANDSHAKE_ONLY: ("read_timeout", "write_timeout"),
    }
    params = {"read_timeout": 30}
    PyMySQLOps().add_connect_timeout(params, 2.5)
    assert params == {
        "connect_timeout": 3,
        "read_timeout": 30,
        "write_timeout": 3,
        MySQLOps.HANDSHAKE_ONLY: ("write_timeout",),
    }
    params = {"read_timeout": 30, "write_timeout": 30}
    PyMySQLOps().add_connect_timeout(params, 2.5)
    assert params == {"connect_timeout": 3, "read_timeout": 30, "write_timeout": 30}
    params = {}
    MysqlclientOps().add_connect_timeout(params, 2.5)
    assert params == {"connect_timeout": 3}


def test_pymysql_tls_handshake_with_a_silent_server_ends_at_the_connect_timeout() -> None:
    """A server that offers TLS, then never answers the TLS handshake.

    PyMySQL writes its SSL request, then runs the TLS handshake under its
    write timeout, none by default: the connect waited for ever (a helper's
    hunt: still waiting after 40 s with CONNECT_TIMEOUT 3). Real PyMySQL
    against a socket server of the test's own that sends a MariaDB greeting
    with the SSL capability and then reads and says nothing.
    """
    import ssl
    import struct
    import threading
    import time

    pymysql = pytest.importorskip("pymysql")
    # Protocol 10 greeting: CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION,
    # and CLIENT_PLUGIN_AUTH in the upper capability flags.
    payload = (
        b"\x0a5.5.5-10.11.0-MariaDB\x00"
        + struct.pack("<I", 7)
        + b"abcdefgh\x00"
        + struct.pack("<H", 0x0200 | 0x0800 | 0x8000)
        + b"\x21"
        + struct.pack("<H", 0x0002)
        + struct.pack("<H", 0x0008)
        + bytes([21])
        + b"\x00" * 10
        + b"ijklmnopqrst\x00mysql_native_password\x00"
    )
    greeting = struct.pack("<I", len(payload))[:3] + b"\x00" + payload
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    held: list[socket.socket] = []

    def serve() -> None:
        client, _ = server.accept()
        held.append(client)  # kept open, never answered: a silent path
        client.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    params: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.getsockname()[1],
        "user": "app",
        "ssl": {"check_hostname": False, "verify_mode": ssl.CERT_NONE},
    }
    ops = PyMySQLOps()
    ops.add_connect_timeout(params, 1)
    params.pop(MySQLOps.HANDSHAKE_ONLY)
    started = time.monotonic()
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            pymysql.connect(**params)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(10)
    elapsed = time.monotonic() - started
    server.close()
    for client in held:
        client.close()
    assert not thread.is_alive(), "the connect was still waiting after 10 s"
    assert isinstance(outcome[0], pymysql.err.OperationalError), outcome
    assert elapsed < 3  # CONNECT_TIMEOUT 1, not never


class FakeMysqlclient:
    def __init__(self, autocommit: bool, errno: int = 0, open: int = 1) -> None:
        self._autocommit, self._errno, self.open = autocommit, errno, open

    def get_autocommit(self) -> bool:
        return self._autocommit

    def errno(self) -> int:
        return self._errno

    def fileno(self) -> int:
        return 7


def test_mysqlclient_without_libmariadb(monkeypatch: pytest.MonkeyPatch) -> None:
    """No status flags: a ROLLBACK unless Django's autocommit says none can be open."""
    monkeypatch.setattr(native, "_mariadb", "not libmariadb (this test)")
    ops = MysqlclientOps()
    assert ops.in_transaction(FakeMysqlclient(autocommit=False)) is True
    assert ops.in_transaction(FakeMysqlclient(autocommit=True)) is None
    with pytest.raises(NotImplementedError, match="mysql_reset_connection"):
        ops.strict_reset(FakeMysqlclient(autocommit=True))
    assert ops.socket_fd(FakeMysqlclient(autocommit=True)) == 7


def test_mysqlclient_knows_a_lost_connection_by_its_last_error() -> None:
    ops = MysqlclientOps()
    assert not ops.is_closed(FakeMysqlclient(autocommit=True))
    assert ops.is_closed(FakeMysqlclient(autocommit=True, errno=2006))  # gone away
    assert ops.is_closed(FakeMysqlclient(autocommit=True, errno=2013))  # lost
    assert not ops.is_closed(FakeMysqlclient(autocommit=True, errno=1064))  # a syntax error
    assert ops.is_closed(FakeMysqlclient(autocommit=True, open=0))


@pytest.mark.parametrize("ops", [MysqlclientOps(), PyMySQLOps()], ids=["mysqlclient", "pymysql"])
def test_mysql_read_only_errors(ops: MySQLOps) -> None:
    assert ops.is_read_only_error(None, Exception(1836, "Running in read-only mode"))
    assert ops.is_read_only_error(None, Exception(1290, "... the --read-only option ..."))
    assert ops.is_read_only_error(None, Exception(1290, "... --super_read_only ... read_only"))
    assert not ops.is_read_only_error(None, Exception(1290, "--skip-grant-tables"))
    assert not ops.is_read_only_error(None, Exception(1064, "read-only"))
    assert not ops.is_read_only_error(None, Exception("read-only"))
