"""A Django process for one LEND scenario; run as ``python -m tests.integration.lend_child``.

test_lend.py passes a JSON config in SAPOOL_LEND_CHILD: the driver, the aliases
(``default`` lends per transaction; some scenarios add ``held``, the same
database with LEND "request"), the database's name and an admin connection to
watch it with. The scenario's facts come back as JSON on a line starting with
``SAPOOL-RESULT``. Each thread uses Django's own per-thread connections and
ends its "request" as Django's handlers do, with ``close_old_connections()``.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

CONFIG = read_config("SAPOOL_LEND_CHILD")
use_driver(CONFIG.get("driver"))

from django.db import (  # noqa: E402
    close_old_connections,
    connection,
    connections,
    models,
    transaction,
)
from django.db.backends.signals import connection_created  # noqa: E402
from django.db.transaction import TransactionManagementError  # noqa: E402

setup_django(DATABASES=CONFIG["databases"])

from django_sapool import PoolExhausted, registry  # noqa: E402
from django_sapool.lend import LendWarning  # noqa: E402
from tests.integration.child_threads import Peak, SharedSession, run_threads  # noqa: E402


class Item(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        app_label = "lend"
        db_table = "lend_item"


# -- plumbing ------------------------------------------------------------------


class Observer(SharedSession):
    """An unpooled session of our own that watches the test database's sessions."""

    def __init__(self) -> None:
        super().__init__(CONFIG["admin_conninfo"], mysql=connection.vendor == "mysql")

    def sessions(self, app_name: str | None = None) -> int:
        """Server sessions connected to the test database (with this application_name)."""
        if self.mysql:
            sql = "SELECT count(*) FROM information_schema.processlist WHERE db = %s"
            return int(self.scalar(sql, [CONFIG["dbname"]]))
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        params = [CONFIG["dbname"]]
        if app_name is not None:
            sql += " AND application_name = %s"
            params.append(app_name)
        return int(self.scalar(sql, params))

    def in_transaction(self) -> int:
        """Our sessions with a transaction open ('idle in transaction', an InnoDB trx)."""
        if self.mysql:
            sql = (
                "SELECT count(*) FROM information_schema.innodb_trx t JOIN "
                "information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.db = %s"
            )
        else:
            sql = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND state LIKE 'idle in transaction%%'"
            )
        return int(self.scalar(sql, [CONFIG["dbname"]]))

    def committed(self, name: str) -> int:
        """Committed rows called ``name``, read from a session outside the pool."""
        table = f"`{CONFIG['dbname']}`.lend_item" if self.mysql else "lend_item"
        if not self.mysql:
            # The admin session is on another database: ask the test database.
            from tests.integration.child_threads import connect

            conn = connect(CONFIG["test_conninfo"], mysql=False)
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT count(*) FROM lend_item WHERE name = %s", [name])
                return int(cursor.fetchone()[0])
            finally:
                conn.close()
        return int(self.scalar(f"SELECT count(*) FROM {table} WHERE name = %s", [name]))


def pool(alias: str = "default") -> Any:
    (found,) = [p for p in registry.pools() if p.alias == alias]
    return found


def checked_out(alias: str = "default") -> int:
    return int(pool(alias).status().checked_out)


def backend_pid(alias: str = "default") -> int:
    """The server session serving this statement."""
    conn = connections[alias]
    sql = "SELECT CONNECTION_ID()" if conn.vendor == "mysql" else "SELECT pg_backend_pid()"
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return int(cursor.fetchone()[0])


