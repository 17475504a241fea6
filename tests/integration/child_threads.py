"""What the scenario children (child.py, tenants_child.py, prometheus_child.py, ...)
do with threads, written once: run workers, sample a peak while they run, and
share one observer session between them.

Imported inside a child process, after its Django is set up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection


def run_threads(n: int, work: Callable[[int], object]) -> None:
    """``work(0)`` ... ``work(n - 1)``, each in a thread of its own, all started
    before any is waited for; returns when every one has ended."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Peak:
    """The highest value ``count()`` returned, sampled every 2 ms from a thread of
    its own while the ``with`` block runs (``value``); no sampling when ``count``
    is None (SQLite: no server to ask), and the value stays 0."""

    def __init__(self, count: Callable[[], int] | None) -> None:
        self.count = count
        self.value = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        assert self.count is not None
        while not self._done.is_set():
            self.value = max(self.value, self.count())
            time.sleep(0.002)

    def __enter__(self) -> Peak:
        if self.count is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self.count is not None:
            self._thread.join()


def connect(conninfo: Any, *, mysql: bool) -> Any:
    """A connection of its own, outside the pool, with the driver Django picked
    (psycopg, psycopg2 or MySQLdb; MySQLdb takes keyword arguments)."""
    database = connection.Database
    return database.connect(**conninfo) if mysql else database.connect(conninfo)


class SharedSession:
    """An unpooled autocommit server session (an observer's) that threads share:
    one statement at a time, under a lock."""

    def __init__(self, conninfo: Any, *, mysql: bool) -> None:
        self.mysql = mysql
        self.conn = connect(conninfo, mysql=mysql)
        if mysql:
            self.conn.autocommit(True)
        else:
            self.conn.autocommit = True
        self.lock = threading.Lock()

    def row(self, sql: str, params: Any = None) -> Any:
        """The first row ``sql`` returns (None for a statement that returns no rows)."""
        with self.lock:
            cursor = self.conn.cursor()
            try:
                cursor.execute(sql, params)
                return cursor.fetchone() if cursor.description else None
            finally:
                cursor.close()

    def scalar(self, sql: str, params: Any = None) -> Any:
        return self.row(sql, params)[0]
