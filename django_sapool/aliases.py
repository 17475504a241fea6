"""What ``settings.DATABASES`` says about one alias, read without connecting.

The system checks and ``manage.py sapool`` both start here. Neither builds a
connection object: the backend refuses bad ``POOL_OPTIONS`` with
ImproperlyConfigured when its wrapper is created, which would crash them
instead of letting them report. The wrapper refuses what its backend cannot do
(``unsupported``) with the same messages, for every alias (``check_all_aliases``
in wrapper.py): a bad setting shows at startup, in ``manage.py check`` and in
``manage.py sapool`` alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .backends import GENERIC, backend_for, wrapper_class
from .conf import (
    PoolOptions,
    backend_error,
    conn_max_age_error,
    django_pool_error,
    read_pool_option,
    read_pool_options,
    reset_error,
)
from .credentials import provider_error
from .wrapping import wrapper_for


@dataclass
class AliasInfo:
    """What the settings say about one alias (never the password)."""

    alias: str
    engine: str
    name: str
    host: str
    port: str
    user: str
    pooled: bool
    vendor: str  # "" when the ENGINE is not one of ours
    note: str | None = None
    options: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)


def is_in_memory_sqlite(name: object) -> bool:
    """Return whether a SQLite NAME is an in-memory database (as Django decides)."""
    if isinstance(name, PurePath) or not isinstance(name, str):
        return False
    return name == ":memory:" or "mode=memory" in name


def pool_options_errors(alias: str, settings_dict: Mapping[str, Any]) -> list[str]:
    """Return every POOL_OPTIONS error of one alias (the backend stops at the first)."""
    raw = settings_dict.get("POOL_OPTIONS")
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        try:
            read_pool_options(alias, settings_dict)
        except ImproperlyConfigured as exc:
            return [str(exc)]
        return []
    errors = []
    for key, value in raw.items():
        try:
            read_pool_option(alias, key, value)
        except ImproperlyConfigured as exc:
            errors.append(str(exc))
    if not errors:
        # What the keys break only together (MIN_IDLE above POOL_SIZE).
        try:
            read_pool_options(alias, settings_dict)
        except ImproperlyConfigured as exc:
            errors.append(str(exc))
    return errors


def settings_errors(alias: str, settings_dict: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return (check id, message) for each setting the backend would refuse, in order."""
    found = [
        (check_id, message)
        for check_id, error in (
            ("sapool.E001", conn_max_age_error),
            ("sapool.E002", django_pool_error),
        )
        if (message := error(alias, settings_dict)) is not None
    ]
    options_errors = pool_options_errors(alias, settings_dict)
    found += [("sapool.E003", message) for message in options_errors]
    message = backend_error(alias, settings_dict)
    if message is None and not options_errors and settings_dict.get("ENGINE") == GENERIC:
        message = _wrap_error(alias, settings_dict)
    if message is not None:
        found.append(("sapool.E003", message))
    elif not options_errors:
        options = read_pool_options(alias, settings_dict)
        found += [("sapool.E003", m) for m in support_errors(alias, settings_dict, options)]
    return found


def unsupported(alias: str, options: PoolOptions, wrapper: Any) -> list[str]:
    """Return why a pooled DatabaseWrapper (or its class) cannot do what ``options`` ask."""
    found = (
        provider_error(alias, options, wrapper),
        reset_error(alias, options, wrapper.sapool_driver),
    )
    return [message for message in found if message is not None]


def support_errors(alias: str, settings_dict: Mapping[str, Any], options: PoolOptions) -> list[str]:
    """Return why the alias's backend cannot do what its (valid) POOL_OPTIONS ask.

    What a backend and its driver can do is said by its DatabaseWrapper class,
    imported here as Django will import it. An in-memory SQLite alias is not
    pooled, so nothing of the pool's applies to it.
    """
    engine = settings_dict.get("ENGINE")
    backend = backend_for(engine, settings_dict)
    if backend is None or (backend.is_sqlite and is_in_memory_sqlite(settings_dict.get("NAME"))):
        return []
    if engine == GENERIC:
        try:
            cls: type | None = wrapper_for(alias, settings_dict)
        except ImproperlyConfigured:
            return []  # the generic ENGINE's own error (_wrap_error)
    else:
        cls = wrapper_class(str(engine))  # a str: backend_for() knew it
    if cls is None or getattr(cls, "sapool_driver", None) is None:
        return []  # a missing driver is Django's to report; no driver, no promise
    return unsupported(alias, options, cls)


def refuse(errors: list[str]) -> None:
    """Raise ImproperlyConfigured with the first error, if any (as the backend does)."""
    if errors:
        raise ImproperlyConfigured(errors[0])


#: Aliases that ``check_all_aliases()`` leaves out in this context only (a
#: thread, a task): ``manage.py sapool --check`` reports their bad settings
#: itself, and still connects to the other aliases, whose wrappers would
#: otherwise refuse to be made because of them.
_LEFT_OUT: ContextVar[frozenset[str]] = ContextVar("sapool_left_out", default=frozenset())


@contextmanager
def leaving_out(aliases: Iterable[str]) -> Iterator[None]:
    """Make wrappers, within the block, without refusing ``aliases``'s bad settings."""
    token = _LEFT_OUT.set(frozenset(aliases))
    try:
        yield
    finally:
        _LEFT_OUT.reset(token)


def left_out() -> frozenset[str]:
    """Return the aliases ``check_all_aliases()`` leaves out here (``leaving_out``)."""
    return _LEFT_OUT.get()


def _wrap_error(alias: str, settings_dict: Mapping[str, Any]) -> str | None:
    """Return why the generic ENGINE cannot pool POOL_OPTIONS['BACKEND'], or None."""
    try:
        wrapper_for(alias, settings_dict)
    except ImproperlyConfigured as exc:
        return str(exc)
    return None


def _text(value: object) -> str:
    """Return a setting as text, None as the empty string."""
    return "" if value is None else str(value)


def describe(alias: str, settings_dict: Mapping[str, Any]) -> AliasInfo:
    """Return what the settings of one alias say, validated like the backend does."""
    engine = _text(settings_dict.get("ENGINE"))
    backend = backend_for(engine, settings_dict)
    info = AliasInfo(
        alias=alias,
        engine=engine,
        name=_text(settings_dict.get("NAME")),
        host=_text(settings_dict.get("HOST")),
        port=_text(settings_dict.get("PORT")),
        user=_text(settings_dict.get("USER")),
        pooled=backend is not None,
        vendor=backend.vendor if backend is not None else "",
    )
    if backend is None:
        info.note = "not a django_sapool ENGINE"
    elif backend.is_sqlite and is_in_memory_sqlite(settings_dict.get("NAME")):
        info.pooled = False
        info.note = "in-memory SQLite: not pooled"
    else:
        info.errors = [message for _, message in settings_errors(alias, settings_dict)]
        if not info.errors:
            info.options = read_pool_options(alias, settings_dict).as_settings()
    return info