def error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Turns:
    """Threads that take turns: ``wait(i)`` blocks until it is thread i's turn; ``next()``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.turn = 0
        self.cond = threading.Condition()

    def wait(self, i: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.turn % self.n == i, timeout=20)

    def next(self) -> None:
        with self.cond:
            self.turn += 1
            self.cond.notify_all()


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread of its own (a request of its own); return or raise its outcome."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:
            outcome.append((False, exc))
        finally:
            close_old_connections()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


# -- scenarios -----------------------------------------------------------------


def alternate(rounds: int) -> dict[str, Any]:
    """Two threads take turns querying through POOL_SIZE=1; neither holds between turns."""
    observer = Observer()
    turns = Turns(2)
    before = pool().status().checkouts
    seen: list[dict[str, Any]] = []
    errors: list[str] = []
    created: list[int] = []
    connection_created.connect(lambda **kw: created.append(1), weak=False)

    def work(i: int) -> None:
        try:
            for _ in range(rounds):
                turns.wait(i)
                pid = backend_pid()
                with connection.cursor() as cursor:
                    # Django's session setup: TIME_ZONE (PostgreSQL), init_command (MySQL).
                    cursor.execute(
                        "SELECT current_setting('TimeZone')"
                        if connection.vendor == "postgresql"
                        else "SELECT @sapool_init"
                    )
                    session_setup = cursor.fetchone()[0]
                seen.append(
                    {
                        "thread": i,
                        "pid": pid,
                        "session_setup": session_setup,
                        "checked_out": checked_out(),
                        "held": connection.connection is not None,
                        "sessions": observer.sessions(),
                    }
                )
                turns.next()
        except BaseException as exc:
            errors.append(error(exc))
            turns.next()
        finally:
            close_old_connections()

    run_threads(2, work)
    status = pool().status()
    return {
        "seen": seen,
        "errors": errors,
        "connection_created": len(created),
        "checkouts": status.checkouts - before,
        "connections_opened": status.connections_opened,
        "timeouts": status.timeouts,
        "sessions_after": observer.sessions(),
    }


def held_by_request(hold: float) -> dict[str, Any]:
    """The contrast: with LEND 'request' the first thread's connection stays until its end."""
    started = threading.Event()
    done = threading.Event()

    def holder() -> None:
        backend_pid()
        started.set()
        done.wait(hold + 10)

    thread = threading.Thread(target=lambda: (holder(), close_old_connections()))
    thread.start()
    assert started.wait(10)
    begun = time.monotonic()
    try:
        in_thread(backend_pid)
        outcome = "served"
    except PoolExhausted as exc:
        outcome = error(exc)
    waited = time.monotonic() - begun
    done.set()
    thread.join(10)
    return {"outcome": outcome, "waited": waited, "checked_out_after": checked_out()}


def atomic_holds(hold: float) -> dict[str, Any]:
    """Inside atomic() the connection stays checked out; another thread cannot have it."""
    entered = threading.Event()
    leave = threading.Event()
    facts: dict[str, Any] = {}

    def holder() -> None:
        with transaction.atomic():
            Item.objects.create(name="in-atomic")
            facts["pid_in_atomic"] = backend_pid()
            # select_for_update needs atomic(): it works here as with LEND 'request'.
            facts["locked"] = list(
                Item.objects.select_for_update()
                .filter(name="in-atomic")
                .values_list("name", flat=True)
            )
            facts["held_between_statements"] = connection.connection is not None
            entered.set()
            leave.wait(hold + 10)
            facts["checked_out_at_end_of_block"] = checked_out()
        facts["checked_out_after_block"] = checked_out()
        facts["held_after_block"] = connection.connection is not None

    thread = threading.Thread(target=lambda: (holder(), close_old_connections()))
    thread.start()
    assert entered.wait(10)
    facts["checked_out_during"] = checked_out()
    begun = time.monotonic()
    try:
        in_thread(backend_pid)
        facts["other_thread"] = "served"
    except PoolExhausted as exc:
        facts["other_thread"] = error(exc)
    facts["waited"] = time.monotonic() - begun
    leave.set()
    thread.join(10)
    facts["other_after"] = in_thread(backend_pid)
    facts["committed"] = Observer().committed("in-atomic")
    try:
        with transaction.atomic():
            pass
        list(Item.objects.select_for_update().all())
        facts["select_for_update_outside"] = "no error"
    except TransactionManagementError as exc:
        facts["select_for_update_outside"] = error(exc)
    close_old_connections()
    facts["checked_out_end"] = checked_out()
    return facts


class Boom(Exception):
    pass


