"""Any Django backend, pooled: the one named in ``POOL_OPTIONS["BACKEND"]``.

``ENGINE = "django_sapool.backends.pooled"`` with, for example,
``POOL_OPTIONS = {"BACKEND": "django_tenants.postgresql_backend"}``. Django
builds connections with ``load_backend(ENGINE).DatabaseWrapper(settings_dict,
alias)``; the class to build depends on the alias's settings, so this one only
builds an instance of ``pooled_wrapper(BACKEND)`` (``django_sapool.wrapping``)
and is never instantiated itself.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS

from django_sapool.wrapping import wrapper_for


class DatabaseWrapper:
    """Build the pooled DatabaseWrapper of the backend in POOL_OPTIONS['BACKEND']."""

    def __new__(cls, settings_dict: dict[str, Any], alias: str = DEFAULT_DB_ALIAS) -> Any:
        return wrapper_for(alias, settings_dict)(settings_dict, alias)
