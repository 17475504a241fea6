"""System checks for ``DATABASES``: what would fail at startup, and what looks risky.

They read ``settings.DATABASES`` directly (django_sapool.aliases, as
``manage.py sapool`` does) and never build a connection object: the backend
refuses bad ``POOL_OPTIONS`` with ImproperlyConfigured when its wrapper is
created, which would crash ``manage.py check`` instead of reporting.

| id | level | when |
|---|---|---|
| sapool.E001 | error | ``CONN_MAX_AGE`` is not 0 on a django_sapool alias |
| sapool.E002 | error | ``OPTIONS["pool"]`` (Django's own pool) is set on a django_sapool alias |
| sapool.E003 | error | ``POOL_OPTIONS``: a bad key, value or ``BACKEND``; what the backend lacks |
| sapool.W001 | warning | in-memory SQLite on a django_sapool alias (never pooled) |
| sapool.W002 | warning | ``MAX_OVERFLOW`` -1 (no limit), ``POOL_SIZE`` > 100, or ``TIMEOUT`` 0 |
| sapool.W003 | warning | ``POOL_OPTIONS`` on one of Django's own backends (ignored there) |
| sapool.W004 | warning | ``LEND`` "transaction" with a session reset, or ``AUTOCOMMIT`` off |
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks

from .aliases import is_in_memory_sqlite, settings_errors
from .backends import GENERIC, backend_for, ours_for
from .conf import LEND_TRANSACTION, RESET_COMMIT, RESET_ROLLBACK, read_pool_options

#: Tag for ``manage.py check --tag sapool``.
TAG = "sapool"
#: Above this POOL_SIZE, sapool.W002 warns (per process, times the workers).
LARGE_POOL_SIZE = 100


def _size_warnings(alias: str, settings_dict: Mapping[str, Any]) -> list[checks.CheckMessage]:
    options = read_pool_options(alias, settings_dict)
    path = f"settings.DATABASES[{alias!r}]['POOL_OPTIONS']"
    found: list[checks.CheckMessage] = []
    if options.max_overflow == -1:
        found.append(
            checks.Warning(
                f"{path}['MAX_OVERFLOW'] is -1: each process opens as many connections "
                f"as it has threads asking for one, with no limit but the server's "
                f"max_connections.",
                hint="Set MAX_OVERFLOW to a number: POOL_SIZE + MAX_OVERFLOW is then the "
                "most one process opens.",
                id="sapool.W002",
            )
        )
    if options.pool_size > LARGE_POOL_SIZE:
        found.append(
            checks.Warning(
                f"{path}['POOL_SIZE'] is {options.pool_size}: every process keeps up to "
                f"that many connections open, and times the worker processes this often "
                f"exceeds the server's max_connections (PostgreSQL's default is 100).",
                hint="A pool needs about as many connections as threads running queries "
                "at the same time. Compare with the server: "
                "manage.py sapool --check --workers N.",
                id="sapool.W002",
            )
        )
    if options.timeout == 0:
        found.append(
            checks.Warning(
                f"{path}['TIMEOUT'] is 0: a checkout fails at once with PoolExhausted "
                f"whenever all connections are in use, instead of waiting for one.",
                hint="Use a few seconds unless failing fast is intended.",
                id="sapool.W002",
            )
        )
    return found


def _lend_warnings(alias: str, settings_dict: Mapping[str, Any]) -> list[checks.CheckMessage]:
    """LEND "transaction" (lend.py) with settings that defeat or overcharge it."""
    options = read_pool_options(alias, settings_dict)
    if options.lend != LEND_TRANSACTION:
        return []
    path = f"settings.DATABASES[{alias!r}]['POOL_OPTIONS']"
    found: list[checks.CheckMessage] = []
    if options.reset_on_return not in (None, RESET_ROLLBACK, RESET_COMMIT):
        found.append(
            checks.Warning(
                f"{path}['RESET_ON_RETURN'] is {options.reset_on_return!r} with LEND "
                f"'transaction': the session is reset after every statement outside "
                f"atomic(), a round trip each, and Django's session setup is redone at "
                f"every checkout.",
                hint="Keep RESET_ON_RETURN 'rollback' (the default): with LEND "
                "'transaction' session state must not be relied on anyway (docs/lend.md).",
                id="sapool.W004",
            )
        )
    autocommit = settings_dict.get("AUTOCOMMIT", True)
    if not autocommit:  # Django switches the connection with it: 0 and None are off too
        found.append(
            checks.Warning(
                f"{path}['LEND'] is 'transaction' but settings.DATABASES[{alias!r}]"
                f"['AUTOCOMMIT'] is {autocommit!r}: a connection outside autocommit is held until "
                f"the request ends, as with LEND 'request'.",
                hint="Remove LEND, or turn AUTOCOMMIT back on.",
                id="sapool.W004",
            )
        )
    return found


def _pool_options_ignored(alias: str, engine: object) -> list[checks.CheckMessage]:
    """W003 for POOL_OPTIONS on an ENGINE that is none of ours but could be, else nothing."""
    path = f"settings.DATABASES[{alias!r}]['POOL_OPTIONS']"
    ours = ours_for(engine)
    if ours is not None:
        return [
            checks.Warning(
                f"{path} is set, but ENGINE {engine!r} is Django's own backend, which "
                f"ignores it: this alias is not pooled.",
                hint=f"Set ENGINE to {ours.engine!r}, or remove POOL_OPTIONS.",
                id="sapool.W003",
            )
        ]
    # A third-party backend built on one of Django's (django-tenants,
    # django-prometheus): pooled only through the generic ENGINE. Not one that
    # pools by itself with the same setting (django-db-connection-pool).
    from .wrapping import is_poolable

    if not isinstance(engine, str) or not is_poolable(engine):
        return []
    return [
        checks.Warning(
            f"{path} is set, but ENGINE {engine!r} is not a django_sapool backend and "
            f"ignores it: this alias is not pooled.",
            hint=f"To pool it, set ENGINE to {GENERIC!r} and {path}['BACKEND'] to "
            f"{engine!r} (or make an ENGINE module with django_sapool.pooled_wrapper()); "
            f"else remove POOL_OPTIONS.",
            id="sapool.W003",
        )
    ]


def check_database_settings(
    databases: Mapping[str, Mapping[str, Any]],
) -> list[checks.CheckMessage]:
    """Check a DATABASES dict; return Django check messages (never connects)."""
    found: list[checks.CheckMessage] = []
    for alias, settings_dict in databases.items():
        if not isinstance(settings_dict, Mapping):
            continue  # Django reports a malformed DATABASES itself
        engine = settings_dict.get("ENGINE")
        backend = backend_for(engine, settings_dict)
        if backend is None:
            if settings_dict.get("POOL_OPTIONS") is not None:
                found.extend(_pool_options_ignored(alias, engine))
            continue
        if backend.is_sqlite and is_in_memory_sqlite(settings_dict.get("NAME")):
            if _djangos_test_database_in_memory(settings_dict):
                continue  # the project's database is not in memory: nothing to change
            found.append(
                checks.Warning(
                    f"settings.DATABASES[{alias!r}] is an in-memory SQLite database, "
                    f"which django_sapool does not pool: each connection would be a "
                    f"database of its own. The alias behaves exactly like Django's "
                    f"sqlite3 backend (one connection per thread, never closed), and "
                    f"POOL_OPTIONS, CONN_MAX_AGE and OPTIONS['pool'] are not checked.",
                    hint="Use a file database to pool it, or ENGINE "
                    "'django.db.backends.sqlite3' to say that no pool is wanted.",
                    id="sapool.W001",
                )
            )
            continue
        errors = settings_errors(alias, settings_dict)
        found.extend(checks.Error(message, id=check_id) for check_id, message in errors)
        if all(check_id != "sapool.E003" for check_id, _ in errors):  # POOL_OPTIONS parse
            found.extend(_size_warnings(alias, settings_dict))
            found.extend(_lend_warnings(alias, settings_dict))
    return found


def _djangos_test_database_in_memory(settings_dict: Mapping[str, Any]) -> bool:
    """Return whether NAME is the in-memory database Django's test runner made of a SQLite alias.

    Without TEST["NAME"], the runner replaces a SQLite alias's NAME in place
    with ``file:memorydb_<alias>?mode=memory&cache=shared`` (``_<n>`` for a
    ``--parallel`` clone), then runs the system checks: W001 would warn, at
    every test run, about a database the settings never named.
    """
    test_name = (settings_dict.get("TEST") or {}).get("NAME")
    return (
        test_name in (None, "", ":memory:")
        and _TEST_MEMORY_DB.match(str(settings_dict.get("NAME"))) is not None
    )


#: Django's in-memory test database names (django/db/backends/sqlite3/creation.py).
_TEST_MEMORY_DB = re.compile(r"file:memorydb_[^?]+\?mode=memory&cache=shared\Z")


def check_databases(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Check settings.DATABASES (the registered system check)."""
    from django.conf import settings

    return check_database_settings(settings.DATABASES)


def register_checks() -> None:
    """Register the checks with Django (idempotent: the registry is a set)."""
    checks.register(check_databases, TAG)
