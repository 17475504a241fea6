"""What a new server connection connects with, worked out when it is opened.

Django works out connect parameters in ``get_connection_params()``. A backend
that puts a short-lived token there (IAM authentication) needs it called for
each new server connection, never reused from an earlier one; so the pool's
creator asks for them then (``wrapper.py``: ``_creator``), adds CONNECT_TIMEOUT,
and, with ``POOL_OPTIONS["PASSWORD_PROVIDER"]``, the password the provider gives
for this connection. A checkout of a pooled connection needs none of it.
A connection that no pool keeps (Django's ``_nodb_cursor()``, which creates
and drops test databases) is given the same (``sapool_unpooled_connection``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.backends.base.base import NO_DB_ALIAS  # the alias of _nodb_cursor()
from django.db.utils import OperationalError
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from .conf import PoolOptions
    from .wrapper import PooledDatabaseWrapperMixin


def _setting(alias: str) -> str:
    if alias == NO_DB_ALIAS:  # a copy of some alias's settings, under Django's alias
        return "POOL_OPTIONS['PASSWORD_PROVIDER'] (for Django's connection without a database)"
    return f"settings.DATABASES[{alias!r}]['POOL_OPTIONS']['PASSWORD_PROVIDER']"


def provider_error(alias: str, options: PoolOptions, wrapper: Any) -> str | None:
    """Return why PASSWORD_PROVIDER is refused, or None.

    ``wrapper``: the alias's pooled DatabaseWrapper or its class (what the
    settings name, before any wrapper is made: ``aliases.unsupported``).
    """
    if options.password_provider and wrapper.sapool_password_key is None:
        return (
            f"{_setting(alias)} has no use with the {wrapper.vendor!r} backend, "
            f"which connects without a password: remove it."
        )
    return None


def connect_params(
    wrapper: PooledDatabaseWrapperMixin, options: PoolOptions, params: dict[str, Any] | None
) -> dict[str, Any]:
    """Return the parameters of one new server connection of ``wrapper``, worked out now.

    ``params``: its ``get_connection_params()`` of a moment ago (the same
    checkout); None calls it now.
    """
    if params is None:
        params = wrapper.get_connection_params()  # type: ignore[attr-defined]
    else:
        params = dict(params)  # Django's get_new_connection() may change it
    wrapper.sapool_driver.add_connect_timeout(params, options.connect_timeout)
    if options.password_provider and wrapper.sapool_password_key:
        params[wrapper.sapool_password_key] = provider_password(
            wrapper.alias, wrapper.settings_dict, options.password_provider
        )
    return params


def provider_password(alias: str, settings_dict: dict[str, Any], dotted_path: str) -> str:
    """Call PASSWORD_PROVIDER for one new connection; never show what it returns.

    Its failure is an OperationalError, as a refused login would be: connections
    already in the pool keep serving, and the next new connection asks again.
    """
    try:
        password = import_string(dotted_path)(settings_dict)
    except Exception as exc:
        raise OperationalError(
            f"django_sapool: {_setting(alias)} ({dotted_path!r}) failed, so no new connection "
            f"could be opened: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(password, str):
        raise OperationalError(
            f"django_sapool: {_setting(alias)} ({dotted_path!r}) must return the password as "
            f"a str, returned a {type(password).__name__}."
        )
    return password
