"""The check django-health-check runs for each pooled alias: :class:`PooledDatabase`.

One class for both APIs pip installs: django-health-check 4.x (Django >= 5.2)
calls ``run()`` and reads ``timeout``; 3.24 (the last release for Django 4.2 to
5.1) calls ``check_status()``. Both turn a raised ``ServiceUnavailable`` into an
unhealthy result, keyed by ``repr()``: ``PooledDatabase(alias='default')``.
"""

from __future__ import annotations

import dataclasses
import datetime

from django.db import connections

from django_sapool.conf import read_pool_options

try:  # django-health-check >= 4
    from health_check.base import HealthCheck  # type: ignore[import-untyped,import-not-found]
except ImportError:  # 3.24
    from health_check.backends import (  # type: ignore[import-untyped,import-not-found,no-redef]
        HealthCheck,
    )
from health_check.exceptions import (  # type: ignore[import-untyped,import-not-found]
    ServiceUnavailable,
)

from .probe import bound, pooled_aliases, probe


@dataclasses.dataclass
class PooledDatabase(HealthCheck):  # type: ignore[misc]
    """Unhealthy when the alias's pool is exhausted or its server does not answer.

    An exhausted pool is reported without a checkout (``probe.py``).
    """

    alias: str = "default"

    @property
    def timeout(self) -> datetime.timedelta:
        """How long django-health-check 4 lets the probe run: the probe's own bound.

        Longer than that framework's default (5 s) when the alias's timeouts are,
        so that its "Timed out" never hides the probe's own finding.
        """
        try:
            settings_dict = connections[self.alias].settings_dict
            seconds = bound(read_pool_options(self.alias, settings_dict), settings_dict)
        except Exception:  # an unknown alias, bad options: run() reports it
            seconds = None
        return datetime.timedelta(seconds=5 if seconds is None else seconds)

    def run(self) -> None:
        """Raise ServiceUnavailable naming what is wrong (django-health-check 4)."""
        problem = probe(self.alias)
        if problem is not None:
            # No exception chained: its text is the driver's, unmasked, and
            # django-health-check logs the chain.
            raise ServiceUnavailable(problem) from None

    def check_status(self) -> None:
        """django-health-check 3.x's name for run()."""
        self.run()


def pooled_checks() -> list[tuple[type[PooledDatabase], dict[str, str]]]:
    """Return a ``PooledDatabase`` check per pooled alias, for ``HealthCheckView(checks=...)``."""
    return [(PooledDatabase, {"alias": alias}) for alias in pooled_aliases()]
