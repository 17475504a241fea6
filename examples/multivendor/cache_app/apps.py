from __future__ import annotations

from django.apps import AppConfig


class CacheAppConfig(AppConfig):
    """Local counters, in ``local`` (a SQLite file)."""

    name = "cache_app"