def rolled_back() -> dict[str, Any]:
    """A rolled-back atomic() commits nothing and leaves no session in a transaction."""
    observer = Observer()
    facts: dict[str, Any] = {}
    try:
        with transaction.atomic():
            Item.objects.create(name="rolled-back")
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO lend_item (name) VALUES ('rolled-back')")
            facts["checked_out_inside"] = checked_out()
            raise Boom
    except Boom:
        pass
    facts["checked_out_after"] = checked_out()
    facts["held_after"] = connection.connection is not None
    facts["in_transaction"] = observer.in_transaction()
    facts["sessions"] = observer.sessions()
    facts["committed"] = observer.committed("rolled-back")
    # A failed statement outside atomic(): rolled back by the server, connection returned.
    Item.objects.create(name="ok")
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO lend_item (id, name) VALUES (%s, 'dup')", [1])
            cursor.execute("INSERT INTO lend_item (id, name) VALUES (%s, 'dup')", [1])
    except Exception as exc:
        facts["duplicate"] = type(exc).__name__
    facts["checked_out_after_error"] = checked_out()
    facts["count_after_error"] = Item.objects.count()
    facts["in_transaction_end"] = observer.in_transaction()
    return facts


def on_commit_raises() -> dict[str, Any]:
    """An on_commit() callback raises: the connection goes back at the block's end all the same."""
    observer = Observer()
    facts: dict[str, Any] = {}

    def callback() -> None:
        raise Boom("on_commit")

    try:
        with transaction.atomic():
            Item.objects.create(name="hooked")
            transaction.on_commit(callback)
    except Boom as exc:
        facts["raised"] = error(exc)
    facts["checked_out_after_block"] = checked_out()
    facts["held_after_block"] = connection.connection is not None
    # The view goes on (an HTTP call...): another request gets the only connection.
    try:
        in_thread(backend_pid)
        facts["other_thread"] = "served"
    except PoolExhausted as exc:
        facts["other_thread"] = error(exc)
    facts["in_transaction"] = observer.in_transaction()
    facts["committed"] = observer.committed("hooked")  # last: its session lingers a moment
    facts["count"] = Item.objects.count()
    facts["checked_out_end"] = checked_out()
    return facts


def connect_fails(rounds: int, receiver: str | None = None) -> dict[str, Any]:
    """Django's connect() fails after the checkout; ``rounds`` statements in a row.

    ``receiver``: "raise", a connection_created receiver raising at its first
    call; "kill", one ending its own server session at its first call
    (PostgreSQL); None, no receiver (the alias's OPTIONS make the session setup fail).
    """
    observer = Observer()
    mysql = connection.vendor == "mysql"
    calls: list[int] = []

    def on_created(connection: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            return
        if receiver == "raise":
            raise Boom("connection_created")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    if receiver is not None:
        connection_created.connect(on_created, weak=False)
    seen: list[dict[str, Any]] = []
    for _ in range(rounds):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT CURRENT_USER()" if mysql else "SELECT current_user")
                outcome = f"user: {cursor.fetchone()[0]}"
        except Exception as exc:
            outcome = error(exc)
        seen.append(
            {
                "outcome": outcome,
                "checked_out": checked_out(),
                "held": connection.connection is not None,
                "receiver_calls": len(calls),
            }
        )
    facts: dict[str, Any] = {"seen": seen}
    try:
        facts["other_thread"] = f"served: {in_thread(backend_pid)}"
    except Exception as exc:
        facts["other_thread"] = error(exc)
    facts["sessions"] = observer.sessions()
    facts["connections_opened"] = pool().status().connections_opened
    facts["checked_out_end"] = checked_out()
    return facts


def isolation(rounds: int) -> dict[str, Any]:
    """Thread A's uncommitted rows are never seen by thread B, which shares its one connection."""
    facts: dict[str, Any] = {"observed": [], "pids": set()}
    a_in_block = threading.Event()
    a_done = threading.Event()

    def a() -> None:
        for _ in range(rounds):
            try:
                with transaction.atomic():
                    Item.objects.create(name="uncommitted")
                    facts["pids"].add(backend_pid())
                    a_in_block.set()
                    time.sleep(0.05)
                    raise Boom
            except Boom:
                pass
            time.sleep(0.01)
        a_done.set()

    def b() -> None:
        assert a_in_block.wait(10)
        while not a_done.is_set():
            facts["observed"].append(Item.objects.filter(name="uncommitted").count())
            facts["pids"].add(backend_pid())

    errors: list[str] = []

    def work(i: int) -> None:
        try:
            (a, b)[i]()
        except BaseException as exc:
            errors.append(error(exc))
            a_done.set()
        finally:
            close_old_connections()

    run_threads(2, work)
    facts["pids"] = sorted(facts["pids"])
    facts["errors"] = errors
    facts["committed"] = Observer().committed("uncommitted")
    facts["checked_out_end"] = checked_out()
    return facts


def open_cursors() -> dict[str, Any]:
    """An open cursor keeps the connection: .iterator(), a raw cursor held, one dropped."""
    Item.objects.bulk_create([Item(name=f"row-{i}") for i in range(10)])
    facts: dict[str, Any] = {"after_bulk_create": checked_out()}
    rows = Item.objects.order_by("id").iterator(chunk_size=2)
    first = next(rows)
    facts["iterator_first"] = first.name
    facts["iterator_open"] = checked_out()
    facts["iterator_pid"] = backend_pid()  # another statement meanwhile: the same session
    facts["iterator_open_after_other"] = checked_out()
    facts["iterator_rest"] = len(list(rows))
    facts["iterator_done"] = checked_out()

    cursor = connection.cursor()
    cursor.execute("SELECT 1")
    facts["raw_open"] = checked_out()
    Item.objects.count()
    facts["raw_open_after_orm"] = checked_out()
    cursor.close()
    facts["raw_closed"] = checked_out()

    def dropped() -> int:
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])

    dropped()  # its cursor is collected when the function returns
    facts["dropped"] = checked_out()

    # An iterator abandoned half-way: its generator closes the cursor when collected.
    rows = Item.objects.order_by("id").iterator(chunk_size=2)
    next(rows)
    facts["abandoned_open"] = checked_out()
    del rows
    gc.collect()
    facts["abandoned"] = checked_out()
    return facts


