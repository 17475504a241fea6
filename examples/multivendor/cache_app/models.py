from __future__ import annotations

from django.db import models


class Counter(models.Model):
    """A named counter, in the local SQLite file."""

    name = models.CharField(max_length=50, unique=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
