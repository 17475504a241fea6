from __future__ import annotations

from django.apps import AppConfig


class LegacyAppConfig(AppConfig):
    """Customers of the older system, in ``legacy`` (MySQL/MariaDB)."""

    name = "legacy_app"
