"""Count the database connections Django opens in this process."""

from __future__ import annotations

import threading
from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class _Counter:
    """A counter shared by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def increment(self) -> None:
        with self._lock:
            self.value += 1


#: How many times Django's ``connection_created`` signal fired in this process.
connections_created = _Counter()


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    connections_created.increment()


class DemoSiteConfig(AppConfig):
    name = "demosite"
    label = "demosite"

    def ready(self) -> None:
        # Django sends connection_created each time a DatabaseWrapper connects.
        # With Django's backend that is a brand-new database connection; with
        # django_sapool it is a checkout from the pool, which only sometimes
        # needs a new connection (the pool's own counter says how often).
        connection_created.connect(_on_connection_created)
