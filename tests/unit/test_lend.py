"""lend.py's bookkeeping on a pooled SQLite file, no server: when a connection goes back.

The guarantees users rely on are proven against the real servers in
tests/integration/test_lend.py; these pin the rules themselves: what is
installed per wrapper (nothing with LEND "request"), which events return the
connection, and that a cursor of an earlier checkout no longer counts.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path
from typing import Any

import django
import pytest
from django.db import connections, transaction
from django.db.backends.signals import connection_created

from django_sapool import lend
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper

from .pools import sqlite_settings

pytestmark = pytest.mark.usefixtures("clean_registry")


def wrapper(tmp_path: Path, mode: str = "transaction") -> Any:
    return SqliteWrapper(sqlite_settings(tmp_path, LEND=mode, POOL_SIZE=2), "default")


def checked_out(db: Any) -> int:
    return int(db.sapool_pool().status().checked_out)


def test_lend_request_installs_nothing(tmp_path: Path) -> None:
    db = wrapper(tmp_path, "request")
    assert lend.lent(db) is None
    assert not set(lend.SHADOWED) & set(vars(db))
    with db.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert type(cursor) is not lend._counted(type(cursor))
    assert db.connection is not None  # held until the request ends
    db.close()


def garbage_of_a_dropped_wrapper(tmp_path: Path, mode: str) -> int:
    """Count what only the cyclic garbage collector frees of a wrapper used, closed and dropped.

    As Django 6's test_release_memory_without_garbage_collection does, less
    Django's own cycles: the wrapper's helpers (ops, features...) and its error
    wrapper refer back to it; Django 6 breaks those cycles in their __del__,
    4.2 and 5.2 leave them, so they are broken here as Django 6 would.
    """
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        # An alias of its own: a pool replaced by another mode's is garbage too.
        db = SqliteWrapper(sqlite_settings(tmp_path, LEND=mode), f"lend_{mode}")
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
        db.close()
        if django.VERSION < (6, 0):
            for helper in (db.client, db.creation, db.features, db.introspection, db.ops):
                vars(helper).pop("connection", None)
            vars(db.validation).pop("connection", None)
            vars(db).pop("wrap_database_errors", None)
        del db, cursor
        gc.collect()
        return len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_lend_transaction_makes_no_reference_cycle(tmp_path: Path) -> None:
    # Django 6 breaks the reference cycles of a dropped wrapper (a thread's, a
    # copy()) when it is collected, and tests that nothing is left for
    # gc.garbage: LEND must not add a cycle of its own.
    assert garbage_of_a_dropped_wrapper(tmp_path, "request") == 0
    assert garbage_of_a_dropped_wrapper(tmp_path, "transaction") == 0


def test_a_statement_returns_the_connection_when_its_cursor_closes(tmp_path: Path) -> None:
    db = wrapper(tmp_path)
    assert set(lend.SHADOWED) <= set(vars(db))
    with db.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert checked_out(db) == 1
        assert lend.lent(db).cursors == 1  # type: ignore[union-attr]
    assert db.connection is None
    assert checked_out(db) == 0
    cursor.close()  # a second close counts nothing
    assert lend.lent(db).cursors == 0  # type: ignore[union-attr]


def test_the_last_of_two_cursors_returns_it(tmp_path: Path) -> None:
    db = wrapper(tmp_path)
    first, second = db.cursor(), db.cursor()
    first.close()
    assert db.connection is not None
    second.close()
    assert db.connection is None


def test_a_collected_cursor_returns_it(tmp_path: Path) -> None:
    db = wrapper(tmp_path)
    cursor = db.cursor()
    cursor.execute("SELECT 1")
    del cursor
    gc.collect()
    assert db.connection is None
    assert checked_out(db) == 0


def test_manual_transactions_hold_it_until_autocommit_is_back(tmp_path: Path) -> None:
    db = wrapper(tmp_path)
    db.set_autocommit(False)
    with db.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x int)")
    assert db.connection is not None
    db.commit()
    assert db.connection is not None
    db.set_autocommit(True)
    assert db.connection is None
    assert checked_out(db) == 0


def test_atomic_holds_it_until_the_outermost_block_ends(tmp_path: Path, extra_alias: Any) -> None:
    extra_alias("lent", **sqlite_settings(tmp_path, LEND="transaction"))
    db = connections["lent"]
    with transaction.atomic(using="lent"):
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
        with transaction.atomic(using="lent"):
            with db.cursor() as cursor:
                cursor.execute("SELECT 2")
        assert db.connection is not None  # a savepoint's end is not the block's
    assert db.connection is None
    assert checked_out(db) == 0


def test_disabled_constraint_checks_keep_the_connection_until_enabled(tmp_path: Path) -> None:
    """SQLite's schema editor: PRAGMA foreign_keys = OFF, atomic(), then ON again.

    Between the three, the connection went back to the pool: under load
    another thread's connection (checks on) ran the table rebuild, and migrate
    failed "FOREIGN KEY constraint failed"; the one with the checks off went
    to whoever came next. It is now kept until the checks are enabled.
    """
    import threading

    db = SqliteWrapper(sqlite_settings(tmp_path, LEND="transaction", POOL_SIZE=2), "default")

    def checks(wrapper: Any) -> int:
        with wrapper.cursor() as cursor:
            return int(cursor.execute("PRAGMA foreign_keys").fetchone()[0])

    assert db.disable_constraint_checking() is True
    assert db.connection is not None and checked_out(db) == 1  # kept
    seen: list[int] = []

    def another_thread() -> None:
        other = SqliteWrapper(db.settings_dict, "default")  # a thread's own wrapper
        seen.append(checks(other))
        other.close()

    thread = threading.Thread(target=another_thread)
    thread.start()
    thread.join(10)
    assert seen == [1]  # another thread never gets the session with the checks off
    assert checks(db) == 0 and db.connection is not None  # statements in between: kept
    db.enable_constraint_checking()
    assert db.connection is None and checked_out(db) == 0  # returned once enabled
    assert checks(db) == 1


def test_an_on_commit_callback_that_raises_returns_it_all_the_same(
    tmp_path: Path, extra_alias: Any
) -> None:
    # Django runs the callbacks inside set_autocommit(True), at the block's end.
    extra_alias("lent", **sqlite_settings(tmp_path, LEND="transaction"))
    db = connections["lent"]
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic(using="lent"):
            with db.cursor() as cursor:
                cursor.execute("SELECT 1")
            transaction.on_commit(lambda: 1 / 0, using="lent")
    assert db.connection is None
    assert checked_out(db) == 0


def test_a_failed_connect_returns_it_and_the_next_statement_connects_again(
    tmp_path: Path,
) -> None:
    db = wrapper(tmp_path)
    calls: list[int] = []

    def receiver(connection: Any, **kwargs: Any) -> None:
        if connection is db:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a receiver failed")

    connection_created.connect(receiver)
    try:
        with pytest.raises(RuntimeError, match="a receiver failed"):
            db.cursor()
        assert db.connection is None
        assert checked_out(db) == 0
        state = lend.lent(db)
        assert state is not None and (state.settled, state.busy) == (True, 0)
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert len(calls) == 2  # connected again: the receiver ran again
        assert db.connection is None  # and lent per statement as before
        assert checked_out(db) == 0
    finally:
        connection_created.disconnect(receiver)


def test_a_cursor_of_an_earlier_checkout_no_longer_counts(tmp_path: Path) -> None:
    db = wrapper(tmp_path)
    stale = db.cursor()
    db.close()  # the request's end: returned with the cursor open
    with db.cursor() as cursor:
        cursor.execute("SELECT 1")
        stale.close()  # counts nothing: this checkout's cursor is still open
        assert db.connection is not None
    assert db.connection is None


def test_a_change_of_lend_applies_from_the_next_checkout(tmp_path: Path) -> None:
    db = wrapper(tmp_path, "request")
    db.settings_dict["POOL_OPTIONS"] = {"LEND": "transaction", "POOL_SIZE": 3}
    with db.cursor() as cursor:  # this checkout notices the change
        cursor.execute("SELECT 1")
    assert lend.lent(db) is not None
    assert db.connection is not None  # found mid-connect: held as before
    db.close()
    with db.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert db.connection is None  # lent per transaction from then on
    db.settings_dict["POOL_OPTIONS"] = {"LEND": "request", "POOL_SIZE": 3}
    with db.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert lend.lent(db) is None
    assert not set(lend.SHADOWED) & set(vars(db))
    db.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SET search_path = app",
        "  set statement_timeout = 0",
        "LISTEN jobs",
        "CREATE TEMP TABLE t (x int)",
        "create temporary table t (x int)",
        "SELECT pg_advisory_lock(1)",
        "SELECT GET_LOCK('x', 0)",
        "PREPARE q AS SELECT 1",
        # On MySQL these change the session (SET TRANSACTION: its next transaction).
        "SET LOCAL statement_timeout = 0",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET search_path = constraints",
    ],
)
def test_session_state_statements_are_recognised(sql: str) -> None:
    assert lend.SESSION_STATEMENT.search(sql)
    assert lend.sets_session_state(sql) and lend.sets_session_state(sql)  # then remembered


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "UPDATE settings SET value = 1",
        "SELECT pg_advisory_xact_lock(1)",
        "INSERT INTO t (name) VALUES ('SET x')",
        # Transaction-scoped; Django's schema editor sends it outside atomic().
        "SET CONSTRAINTS ALL IMMEDIATE",
        'SET CONSTRAINTS "t_fk" IMMEDIATE; ALTER TABLE "t" DROP CONSTRAINT "t_fk"',
        "  set constraints all deferred",
    ],
)
def test_ordinary_statements_are_not(sql: str) -> None:
    assert not lend.SESSION_STATEMENT.search(sql)
    assert not lend.sets_session_state(sql) and not lend.sets_session_state(sql)


def test_the_answers_remembered_stay_bounded() -> None:
    for n in range(lend._SEEN_LIMIT * 2 + 1):
        assert not lend.sets_session_state(f"SELECT {n}")
    assert 0 < len(lend._SEEN) <= lend._SEEN_LIMIT
    assert lend.sets_session_state("SET search_path = app")


def test_a_session_statement_outside_atomic_warns_where_it_runs(tmp_path: Path) -> None:
    db = wrapper(tmp_path)
    with pytest.warns(lend.LendWarning, match="outside atomic\\(\\) on alias 'default'") as info:
        with db.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE t (x int)")
    assert info[0].filename == __file__
    db.set_autocommit(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lend.LendWarning)
        with db.cursor() as cursor:  # inside a transaction: no warning
            cursor.execute("CREATE TEMP TABLE u (x int)")
    db.rollback()
    db.set_autocommit(True)


def test_an_in_memory_sqlite_database_is_never_lent(tmp_path: Path) -> None:
    """Not pooled (one database per connection): returning it would lose the database."""
    settings_dict = sqlite_settings(tmp_path, LEND="transaction")
    settings_dict["NAME"] = ":memory:"
    db = SqliteWrapper(settings_dict, "default")
    with db.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (x int)")
    assert db.connection is not None
    with db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kept")
        assert cursor.fetchone()[0] == 0
    db.close()


def test_a_cursor_closed_in_another_thread_leaves_the_count_alone(tmp_path: Path) -> None:
    """Django refuses to close another thread's connection; the request's end returns it."""
    import threading

    db = wrapper(tmp_path)
    cursor = db.cursor()
    cursor.execute("SELECT 1")
    errors: list[BaseException] = []

    def close_elsewhere() -> None:
        try:
            cursor.close()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=close_elsewhere)
    thread.start()
    thread.join(5)
    assert errors == []
    assert db.connection is not None
    assert lend.lent(db).cursors == 1  # type: ignore[union-attr]
    db.close()  # the request's end
    assert checked_out(db) == 0
    with db.cursor() as again:  # a new checkout, a new count
        again.execute("SELECT 1")
    assert db.connection is None


def test_lend_is_read_from_a_database_url() -> None:
    import django_sapool

    settings_dict = django_sapool.settings_from_url("postgres://app@db/app?lend=transaction")
    assert settings_dict["POOL_OPTIONS"] == {"LEND": "transaction"}


def test_a_late_patch_of_djangos_cursor_execute_sees_every_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mock.patch in a test, an APM agent instrumenting late: the counted cursor
    # class, made at the first statement, called the execute() it saw then.
    from django.db.backends.utils import CursorWrapper

    db = wrapper(tmp_path)
    with db.cursor() as cursor:  # the counted class is made now
        cursor.execute("SELECT 1")
    seen: list[str] = []
    real = CursorWrapper.execute

    def spy(self: Any, sql: str, params: Any = None) -> Any:
        seen.append(sql)
        return real(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", spy)
    with db.cursor() as cursor:
        cursor.execute("SELECT 2")
    assert seen == ["SELECT 2"]
    assert checked_out(db) == 0
