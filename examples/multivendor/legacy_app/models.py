from __future__ import annotations

from django.db import models


class LegacyCustomer(models.Model):
    """A customer of the older system, in MySQL/MariaDB, under its old table name."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=100)
    order_count = models.PositiveIntegerField(default=0)
    last_order_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "customer"

    def __str__(self) -> str:
        return self.email
