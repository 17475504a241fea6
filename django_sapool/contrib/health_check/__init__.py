"""django-health-check for django_sapool's aliases: exhausted pools, unreachable servers.

Install with ``pip install "django-sapool[health]"``. With django-health-check 4
(Django >= 5.2), list the checks in the view::

    from health_check.views import HealthCheckView
    from django_sapool.contrib.health_check import pooled_checks

    path("health/", HealthCheckView.as_view(checks=[*pooled_checks(), "health_check.Cache"]))

The same view works with 3.24 (what pip installs for Django 4.2 to 5.1); there,
``"django_sapool.contrib.health_check"`` in ``INSTALLED_APPS`` also registers one
check per pooled alias with the plugin registry that ``health_check.urls`` reads.
What the check decides is in ``probe.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checks import PooledDatabase, pooled_checks

__all__ = ["PooledDatabase", "pooled_checks"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: INSTALLED_APPS imports this package while apps load,
    # and django-health-check's modules are better imported after that.
    if name in __all__:
        from . import checks

        return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
