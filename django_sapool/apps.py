"""Optional Django app: system checks and ``manage.py sapool``.

The backends work without it; add ``"django_sapool"`` to ``INSTALLED_APPS`` to get
``manage.py check`` warnings about pool settings and the ``sapool`` command.
"""

from __future__ import annotations

from django.apps import AppConfig


class SapoolConfig(AppConfig):
    """Register django_sapool's system checks."""

    name = "django_sapool"
    label = "django_sapool"
    verbose_name = "django-sapool"

    def ready(self) -> None:
        """Register the system checks (settings only: they never connect)."""
        from . import checks

        checks.register_checks()
