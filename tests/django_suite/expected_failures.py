"""Django tests that fail by design with django_sapool."""

from __future__ import annotations

EXPECTED_FAILURES: dict[str, str] = {}
