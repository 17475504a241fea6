"""Exceptions raised by django_sapool."""

from __future__ import annotations

from django.db.utils import OperationalError


class PoolExhausted(OperationalError):
    """No pooled connection became free within TIMEOUT seconds.

    A subclass of Django's ``OperationalError``, so ``except OperationalError`` and
    Django's own error handling treat it like any other unavailable database.
    """


class ServerSilent(OperationalError):
    """The server did not answer a ping or reset within PING_TIMEOUT seconds.

    The connection is discarded; a checkout then opens a new one.
    """
