"""Our lean copies must stay what Django's originals are, minus the dead weight.

``django_sapool.lean.LeanDjangoSteps`` mirrors ``BaseDatabaseWrapper.connect``,
``close`` and ``ensure_connection`` (with ``async_unsafe``), identical from Django
4.2 to 6.1. If a Django release changes one, its test fails and says so, instead
of the pool silently skipping a new step.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path
from typing import Any

import django
import pytest
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper
from django_sapool.lean import ASYNC_UNSAFE

#: The statements of Django's BaseDatabaseWrapper.connect(), as ast.unparse() prints them.
DJANGO_CONNECT = [
    "self.check_settings()",
    "self.in_atomic_block = False",
    "self.savepoint_ids = []",
    "self.atomic_blocks = []",
    "self.needs_rollback = False",
    "self.health_check_enabled = self.settings_dict['CONN_HEALTH_CHECKS']",
    "max_age = self.settings_dict['CONN_MAX_AGE']",
    "self.close_at = None if max_age is None else time.monotonic() + max_age",
    "self.closed_in_transaction = False",
    "self.errors_occurred = False",
    "self.health_check_done = True",
    "conn_params = self.get_connection_params()",
    "self.connection = self.get_new_connection(conn_params)",
    "self.set_autocommit(self.settings_dict['AUTOCOMMIT'])",
    "self.init_connection_state()",
    "connection_created.send(sender=self.__class__, connection=self)",
    "self.run_on_commit = []",
]


#: The statements of Django's BaseDatabaseWrapper.close(), which our
#: close_if_unusable_or_obsolete() repeats for a pooled connection.
DJANGO_CLOSE = [
    "self.validate_thread_sharing()",
    "self.run_on_commit = []",
    "if self.closed_in_transaction or self.connection is None:\n    return",
    "try:\n    self._close()\nfinally:\n    if self.in_atomic_block:\n"
    "        self.closed_in_transaction = True\n        self.needs_rollback = True\n"
    "    else:\n        self.connection = None",
]


#: The statements of Django's BaseDatabaseWrapper.ensure_connection(), under
#: its async_unsafe decorator; our ensure_connection() repeats both.
DJANGO_ENSURE_CONNECTION = [
    "if self.connection is None:\n"
    "    if self.in_atomic_block and self.closed_in_transaction:\n"
    "        raise ProgrammingError('Cannot open a new connection in an atomic block.')\n"
    "    with self.wrap_database_errors:\n"
    "        self.connect()",
]
#: Django 4.2's (before the check for a broken atomic block).
DJANGO_42_ENSURE_CONNECTION = [
    "if self.connection is None:\n    with self.wrap_database_errors:\n        self.connect()",
]
DJANGO_ASYNC_UNSAFE = [
    "try:\n    get_running_loop()\nexcept RuntimeError:\n    pass\nelse:\n"
    "    if not os.environ.get('DJANGO_ALLOW_ASYNC_UNSAFE'):\n"
    "        raise SynchronousOnlyOperation(message)",
    "return func(*args, **kwargs)",
]


def _statements(function: Any) -> list[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return [ast.unparse(node) for node in body]


def test_django_connect_is_the_one_our_connect_mirrors() -> None:
    assert _statements(BaseDatabaseWrapper.connect) == DJANGO_CONNECT, (
        "Django's BaseDatabaseWrapper.connect() changed: bring "
        "django_sapool.lean.LeanDjangoSteps.connect() in line, then this list."
    )


def test_django_close_is_the_one_we_repeat() -> None:
    assert _statements(BaseDatabaseWrapper.close) == DJANGO_CLOSE, (
        "Django's BaseDatabaseWrapper.close() changed: bring "
        "django_sapool.lean.LeanDjangoSteps.close_if_unusable_or_obsolete() in line, "
        "then this list."
    )


def test_django_ensure_connection_is_the_one_we_repeat() -> None:
    from django.utils.asyncio import async_unsafe

    refuses = django.VERSION >= (5, 0)  # ours refuses on 4.2 too: see the test below
    expected = DJANGO_ENSURE_CONNECTION if refuses else DJANGO_42_ENSURE_CONNECTION
    assert _statements(BaseDatabaseWrapper.ensure_connection.__wrapped__) == expected, (
        "Django's BaseDatabaseWrapper.ensure_connection() changed: bring "
        "django_sapool.lean.LeanDjangoSteps.ensure_connection() in line, then this list."
    )
    tree = ast.parse(textwrap.dedent(inspect.getsource(async_unsafe)))
    (inner,) = (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "inner")
    body = [ast.unparse(node) for node in inner.body]
    assert body == DJANGO_ASYNC_UNSAFE, (
        "django.utils.asyncio.async_unsafe changed: bring "
        "django_sapool.lean.LeanDjangoSteps.ensure_connection() in line, then this list."
    )
    messages = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert ASYNC_UNSAFE in messages, (
        "async_unsafe's message changed: update django_sapool.lean.ASYNC_UNSAFE"
    )


def test_ensure_connection_refuses_an_async_context(tmp_path: Path) -> None:
    """As Django's: no query from inside a running event loop, unless allowed."""
    import asyncio

    from django.core.exceptions import SynchronousOnlyOperation

    wrapper = _wrapper(tmp_path)

    async def from_a_coroutine() -> None:
        wrapper.ensure_connection()

    with pytest.raises(SynchronousOnlyOperation, match="async context"):
        asyncio.run(from_a_coroutine())
    assert wrapper.connection is None
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        asyncio.run(from_a_coroutine())
    assert wrapper.connection is not None
    wrapper.close()


