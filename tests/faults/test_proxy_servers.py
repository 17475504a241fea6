"""The fault proxy in front of the machine's real servers: forwarding works, a black hole hangs.

These only read (SELECT 1) from the shared servers of SAPOOL_PG_URL and
SAPOOL_MYSQL_URL, through a :class:`FaultProxy` of their own. They prove what the
silent-network fault tests rely on: a black-holed connection makes the driver
wait forever (no timeout of its own), and a new connection fails only by its
``connect_timeout``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.integration.conftest import MYSQL_URL, PG_URL, unavailable

from .harness import time_bound
from .proxy import FaultProxy

#: How long a black-holed query is watched to see that it hangs.
HANG_SECONDS = 2.0
CONNECT_TIMEOUT = 2
#: A connect_timeout of 2 s may end a little late on a busy box, never early.
LATE_MARGIN = 2.0
#: Bound on each whole test.
TEST_SECONDS = 15.0


bounded = time_bound(TEST_SECONDS)


class Background:
    """Run a call in a daemon thread and keep its outcome (a hung driver never blocks us)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # reported to the test thread
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    def join(self, seconds: float) -> bool:
        """Wait up to seconds; return whether the call has ended."""
        self.thread.join(seconds)
        return not self.thread.is_alive()


def blackhole_hangs_then_close_ends_it(
    proxy: FaultProxy, call: Callable[[], Any], error: type[BaseException]
) -> None:
    """After blackhole(), ``call`` on an existing connection hangs; closing the proxy ends it."""
    proxy.blackhole()
    hung = Background(call)
    assert not hung.join(HANG_SECONDS), (hung.result, hung.error)
    closed_at = time.monotonic()
    proxy.close()  # a FIN on the client's socket: the driver sees the server gone
    assert hung.join(5.0), "the driver did not notice the closed connection"
    assert isinstance(hung.error, error), repr(hung.error)
    assert hung.ended_at is not None and hung.ended_at - closed_at < 1.0


def times_out(connect: Callable[[], Any], error: type[BaseException]) -> float:
    """Return how long a connect into the black hole took to fail with ``error``."""
    start = time.monotonic()
    attempt = Background(connect)
    assert attempt.join(CONNECT_TIMEOUT + LATE_MARGIN + 2.0), "connect_timeout was not honoured"
    elapsed = (attempt.ended_at or time.monotonic()) - start
    assert isinstance(attempt.error, error), repr(attempt.error)
    assert CONNECT_TIMEOUT - 0.1 <= elapsed < CONNECT_TIMEOUT + LATE_MARGIN, elapsed
    return elapsed


@pytest.mark.postgresql
def test_postgresql_through_the_proxy() -> None:
    psycopg = pytest.importorskip("psycopg")
    url = urlsplit(PG_URL)
    host, port = url.hostname or "127.0.0.1", url.port or 5432
    params: dict[str, Any] = {
        "user": unquote(url.username or "postgres"),
        "password": unquote(url.password or ""),
        "dbname": url.path.lstrip("/") or "postgres",
    }
    try:
        psycopg.connect(host=host, port=port, connect_timeout=5, **params).close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {host}:{port} is unreachable: {exc}")

    with FaultProxy(host, port) as proxy:
        conn = psycopg.connect(host=proxy.host, port=proxy.port, connect_timeout=5, **params)
        try:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            proxy.blackhole()
            elapsed = times_out(
                lambda: psycopg.connect(
                    host=proxy.host, port=proxy.port, connect_timeout=CONNECT_TIMEOUT, **params
                ),
                psycopg.OperationalError,
            )
            print(f"psycopg connect into the black hole failed after {elapsed:.2f} s")
            blackhole_hangs_then_close_ends_it(
                proxy, lambda: conn.execute(""), psycopg.OperationalError
            )
        finally:
            proxy.close()
            conn.close()


@pytest.mark.mysql
def test_mysql_through_the_proxy() -> None:
    try:
        import MySQLdb
    except ImportError as exc:
        unavailable(f"mysqlclient is not installed: {exc}")
    url = urlsplit(MYSQL_URL)
    host, port = url.hostname or "127.0.0.1", url.port or 3306
    params: dict[str, Any] = {
        "user": unquote(url.username or "root"),
        "password": unquote(url.password or ""),
    }
    try:
        MySQLdb.connect(host=host, port=port, connect_timeout=5, **params).close()
    except MySQLdb.OperationalError as exc:
        unavailable(f"MySQL/MariaDB at {host}:{port} is unreachable: {exc}")

    with FaultProxy(host, port) as proxy:
        conn = MySQLdb.connect(host=proxy.host, port=proxy.port, connect_timeout=5, **params)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)

            def select_one() -> Any:
                cursor.execute("SELECT 1")
                return cursor.fetchone()

            proxy.blackhole()
            elapsed = times_out(
                lambda: MySQLdb.connect(
                    host=proxy.host, port=proxy.port, connect_timeout=CONNECT_TIMEOUT, **params
                ),
                MySQLdb.OperationalError,
            )
            print(f"mysqlclient connect into the black hole failed after {elapsed:.2f} s")
            blackhole_hangs_then_close_ends_it(proxy, select_one, MySQLdb.OperationalError)
        finally:
            proxy.close()
            conn.close()
