from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    """Orders, in ``default`` (PostgreSQL)."""

    name = "shop"