def raw_transaction() -> dict[str, Any]:
    """A transaction opened by raw SQL, one statement per cursor, then rolled back.

    Django's autocommit stays on: only the driver sees the transaction.
    """
    begin = "START TRANSACTION" if connection.vendor == "mysql" else "BEGIN"
    pids = []
    for sql in (begin, "INSERT INTO lend_item (name) VALUES ('raw-transaction')"):
        with connection.cursor() as cursor:
            cursor.execute(sql)
        pids.append(backend_pid())
    held = checked_out()
    with connection.cursor() as cursor:
        cursor.execute("ROLLBACK")
    return {
        "pids": pids,
        "held_in_transaction": held,
        "checked_out_after": checked_out(),
        "committed": Observer().committed("raw-transaction"),
    }


def collected_inside_the_driver() -> dict[str, Any]:
    """In atomic(), a server-side cursor dropped in a reference cycle; then a statement
    during whose execute() (psycopg 3: the connection's lock held) the cycle collector
    runs, as it may at any allocation: a parameter's dumper calls gc.collect().

    The cursor's finalizer sent its CLOSE from there, waiting for the lock its own
    thread held: the process hung. A child still running after 15 s dumps its
    stacks and exits.
    """
    import faulthandler

    from psycopg.adapt import Dumper

    class CollectHere(int):
        pass

    class CollectingDumper(Dumper):
        def dump(self, obj: Any) -> bytes:
            gc.collect()
            return str(int(obj)).encode()

    faulthandler.dump_traceback_later(15, exit=True)
    Item.objects.bulk_create([Item(name=f"row-{i}") for i in range(5)])
    gc.disable()
    try:
        with transaction.atomic():
            # This connection's adapters: copied from psycopg's when it was opened.
            connection.ensure_connection()
            connection.connection.adapters.register_dumper(CollectHere, CollectingDumper)
            cursor = connection.chunked_cursor()
            cursor.execute("SELECT id FROM lend_item")
            cursor.fetchmany(2)
            cycle: list[Any] = [cursor]
            cycle.append(cycle)
            del cursor, cycle
            with connection.cursor() as other:
                other.execute("SELECT %s::int", [CollectHere(7)])
                result = other.fetchone()[0]
    finally:
        gc.enable()
        faulthandler.cancel_dump_traceback_later()
    close_old_connections()  # the request's end
    return {"result": result, "checked_out_end": checked_out()}


