"""The optional app: ``"django_sapool.contrib.health_check"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class SapoolHealthCheckConfig(AppConfig):
    """Register one check per pooled alias where django-health-check has a registry (3.x)."""

    name = "django_sapool.contrib.health_check"
    # Not "health_check": that is django-health-check's own app's label.
    label = "sapool_health_check"
    verbose_name = "django-sapool health checks"

    def ready(self) -> None:
        try:
            import health_check  # type: ignore[import-untyped,import-not-found]  # noqa: F401
        except ImportError as exc:
            raise ImproperlyConfigured(
                "django_sapool.contrib.health_check is in INSTALLED_APPS but "
                "django-health-check is not installed: pip install 'django-sapool[health]'."
            ) from exc
        try:
            # 3.x only (what pip installs for Django < 5.2): MainView and
            # health_check.urls report what is registered here.
            from health_check.plugins import (  # type: ignore[import-untyped,import-not-found]
                plugin_dir,
            )
        except ImportError:
            return  # 4.x has no registry: its HealthCheckView lists pooled_checks()
        from .checks import PooledDatabase
        from .probe import pooled_aliases

        for alias in pooled_aliases():
            plugin_dir.register(PooledDatabase, alias=alias)
