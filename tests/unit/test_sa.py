"""The SQLAlchemy adapter (django_sapool/_sa.py): the private names it relies on, its verbs."""

from __future__ import annotations

import inspect
import re
import sqlite3
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy.pool import QueuePool
from sqlalchemy.pool.base import _ConnectionRecord

from django_sapool import _sa
from django_sapool._sa import PRIVATE_NAMES, SaPool, Timeout


def make(**overrides: Any) -> SaPool:
    options = {
        "pool_size": 1,
        "max_overflow": 0,
        "timeout": 0.05,
        "use_lifo": True,
        "echo": False,
        "logging_name": "test",
        **overrides,
    }
    return SaPool(lambda: sqlite3.connect(":memory:"), **options)


def _missing(owner: Any, name: str, instance: SaPool) -> bool:
    attribute = name.split("(")[0].split(" ")[0]
    if isinstance(owner, str):  # an instance attribute
        value = getattr(instance, attribute, None)
        if attribute == "_pool":
            return not (hasattr(value, "queue") and hasattr(value, "mutex"))
        return value is None
    if "(" in name:  # a keyword argument of a method
        keyword = name.split("(")[1].split("=")[0]
        return keyword not in inspect.signature(getattr(owner, attribute)).parameters
    return not hasattr(owner, attribute)


def test_the_installed_sqlalchemy_has_every_private_name_the_adapter_uses() -> None:
    instance = make()
    missing = [
        f"{getattr(o, '__name__', o)}.{n}" for o, n in PRIVATE_NAMES if _missing(o, n, instance)
    ]
    assert not missing, (
        f"SQLAlchemy {sqlalchemy.__version__} lacks {', '.join(missing)}, which "
        f"django_sapool/_sa.py (SaPool, the only module that touches SQLAlchemy's "
        f"private names) relies on: adapt SaPool's verbs to this release."
    )


def test_only_the_adapter_names_sqlalchemy_privates() -> None:
    """No other module of the package names one of the private names of PRIVATE_NAMES."""
    from pathlib import Path

    package = Path(_sa.__file__).parent
    # Attributes and methods (after a dot), and two names used bare.
    attributes = {n.split("(")[0].split(" ")[0] for _, n in PRIVATE_NAMES}
    patterns = {
        name: rf"\.{name}\b"
        for name in attributes
        if name.startswith("_") or name == "get_connection"
    }
    patterns |= {name: rf"\b{name}\b" for name in ("_ConnectionRecord", "_fairy_was_created")}
    offenders = [
        f"{path.relative_to(package)}: {name}"
        for path in package.rglob("*.py")
        if path.name != "_sa.py"
        for name, pattern in patterns.items()
        if re.search(pattern, path.read_text())
    ]
    assert offenders == []


def test_take_give_back_and_the_wait_test() -> None:
    pool = make()
    assert (pool.overflow_now(pool), len(pool.idle_records)) == (-1, 0)
    record = pool.take()
    raw = pool.connection(record)
    assert isinstance(raw, sqlite3.Connection)
    # POOL_SIZE 1, MAX_OVERFLOW 0: the overflow reached it, nothing idle: a wait.
    assert (pool.overflow_now(pool), len(pool.idle_records)) == (0, 0)
    with pytest.raises(Timeout):
        pool.take()
    pool.give_back(record)
    assert len(pool.idle_records) == 1
    assert pool.take() is record  # LIFO: the same record, its connection kept
    assert pool.connection(record) is raw


def test_take_idle_removes_the_chosen_records_and_frees_their_slots() -> None:
    pool = make(pool_size=2)
    a, b = pool.take(), pool.take()
    pool.give_back(a)
    pool.give_back(b)
    assert pool.checkedin() == 2
    taken = pool.take_idle(lambda live: live[:1])
    assert len(taken) == 1 and pool.checkedin() == 1
    pool.close_taken(taken[0])
    assert taken[0].dbapi_connection is None
    # The slot is free again: two checkouts at once still work.
    first, second = pool.take(), pool.take()
    assert first is not second


def test_discard_closes_and_retires_older_connections() -> None:
    pool = make(pool_size=2)
    a, b = pool.take(), pool.take()
    raw_b = pool.connection(b)
    pool.give_back(b)
    pool.discard(a, RuntimeError("dead"))
    assert a.dbapi_connection is None
    # b was opened before the invalidation: its next checkout reconnects it.
    again = pool.take()
    assert pool.connection(again) is not raw_b or again is a


def test_retire_all_reconnects_at_next_checkout() -> None:
    pool = make()
    record = pool.take()
    raw = pool.connection(record)
    opened = pool.opened_at(record)
    pool.give_back(record)
    pool.retire_all()
    record = pool.take()
    assert pool.connection(record) is not raw
    assert pool.opened_at(record) >= opened


def test_adapter_is_a_queue_pool_with_sqlalchemys_functions_on_the_hot_path() -> None:
    assert issubclass(SaPool, QueuePool)
    # Not wrappers: SQLAlchemy's own functions, so the hot path pays no extra call.
    assert SaPool.take is QueuePool._do_get
    assert SaPool.connection is _ConnectionRecord.get_connection


def test_echo_logs_under_sqlalchemys_own_logger_name() -> None:
    """ECHO users configure "sqlalchemy.pool" loggers: the subclass must not move them."""
    assert make(logging_name="default").logger.name == "sqlalchemy.pool.impl.QueuePool.default"


def test_hand_over_slot_gives_a_failed_connects_slot_to_the_queue() -> None:
    calls = []

    def creator() -> sqlite3.Connection:
        calls.append(None)
        if len(calls) == 1:
            raise ConnectionError("refused")
        return sqlite3.connect(":memory:")

    pool = SaPool(
        creator,
        pool_size=1,
        max_overflow=0,
        timeout=0.05,
        use_lifo=True,
        echo=False,
        logging_name="test",
    )
    with pytest.raises(ConnectionError):
        pool.take()
    # SQLAlchemy freed the slot; nothing in the queue would wake a waiter.
    assert (pool.overflow_now(pool), len(pool.idle_records)) == (-1, 0)
    pool.hand_over_slot()
    assert (pool.overflow_now(pool), len(pool.idle_records)) == (0, 1)
    record = pool.take()  # the empty record: connected by its checkout
    assert record.dbapi_connection is None
    assert isinstance(pool.connection(record), sqlite3.Connection)
    # At most the pool's size: with the slot taken, there is none to hand over.
    pool.hand_over_slot()
    assert (pool.overflow_now(pool), len(pool.idle_records)) == (0, 0)


def test_a_moved_checkout_waits_only_what_is_left_of_its_timeout() -> None:
    """QueuePool waits ``self._timeout`` (SaPool's): TIMEOUT, or until its thread's moved_waits."""
    import threading
    import time

    pool = make(timeout=5.0)
    held = pool.take()  # the only connection: the next take waits
    _sa.moved_waits[threading.get_ident()] = time.monotonic() + 0.1
    try:
        started = time.monotonic()
        with pytest.raises(Timeout):
            pool.take()
        assert time.monotonic() - started < 1.0  # not the pool's 5 s
    finally:
        del _sa.moved_waits[threading.get_ident()]
    assert pool.timeout() == 5.0  # and SQLAlchemy's own reading is TIMEOUT again
    _sa.give_back(held)
