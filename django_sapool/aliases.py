"""What ``settings.DATABASES`` says about one alias, read without connecting.

The system checks and ``manage.py sapool`` both start here. Neither builds a
connection object: the backend refuses bad ``POOL_OPTIONS`` with
ImproperlyConfigured when its wrapper is created, which would crash them
instead of letting them report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .backends import GENERIC, backend_for
from .conf import (
    backend_error,
    conn_max_age_error,
    django_pool_error,
    read_pool_option,
    read_pool_options,
)


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
    return found


def _wrap_error(alias: str, settings_dict: Mapping[str, Any]) -> str | None:
    """Return why the generic ENGINE cannot pool POOL_OPTIONS['BACKEND'], or None."""
    from .wrapping import wrapper_for

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
