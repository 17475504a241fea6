"""Send each app's models to its database, and its tables only there."""

from __future__ import annotations

from typing import Any

from django.db.models import Model

#: App label -> database alias; every other app lives in ``default``.
APP_DATABASES: dict[str, str] = {
    "legacy_app": "legacy",
    "cache_app": "local",
}


def database_for_app(app_label: str) -> str:
    return APP_DATABASES.get(app_label, "default")


class MultiVendorRouter:
    """Route by app label: ``legacy_app`` -> legacy, ``cache_app`` -> local, rest -> default."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        return database_for_app(model._meta.app_label)

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return database_for_app(model._meta.app_label)

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        # A foreign key cannot cross servers: no database enforces it, and no
        # join can follow it. Cross-database links are plain ids (see Order).
        return obj1._state.db == obj2._state.db

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool:
        # Each app's tables exist in exactly one database: `migrate
        # --database=legacy` creates the legacy tables and nothing else.
        return database_for_app(app_label) == db