def statements() -> dict[str, Any]:
    """After every ORM statement outside atomic() the pool has nothing checked out."""
    created: list[int] = []
    connection_created.connect(lambda **kw: created.append(1), weak=False)
    connection.force_debug_cursor = True  # connection.queries, as with DEBUG=True
    before = pool().status().checkouts
    facts: dict[str, Any] = {"checked_out": {}}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("create", lambda: Item.objects.create(name="x")),
        ("get", lambda: Item.objects.get(name="x")),
        ("count", lambda: Item.objects.count()),
        ("exists", lambda: Item.objects.filter(name="x").exists()),
        ("list", lambda: list(Item.objects.all())),
        ("values", lambda: list(Item.objects.values_list("name", flat=True))),
        ("update", lambda: Item.objects.filter(name="x").update(name="y")),
        ("save", lambda: Item.objects.get(name="y").save()),
        ("bulk_create", lambda: Item.objects.bulk_create([Item(name="z"), Item(name="z")])),
        ("raw", lambda: list(Item.objects.raw("SELECT id, name FROM lend_item"))),
        ("delete", lambda: Item.objects.filter(name="z").delete()),
        ("get_or_create", lambda: Item.objects.get_or_create(name="w")),
        ("atomic", lambda: transaction.atomic()(lambda: Item.objects.create(name="v"))()),
        ("on_commit_in_atomic", lambda: on_commit_in_atomic(facts)),
    ]
    for name, step in steps:
        step()
        facts["checked_out"][name] = checked_out()
        facts.setdefault("held", {})[name] = connection.connection is not None
    facts["queries"] = len(connection.queries)
    facts["connection_created"] = len(created)
    facts["checkouts"] = pool().status().checkouts - before
    facts["connections_opened"] = pool().status().connections_opened
    return facts


def on_commit_in_atomic(facts: dict[str, Any]) -> None:
    ran: list[int] = []
    with transaction.atomic():
        Item.objects.create(name="hooked")
        transaction.on_commit(lambda: ran.append(Item.objects.filter(name="hooked").count()))
    facts["on_commit_saw"] = ran


def warned() -> dict[str, Any]:
    """Session-state statements outside atomic() warn; inside atomic() they do not."""
    vendor = connection.vendor
    outside = (
        ["SET statement_timeout = 0", "SELECT pg_advisory_lock(42)", "LISTEN lend_channel"]
        if vendor == "postgresql"
        else ["SET @x = 1", "SELECT GET_LOCK('lend', 0)"]
    )
    facts: dict[str, Any] = {"outside": [], "inside": []}
    for sql in outside:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with connection.cursor() as cursor:
                cursor.execute(sql)
        facts["outside"].append([str(w.message) for w in caught if w.category is LendWarning])
    if vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_all()")
            cursor.execute("UNLISTEN *")
        # Transaction-scoped: Django's schema editor sends it outside atomic()
        # (a non-atomic migration that drops a foreign key).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        facts["set_constraints"] = [str(w.message) for w in caught if w.category is LendWarning]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SET LOCAL statement_timeout = 0" if vendor == "postgresql" else "SET @x = 2"
                )
        facts["inside"] = [str(w.message) for w in caught if w.category is LendWarning]
    with warnings.catch_warnings():
        warnings.simplefilter("error", LendWarning)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET @y = 1" if vendor == "mysql" else "SET search_path = public")
            facts["as_error"] = "no error"
        except LendWarning as exc:
            facts["as_error"] = type(exc).__name__
    facts["checked_out_end"] = checked_out()
    return facts


def two_aliases() -> dict[str, Any]:
    """One alias lends per transaction, another (same database) per request."""
    observer = Observer()
    facts: dict[str, Any] = {}
    backend_pid("default")
    backend_pid("held")
    facts["default"] = checked_out("default")
    facts["held"] = checked_out("held")
    facts["sessions"] = observer.sessions()
    close_old_connections()
    facts["held_after_request"] = checked_out("held")
    return facts


