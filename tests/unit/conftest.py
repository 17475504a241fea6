"""Fixtures shared by the unit tests (helpers to import are in pools.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from django_sapool import registry

from .pools import filled


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Start and end without connections or pools."""
    connections.close_all()
    registry.dispose()
    yield
    connections.close_all()
    registry.dispose()


@pytest.fixture
def extra_alias(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Add aliases to the process's DATABASES (Django fills in its defaults)."""
    added: list[str] = []

    def add(alias: str, **settings_dict: Any) -> None:
        monkeypatch.setitem(settings.DATABASES, alias, filled(**settings_dict))
        added.append(alias)

    yield add
    for alias in added:
        if hasattr(connections._connections, alias):
            connections[alias].close()
            del connections[alias]