def test_ensure_connection_in_a_broken_atomic_is_refused(tmp_path: Path) -> None:
    """As Django >= 5.0's, on Django 4.2 too: no new connection in the atomic block."""
    from django.db import ProgrammingError

    wrapper = _wrapper(tmp_path)
    wrapper.ensure_connection()
    wrapper.in_atomic_block = True
    wrapper.close()  # inside atomic(): marked closed_in_transaction
    with pytest.raises(ProgrammingError, match="atomic block"):
        wrapper.ensure_connection()
    assert wrapper.connection is None
    wrapper.in_atomic_block = False
    wrapper.ensure_connection()
    wrapper.close()


def test_a_connection_closed_inside_atomic_is_returned_and_marked(tmp_path: Path) -> None:
    """As Django's close(): inside atomic() the wrapper is marked, the connection goes back."""
    wrapper = _wrapper(tmp_path)
    wrapper.ensure_connection()
    wrapper.set_autocommit(False)
    wrapper.in_atomic_block = True
    wrapper.close_if_unusable_or_obsolete()
    assert (wrapper.closed_in_transaction, wrapper.needs_rollback) == (True, True)
    assert wrapper._sapool_record is None
    assert wrapper.sapool_pool().status().checked_out == 0
    wrapper.in_atomic_block = False
    wrapper.connection = None


def _wrapper(tmp_path: Path, **pool_options: Any) -> Any:
    settings_dict = {
        "ENGINE": "django_sapool.backends.sqlite3",
        "NAME": str(tmp_path / "hot.sqlite3"),
        "ATOMIC_REQUESTS": False,
        "AUTOCOMMIT": True,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": {},
        "TIME_ZONE": None,
        "USER": "",
        "PASSWORD": "",
        "HOST": "",
        "PORT": "",
        "TEST": {},
        "POOL_OPTIONS": pool_options,
    }
    return SqliteWrapper(settings_dict, "default")


def _state(wrapper: Any) -> dict[str, Any]:
    names = (
        "in_atomic_block",
        "savepoint_ids",
        "atomic_blocks",
        "needs_rollback",
        "health_check_enabled",
        "closed_in_transaction",
        "errors_occurred",
        "health_check_done",
        "autocommit",
        "run_on_commit",
    )
    return {name: getattr(wrapper, name) for name in names}


def test_a_reused_connection_leaves_the_state_django_connect_leaves(tmp_path: Path) -> None:
    wrapper = _wrapper(tmp_path)
    wrapper.ensure_connection()
    fresh = _state(wrapper)
    wrapper.close()
    # Leave state behind the way a failed request does, then reconnect.
    wrapper.needs_rollback = wrapper.errors_occurred = True
    wrapper.savepoint_ids = ["s1"]
    wrapper.ensure_connection()
    assert wrapper._sapool_record is not None
    assert (
        _state(wrapper)
        == fresh
        == {
            "in_atomic_block": False,
            "savepoint_ids": [],
            "atomic_blocks": [],
            "needs_rollback": False,
            "health_check_enabled": False,
            "closed_in_transaction": False,
            "errors_occurred": False,
            "health_check_done": True,
            "autocommit": True,
            "run_on_commit": [],
        }
    )
    wrapper.close()


def test_connect_params_are_worked_out_once_per_wrapper_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = SqliteWrapper.get_connection_params

    def counting(self: Any) -> Any:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(SqliteWrapper, "get_connection_params", counting)
    wrapper, other = _wrapper(tmp_path), _wrapper(tmp_path)
    has_mode = hasattr(SqliteWrapper, "transaction_modes")  # Django >= 5.1
    if has_mode:
        for w in (wrapper, other):
            w.settings_dict["OPTIONS"] = {"transaction_mode": "IMMEDIATE"}
    for _ in range(5):
        wrapper.ensure_connection()
        wrapper.close()
    assert len(calls) == 1
    # A second wrapper (another thread) reuses the same server connection, and
    # still works its parameters out once: Django sets attributes on the way
    # (SQLite's transaction_mode, MySQL's isolation_level) that it needs.
    other.ensure_connection()
    if has_mode:
        assert other.transaction_mode == "IMMEDIATE"
    with other.cursor() as cursor:  # atomic() would BEGIN IMMEDIATE with it
        cursor.execute("SELECT 1")
    other.close()
    assert len(calls) == 2
    assert wrapper.sapool_pool().status().connections_opened == 1


def test_connection_created_is_sent_at_every_checkout(tmp_path: Path) -> None:
    """As with Django's own pool: receivers see every checkout, not only new sessions."""
    seen: list[Any] = []

    def receiver(sender: Any, connection: Any, **kwargs: Any) -> None:
        seen.append(connection.connection)

    connection_created.connect(receiver)
    try:
        wrapper = _wrapper(tmp_path)
        for _ in range(3):
            wrapper.ensure_connection()
            wrapper.close()
    finally:
        connection_created.disconnect(receiver)
    assert len(seen) == 3 and len({id(c) for c in seen}) == 1


def test_a_connection_left_out_of_autocommit_is_switched_back(tmp_path: Path) -> None:
    wrapper = _wrapper(tmp_path)
    wrapper.ensure_connection()
    wrapper.set_autocommit(False)
    raw = wrapper.connection
    wrapper.close()
    wrapper.ensure_connection()
    assert wrapper.connection is raw
    assert wrapper.get_autocommit() is True
    assert raw.isolation_level is None  # the driver really is in autocommit mode
    wrapper.close()