def burst(threads: int, sleep: float, alias: str) -> dict[str, Any]:
    """``threads`` requests at once, each: query, sleep, query; how long until all are done."""
    observer = Observer()
    app_name = CONFIG["databases"][alias]["OPTIONS"]["application_name"]
    errors: list[str] = []
    barrier = threading.Barrier(threads + 1, timeout=30)
    lock = threading.Lock()
    sleeping = peak_sleeping = 0  # requests between their two queries, now and at most

    def work(i: int) -> None:
        nonlocal sleeping, peak_sleeping
        try:
            barrier.wait()
            backend_pid(alias)
            with lock:
                sleeping += 1
                peak_sleeping = max(peak_sleeping, sleeping)
            time.sleep(sleep)
            with lock:
                sleeping -= 1
            backend_pid(alias)
        except BaseException as exc:
            errors.append(error(exc))
        finally:
            close_old_connections()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    with Peak(lambda: observer.sessions(app_name)) as peak:
        barrier.wait()
        begun = time.monotonic()
        for worker in workers:
            worker.join(120)
        seconds = time.monotonic() - begun
    status = pool(alias).status()
    return {
        "seconds": seconds,
        "errors": errors,
        "peak_sessions": peak.value,
        "peak_sleeping": peak_sleeping,
        "checked_out": status.checked_out,
        "timeouts": status.timeouts,
        "connections_opened": status.connections_opened,
        "checkouts": status.checkouts,
    }


def bursts(threads: int, sleep: float) -> dict[str, Any]:
    return {alias: burst(threads, sleep, alias) for alias in ("default", "held")}


def round_trips(n: int) -> dict[str, Any]:
    """What the server runs (pg_stat_statements) for n statements and n atomic() blocks."""
    observer = Observer()

    def statements() -> int:
        sql = (
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s"
        )
        return int(observer.scalar(sql, [CONFIG["dbname"]]))

    Item.objects.count()  # the pool's connection is open and set up
    checkouts = pool().status().checkouts
    before = statements()
    for _ in range(n):
        Item.objects.count()
    after_counts = statements()
    for i in range(n):
        with transaction.atomic():
            Item.objects.create(name=f"rt-{i}")
    after_blocks = statements()
    status = pool().status()
    return {
        "counts": after_counts - before,
        "blocks": after_blocks - after_counts,
        "checkouts": status.checkouts - checkouts,
        "connections_opened": status.connections_opened,
        "checked_out": status.checked_out,
    }


def prepared(rounds: int) -> dict[str, Any]:
    """psycopg 3 with OPTIONS["prepare_threshold"] = 0: two threads take turns on one session."""
    turns = Turns(2)
    errors: list[str] = []
    pids: set[int] = set()
    counts: list[int] = []

    def work(i: int) -> None:
        try:
            for _ in range(rounds):
                turns.wait(i)
                counts.append(Item.objects.filter(name="p").count())
                pids.add(backend_pid())
                turns.next()
        except BaseException as exc:
            errors.append(error(exc))
            turns.next()
        finally:
            close_old_connections()

    run_threads(2, work)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        in_session = int(cursor.fetchone()[0])
    return {
        "errors": errors,
        "pids": sorted(pids),
        "counts": counts,
        "prepared_in_session": in_session,
        "checked_out": checked_out(),
    }


def constraint_checks() -> dict[str, Any]:
    """Constraint checks disabled outside atomic() (MySQL: SET foreign_key_checks=0).

    Another thread checks out meanwhile, and again once they are enabled;
    each reports its session's @@foreign_key_checks.
    """

    def checks() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@foreign_key_checks")
            return int(cursor.fetchone()[0])

    facts: dict[str, Any] = {"disabled": connection.disable_constraint_checking()}
    facts["mine_while_disabled"] = checks()
    facts["other_while_disabled"] = in_thread(checks)
    connection.enable_constraint_checking()
    facts["mine_after"] = checks()
    facts["checked_out_after"] = checked_out()
    close_old_connections()
    facts["other_after"] = in_thread(checks)
    return facts


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    f.__name__: f
    for f in (
        alternate,
        held_by_request,
        atomic_holds,
        rolled_back,
        on_commit_raises,
        connect_fails,
        isolation,
        open_cursors,
        raw_transaction,
        collected_inside_the_driver,
        statements,
        warned,
        two_aliases,
        bursts,
        round_trips,
        prepared,
        constraint_checks,
    )
}


def main() -> None:
    if CONFIG["scenario"] != "connect_fails":  # whose session setup may fail
        with connection.schema_editor() as editor:
            editor.create_model(Item)
    close_old_connections()
    facts = SCENARIOS[CONFIG["scenario"]](**CONFIG.get("params", {}))
    facts["driver"] = connection.Database.__name__
    print("SAPOOL-RESULT " + json.dumps(facts, default=str))


if __name__ == "__main__":
    main()
