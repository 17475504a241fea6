from __future__ import annotations

from django.db import models


class Hit(models.Model):
    """One row per request served by the ``hit`` view."""

    created = models.DateTimeField(auto_now_add=True)
