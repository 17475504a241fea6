"""The fast path keeps every guarantee: a connection remembered by its borrower (issue 14).

A connection a wrapper returns is remembered for that wrapper (``remembered.py``)
instead of going back to SQLAlchemy's queue. Each test here makes the pool
remember one, then checks against the real PostgreSQL server that what users
rely on still holds: another thread takes it rather than wait, a waiter is not
starved, a killed or too old one is replaced, IDLE_TIMEOUT closes it down to
MIN_IDLE, a thread's end, dispose() and fork() see it, and status() counts it
as idle. Every figure about sessions comes from ``pg_stat_activity``; a
connection is told apart by its ``pg_backend_pid()``.

In-process: tests/conftest.py configures Django, and each test builds its
wrappers itself, one per thread (a Django wrapper belongs to the thread that
made it), on a database, alias and application_name of its own.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from django.db import OperationalError

from django_sapool import registry
from django_sapool.backends.postgresql.base import DatabaseWrapper
from django_sapool.pool import ManagedPool
from tests.unit.pools import filled

from .conftest import PgServer, _admin, own_pg_database

pytestmark = pytest.mark.postgresql

#: Seconds any single step may take before the test gives up on it.
STEP = 15.0


def backend_pid(wrapper: Any) -> int:
    """Check a connection out (unless the wrapper holds one) and ask the server who it is."""
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid: int = cursor.fetchone()[0]
    return pid


def cycle(wrapper: Any) -> int:
    """One request: check out, query, return; the pool then remembers the connection."""
    pid = backend_pid(wrapper)
    wrapper.close()
    return pid


def checkout_and_query(wrapper: Any) -> tuple[int, int]:
    """A request that checks out and runs a query: the backend pid, and the answer (42)."""
    pid = backend_pid(wrapper)
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 40 + 2")
        answer: int = cursor.fetchone()[0]
    wrapper.close()
    return pid, answer


def give_back(wrapper: Any) -> None:
    wrapper.close()


class Borrower:
    """A thread that owns one wrapper of an alias and runs callables on it when asked.

    ``submit(fn)`` runs ``fn(wrapper)`` in the thread and returns a Future;
    ``call(fn)`` waits for its result. The wrapper is a local of the thread's
    function only, so it dies with the thread (``test_thread_that_ends...``).
    """

    def __init__(self, settings_dict: dict[str, Any], alias: str, name: str) -> None:
        self._jobs: queue.Queue[tuple[Callable[[Any], Any], Future[Any]] | None] = queue.Queue()
        self.thread = threading.Thread(
            target=self._run, args=(settings_dict, alias), name=name, daemon=True
        )
        self.thread.start()

    def _run(self, settings_dict: dict[str, Any], alias: str) -> None:
        wrapper = DatabaseWrapper(settings_dict, alias)
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=120)
                except queue.Empty:
                    return  # abandoned by a test that failed badly
                if job is None:
                    return
                fn, future = job
                del job
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(wrapper))
                    except BaseException as exc:
                        future.set_exception(exc)
                del fn, future
        finally:
            # Returns a connection still held (a failed test); a no-op otherwise,
            # so what the pool remembers for this wrapper stays remembered.
            wrapper.close()

    def submit(self, fn: Callable[[Any], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((fn, future))
        return future

    def call(self, fn: Callable[[Any], Any], timeout: float = STEP) -> Any:
        return self.submit(fn).result(timeout)

    def stop(self) -> None:
        if self.thread.is_alive():
            self._jobs.put(None)
            self.thread.join(STEP)
        assert not self.thread.is_alive(), f"{self.thread.name} did not end"


class Site:
    """One test's database, alias and application_name, and an admin connection to count."""

    def __init__(self, pg: PgServer, dbname: str) -> None:
        self.pg = pg
        self.dbname = dbname
        tag = uuid.uuid4().hex[:10]
        self.alias = f"remembered_{tag}"
        self.app_name = f"sapool-rem-{tag}"
        self.admin = _admin(pg)
        self.borrowers: list[Borrower] = []
        self.settings_dict: dict[str, Any] = {}

    def configure(self, **pool_options: Any) -> dict[str, Any]:
        self.settings_dict = filled(
            **self.pg.settings(self.dbname, self.app_name, POOL_OPTIONS=pool_options)
        )
        return self.settings_dict

    def borrower(self, name: str) -> Borrower:
        borrower = Borrower(self.settings_dict, self.alias, f"{self.alias}-{name}")
        self.borrowers.append(borrower)
        return borrower

    def wrapper(self) -> Any:
        """A wrapper for the calling thread."""
        return DatabaseWrapper(self.settings_dict, self.alias)

    def pool(self) -> ManagedPool:
        (pool,) = [p for p in registry.pools() if p.alias == self.alias]
        return pool

    def sessions(self) -> int:
        row = self.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            [self.dbname, self.app_name],
        ).fetchone()
        return int(row[0])

    def alive(self, pid: int) -> bool:
        row = self.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()
        return bool(row[0])

    def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` every 20 ms for up to ``timeout`` seconds; return its last answer."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


@pytest.fixture
def site(pg: PgServer) -> Iterator[Site]:
    with own_pg_database(pg, "sapool_rem") as dbname:
        site = Site(pg, dbname)
        try:
            yield site
        finally:
            try:
                for borrower in site.borrowers:
                    borrower.stop()
            finally:
                registry.dispose(site.alias)
                site.admin.close()


def test_a_waiting_thread_takes_a_connection_remembered_elsewhere(site: Site) -> None:
    """B takes what A remembers instead of waiting TIMEOUT; then A, waiting, is not starved."""
    site.configure(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=3)
    a, b = site.borrower("a"), site.borrower("b")
    pid = a.call(cycle)
    pool = site.pool()
    assert len(pool.remembered) == 1  # A's, while A lives on

    started = time.monotonic()
    assert b.call(backend_pid) == pid  # A's very connection, stolen
    took = time.monotonic() - started
    # Without the steal B would wait the full TIMEOUT (3 s) and fail.
    assert took < 1.0, f"B's checkout took {took:.2f} s"
    assert site.sessions() == 1
    assert (pool.status().checkout_waits, pool.status().timeouts) == (0, 0)

    # A asks while B holds the only connection: it must wait...
    waiting = a.submit(backend_pid)
    assert site.until(lambda: pool.status().waiting == 1), "A never started to wait"
    assert not waiting.done()
    # ...and B's return must reach A, not be remembered for B.
    returned = time.monotonic()
    b.call(give_back)
    assert waiting.result(STEP) == pid  # PoolExhausted after 3 s if A were starved
    assert time.monotonic() - returned < 1.0
    status = pool.status()
    assert (status.checkout_waits, status.timeouts, status.connections_opened) == (1, 0, 1)
    assert site.sessions() == 1
    a.call(give_back)


def test_a_checkout_that_finds_the_idle_connection_taken_is_not_starved(site: Site) -> None:
    """B sees an idle connection in the queue, A takes it first and returns it: B gets it.

    B does not mean to wait (a connection is idle), but SQLAlchemy's take()
    waits after all once A took it. A's return must go to the queue, where B
    waits, not into A's memory while A's thread idles: B used to wait the
    whole TIMEOUT (3 s) and fail. The thread switch between B's look at the
    queue and its take() is forced here by pausing B's first take().
    """
    site.configure(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=3, PRE_PING=False)
    first = site.borrower("first")
    pid = first.call(cycle)
    first.stop()  # its wrapper dies: the connection goes to SQLAlchemy's queue
    gc.collect()
    pool = site.pool()
    assert (len(pool.remembered), len(pool._sa.idle_records)) == (0, 1)

    a, b = site.borrower("a"), site.borrower("b")
    b_is_taking, a_returned = threading.Event(), threading.Event()
    take = pool._sa.take

    def take_after_a(*args: Any) -> Any:
        if threading.current_thread() is b.thread and not b_is_taking.is_set():
            b_is_taking.set()
            a_returned.wait(STEP)
        return take(*args)

    pool._sa.take = take_after_a
    started = time.monotonic()
    b_checkout = b.submit(backend_pid)
    assert b_is_taking.wait(STEP)
    assert a.call(cycle) == pid  # took the idle connection, used it, returned it
    a_returned.set()
    assert b_checkout.result(STEP) == pid  # PoolExhausted after 3 s if B were starved
    took = time.monotonic() - started
    assert took < 2.0, f"B's checkout took {took:.2f} s"
    assert (pool.status().timeouts, site.sessions()) == (0, 1)
    b.call(give_back)


def test_a_remembered_connection_killed_on_the_server_is_replaced(site: Site) -> None:
    site.configure(POOL_SIZE=2, PRE_PING=True)
    a = site.borrower("a")
    old = a.call(cycle)
    pool = site.pool()
    assert len(pool.remembered) == 1
    site.admin.execute("SELECT pg_terminate_backend(%s)", [old])
    assert site.until(lambda: not site.alive(old)), "the backend survived pg_terminate_backend"
    assert len(pool.remembered) == 1  # still remembered: the fast path must catch it

    new, answer = a.call(checkout_and_query)
    assert new != old
    assert answer == 42
    assert pool.status().connections_invalidated == 1
    assert site.sessions() == 1


def test_a_stolen_connection_killed_on_the_server_is_replaced(site: Site) -> None:
    """B, with nothing of its own and an empty queue, takes A's remembered connection:
    killed on the server meanwhile, it is caught by the same checks and replaced."""
    site.configure(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=3, PRE_PING=True)
    a, b = site.borrower("a"), site.borrower("b")
    old = a.call(cycle)
    pool = site.pool()
    assert len(pool.remembered) == 1  # A's: the only connection, the queue is empty
    site.admin.execute("SELECT pg_terminate_backend(%s)", [old])
    assert site.until(lambda: not site.alive(old)), "the backend survived pg_terminate_backend"

    new, answer = b.call(checkout_and_query)
    assert new != old
    assert answer == 42
    status = pool.status()
    assert (status.connections_invalidated, status.timeouts) == (1, 0)
    assert site.sessions() == 1


def test_a_broken_sibling_retires_remembered_connections_too(site: Site) -> None:
    """A dead connection retires every older one at its next checkout, remembered ones too.

    SQLAlchemy's pool-wide invalidation (a dead connection usually means a
    restarted server): the fast path never asks SQLAlchemy, so the discard
    gives remembered connections back to the queue, where it reconnects them.
    """
    site.configure(POOL_SIZE=2, PRE_PING=True)
    a, b = site.borrower("a"), site.borrower("b")
    # Both hold one at once, then each remembers its own.
    a_old, b_old = a.call(backend_pid), b.call(backend_pid)
    assert a_old != b_old
    a.call(give_back)
    b.call(give_back)
    pool = site.pool()
    assert len(pool.remembered) == 2
    site.admin.execute("SELECT pg_terminate_backend(%s)", [b_old])
    assert site.until(lambda: not site.alive(b_old)), "the backend survived pg_terminate_backend"
    b_new = b.call(cycle)  # B's socket check finds it dead: discarded, and A's retired
    assert b_new not in (a_old, b_old)
    assert len(pool.remembered) == 1  # B's new one; A's went back to the queue
    a_new = a.call(cycle)
    assert a_new not in (a_old, b_old, b_new)
    assert site.until(lambda: not site.alive(a_old)), "A's retired session is still open"
    status = pool.status()
    assert (status.connections_invalidated, status.connections_recycled) == (1, 1)
    assert site.sessions() == 2


def test_a_dead_wrapper_s_autocommit_mode_is_not_trusted(site: Site) -> None:
    """A wrapper that dies in a transaction mode: the next borrower switches autocommit on.

    The connection was returned in autocommit mode before, so the pool knows
    that mode (``ConnState.autocommit``, which spares a reused connection the
    question); the dead wrapper's mode is unknown and must not be trusted, or
    the next request's writes would sit in a transaction rolled back at return.
    """
    site.configure(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=5)
    db = _admin(site.pg, site.dbname)  # the test's database, not the admin one
    db.execute("CREATE TABLE rem_rows (n int)")
    a = site.borrower("a")
    pid = a.call(cycle)  # returned in autocommit mode, remembered for A

    def die_in_transaction_mode() -> None:
        wrapper = site.wrapper()
        wrapper.set_autocommit(False)  # A's connection, stolen
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] == pid
        # The thread ends without closing: the wrapper's death returns it.

    dying = threading.Thread(target=die_in_transaction_mode, name=f"{site.alias}-dying")
    dying.start()
    dying.join(STEP)
    gc.collect()
    assert site.pool().status().checked_out == 0

    def insert(wrapper: Any) -> tuple[int, bool]:
        with wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO rem_rows VALUES (1) RETURNING pg_backend_pid()")
            got: int = cursor.fetchone()[0]
        mode: bool = wrapper.connection.autocommit
        wrapper.close()
        return got, mode

    try:
        assert a.call(insert) == (pid, True)
        assert db.execute("SELECT count(*) FROM rem_rows").fetchone()[0] == 1
    finally:
        db.close()


def test_a_remembered_connection_older_than_recycle_is_replaced(site: Site) -> None:
    """The same thread checks out every 50 ms, so its connection stays remembered.

    The housekeeper gives a remembered connection back to the queue once it is
    unused for its interval (RECYCLE / 4 here, 0.25 s), where the queue's path
    would recycle it; checking out more often than that keeps every checkout
    on the fast path, which must replace the connection once RECYCLE is past.
    """
    recycle = 1.0
    site.configure(POOL_SIZE=2, RECYCLE=recycle, RECYCLE_JITTER=0)
    a = site.borrower("a")
    started = time.monotonic()
    old = a.call(cycle)
    pool = site.pool()
    seen: list[tuple[float, int, int]] = []  # (seconds since the first checkout, remembered, pid)
    while time.monotonic() - started < recycle + 2.0:
        time.sleep(0.05)
        remembered = len(pool.remembered)
        at = time.monotonic() - started
        pid = a.call(cycle)
        seen.append((at, remembered, pid))
        if pid != old:
            break
    at, remembered, new = seen[-1]
    assert new != old, f"never replaced in {at:.2f} s: {seen}"
    assert remembered == 1, f"the replaced connection was not remembered: {seen}"
    # Not before RECYCLE, and at the first checkout after it (one period of slack).
    assert all(pid == old for t, _, pid in seen if t < recycle - 0.1), seen
    assert recycle - 0.1 <= at < recycle + 0.5, seen
    assert site.until(lambda: not site.alive(old), timeout=3.0), "the old session is still open"
    assert site.sessions() == 1
    assert pool.status().connections_recycled == 1


def test_an_idle_connection_older_than_recycle_is_closed_despite_min_idle(site: Site) -> None:
    """RECYCLE bounds a session's life on the server, idle or not; MIN_IDLE bounds IDLE_TIMEOUT.

    The housekeeper kept MIN_IDLE idle connections however old: a quiet pool
    kept a session past RECYCLE (a revoked password's) until it was used again.
    """
    site.configure(POOL_SIZE=2, RECYCLE=1, RECYCLE_JITTER=0, IDLE_TIMEOUT=None, MIN_IDLE=1)
    borrower = site.borrower("once")
    pid = borrower.call(cycle)
    assert site.sessions() == 1
    assert site.until(lambda: not site.alive(pid), timeout=5.0), "still open past RECYCLE"
    assert site.sessions() == 0
    assert borrower.call(cycle) != pid  # the next request opens a new one


def test_remembered_connections_close_after_idle_timeout_down_to_min_idle(site: Site) -> None:
    """Three remembered connections; the housekeeper closes two, never the last one.

    A trickle of checkouts by one thread keeps the pool in use (an unused pool
    is disposed of altogether after IDLE_TIMEOUT) and its connection
    remembered: that one counts towards MIN_IDLE, so exactly two close.
    """
    site.configure(POOL_SIZE=3, MAX_OVERFLOW=0, IDLE_TIMEOUT=1, MIN_IDLE=1)
    borrowers = [site.borrower(name) for name in "abc"]
    # All three hold a connection at the same time, then return it.
    pids = {borrower.call(backend_pid) for borrower in borrowers}
    assert len(pids) == 3
    assert site.sessions() == 3
    for borrower in borrowers:
        borrower.call(give_back)
    returned = time.monotonic()
    pool = site.pool()
    assert len(pool.remembered) == 3
    assert (pool.status().idle, pool.status().checked_out) == (3, 0)

    trickle = borrowers[0]
    samples: list[tuple[float, int]] = []
    reached_at: float | None = None
    while True:
        at = time.monotonic() - returned
        samples.append((at, site.sessions()))
        if samples[-1][1] == 1 and reached_at is None:
            reached_at = at
        # Watch a few more housekeeping passes (every 0.25 s) once at MIN_IDLE.
        if (reached_at is not None and at > reached_at + 0.75) or at > 6.0:
            break
        trickle.call(cycle)
        time.sleep(0.1)
    assert reached_at is not None, f"never down to MIN_IDLE: {samples}"
    assert min(count for _, count in samples) == 1, samples
    assert samples[-1][1] == 1, samples
    # Not before IDLE_TIMEOUT.
    assert all(count == 3 for at, count in samples if at < 0.8), samples
    status = pool.status()
    assert (status.idle, status.checked_out, status.size) == (1, 0, 1)
    assert status.connections_idle_closed == 2


def test_a_thread_that_ends_gives_its_remembered_connection_back(site: Site) -> None:
    site.configure(POOL_SIZE=2)
    ending = site.borrower("ending")
    pid = ending.call(cycle)
    pool = site.pool()
    assert len(pool.remembered) == 1
    ending.stop()  # the thread ends; its wrapper is garbage now
    gc.collect()
    assert len(pool.remembered) == 0
    status = pool.status()
    assert (status.idle, status.checked_out) == (1, 0)
    assert site.borrower("next").call(cycle) == pid
    assert site.sessions() == 1


def test_status_counts_a_remembered_connection_as_idle(site: Site) -> None:
    site.configure(POOL_SIZE=2)
    a = site.borrower("a")
    a.call(backend_pid)
    pool = site.pool()
    status = pool.status()
    assert (status.idle, status.checked_out, status.size) == (0, 1, 1)
    a.call(give_back)
    assert len(pool.remembered) == 1
    status = pool.status()
    assert (status.idle, status.checked_out, status.size) == (1, 0, 1)


def test_status_does_not_count_a_connection_discarded_as_broken(site: Site) -> None:
    """A connection killed on the server while checked out is discarded at its return.

    SQLAlchemy keeps its record in the queue, empty until a checkout connects
    it again; status() must say what the server sees: no session, none idle.
    """
    site.configure(POOL_SIZE=3, MAX_OVERFLOW=0)
    a = site.borrower("a")
    pid = a.call(backend_pid)
    site.admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert site.until(lambda: not site.alive(pid))
    with pytest.raises(OperationalError):  # the statement finds its session gone
        a.call(backend_pid)
    a.call(give_back)
    pool = site.pool()
    status = pool.status()
    assert site.sessions() == 0
    assert (status.size, status.idle, status.checked_out) == (0, 0, 0)
    assert status.connections_opened - status.connections_closed == 0
    # The next checkout connects the record again: one session, one counted.
    new_pid = a.call(cycle)
    assert new_pid != pid and site.sessions() == 1
    assert (pool.status().size, pool.status().idle) == (1, 1)


def test_a_commit_on_return_refused_by_the_server_retires_that_connection_alone(
    site: Site,
) -> None:
    """RESET_ON_RETURN "commit" whose COMMIT fails on a deferred constraint.

    The server answered: that connection is closed (its transaction is gone
    anyway), but its siblings are healthy and keep their sessions. They were
    all retired with it, as after a dead server.
    """
    site.configure(POOL_SIZE=3, MAX_OVERFLOW=0, RESET_ON_RETURN="commit")
    a, b, c = site.borrower("a"), site.borrower("b"), site.borrower("c")

    def make_tables(wrapper: Any) -> None:
        with wrapper.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE parent (id int PRIMARY KEY);"
                "CREATE TABLE child (parent_id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)"
            )

    a.call(make_tables)
    pids = [borrower.call(backend_pid) for borrower in (a, b, c)]  # three sessions
    for borrower in (a, b, c):
        borrower.call(give_back)
    assert len(set(pids)) == 3 and site.sessions() == 3

    def insert_an_orphan_and_return(wrapper: Any) -> None:
        wrapper.set_autocommit(False)
        with wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO child VALUES (42)")  # fails at COMMIT
        wrapper.close()  # the pool's COMMIT on return fails with ForeignKeyViolation

    a.call(insert_an_orphan_and_return)
    assert site.until(lambda: not site.alive(pids[0]))
    # The siblings' sessions live on, and their borrowers take them back.
    assert (b.call(cycle), c.call(cycle)) == (pids[1], pids[2])
    assert a.call(cycle) not in pids
    status = site.pool().status()
    assert (status.connections_invalidated, status.connections_opened) == (1, 4)
    assert site.sessions() == 3

    def orphans(wrapper: Any) -> int:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM child")
            count: int = cursor.fetchone()[0]
        wrapper.close()
        return count

    assert b.call(orphans) == 0  # nothing committed


def test_dispose_closes_a_remembered_connection(site: Site) -> None:
    site.configure(POOL_SIZE=2)
    a = site.borrower("a")
    a.call(cycle)
    pool = site.pool()
    assert len(pool.remembered) == 1
    assert site.sessions() == 1
    assert registry.dispose(site.alias) == 1
    assert site.until(lambda: site.sessions() == 0), "the remembered session stayed open"
    assert len(pool.remembered) == 0
    assert pool.status().connections_closed == 1


def _wait_for_child(child: int, timeout: float) -> int:
    """Return a child's exit status; kill it when it runs past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise AssertionError(f"the forked child ran longer than {timeout} s")
        time.sleep(0.02)


def test_fork_neither_takes_nor_closes_the_parents_remembered_connection(site: Site) -> None:
    """The child inherits the wrapper the parent's pool remembers a connection for.

    Had the child used the parent's pool, that wrapper's checkout would have
    popped the parent's session off the fast path; the child gets its own.
    """
    site.configure(POOL_SIZE=2)
    inherited = site.wrapper()  # this (the forking) thread's wrapper
    try:
        parent_pid = cycle(inherited)
        pool = site.pool()
        assert len(pool.remembered) == 1
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # the child: report through the pipe, never return into pytest
            code = 1
            try:
                os.close(read_end)
                try:
                    own = site.wrapper()
                    facts: dict[str, Any] = {
                        "inherited": backend_pid(inherited),
                        "own": backend_pid(own),
                    }
                    inherited.close()
                    own.close()
                    code = 0
                except BaseException as exc:
                    facts = {"error": repr(exc)}
                os.write(write_end, json.dumps(facts).encode())
            finally:
                os._exit(code)
        os.close(write_end)
        status = _wait_for_child(child, STEP)
        with os.fdopen(read_end, "rb") as pipe:
            facts = json.loads(pipe.read() or b"{}")
        assert os.waitstatus_to_exitcode(status) == 0, facts
        assert parent_pid not in (facts["inherited"], facts["own"]), facts
        assert site.alive(parent_pid)
        assert len(pool.remembered) == 1
        assert backend_pid(inherited) == parent_pid  # the parent's, still remembered
        with inherited.cursor() as cursor:
            cursor.execute("SELECT 40 + 2")
            assert cursor.fetchone()[0] == 42
        assert (pool.status().connections_opened, pool.status().connections_invalidated) == (1, 0)
    finally:
        inherited.close()


def test_many_threads_stay_within_pool_size(site: Site) -> None:
    threads, rounds, pool_size = 16, 50, 4
    site.configure(POOL_SIZE=pool_size, MAX_OVERFLOW=0, TIMEOUT=10)
    errors: list[BaseException] = []
    done: list[str] = []
    start = threading.Barrier(threads, timeout=STEP)

    def work() -> None:
        try:
            wrapper = site.wrapper()
            start.wait()
            for _ in range(rounds):
                cycle(wrapper)
            done.append(threading.current_thread().name)
        except BaseException as exc:
            errors.append(exc)

    workers = [
        threading.Thread(target=work, name=f"{site.alias}-w{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    samples: list[int] = []
    deadline = time.monotonic() + 30
    while any(worker.is_alive() for worker in workers) and time.monotonic() < deadline:
        samples.append(site.sessions())
        time.sleep(0.01)
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    assert not any(worker.is_alive() for worker in workers), "a thread did not finish"
    assert errors == []
    assert len(done) == threads
    assert samples and max(samples) <= pool_size, samples
    status = site.pool().status()
    assert status.timeouts == 0
    assert status.checkouts == threads * rounds
    assert status.size <= pool_size
    assert site.sessions() <= pool_size


def test_waiters_are_served_while_connections_change_hands_fast(site: Site) -> None:
    """No checkout times out while the connections are busy but change hands all the time.

    32 threads loop on 4 connections with nothing in between, for longer than
    TIMEOUT: some checkouts wait in SQLAlchemy's queue. A returning thread
    then lets the waiter run (``ManagedPool.checkin``); without that, the
    returning thread's next checkout took the connection back from the queue
    first, and waiters got PoolExhausted after TIMEOUT (27 or 28 of these
    12,800 checkouts, while connections changed hands ~9,000 times a second).
    """
    threads, rounds, pool_size, timeout = 32, 400, 4, 0.5
    site.configure(POOL_SIZE=pool_size, MAX_OVERFLOW=0, TIMEOUT=timeout)
    errors: list[BaseException] = []
    start = threading.Barrier(threads, timeout=STEP)

    def work() -> None:
        wrapper = site.wrapper()
        try:
            start.wait()
            for _ in range(rounds):
                try:
                    cycle(wrapper)
                except Exception as exc:  # PoolExhausted: counted, and the loop goes on
                    errors.append(exc)
                    wrapper.close()
        finally:
            wrapper.close()

    began = time.monotonic()
    workers = [
        threading.Thread(target=work, name=f"{site.alias}-f{i}", daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(0.0, began + 60 - time.monotonic()))
    elapsed = time.monotonic() - began
    assert not any(worker.is_alive() for worker in workers), "a thread did not finish"
    status = site.pool().status()
    print(
        f"\nFAULT-REPORT fairness: {threads} threads x {rounds} cycles on {pool_size} "
        f"connections in {elapsed:.2f} s; {status.checkout_waits} waits, longest "
        f"{status.wait_ms_max:.0f} ms (TIMEOUT {timeout} s); {len(errors)} failed"
    )
    assert elapsed > timeout, "too short to tell: no wait could have reached TIMEOUT"
    assert status.checkout_waits > 0, "no checkout waited: nothing was tested"
    assert [type(e).__name__ for e in errors] == []
    assert status.timeouts == 0
    assert status.wait_ms_max < timeout * 1000
    assert status.checkouts == threads * rounds
    assert status.connections_opened <= pool_size
    assert site.sessions() <= pool_size
