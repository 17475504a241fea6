from __future__ import annotations

from django.db import models


class Order(models.Model):
    """An order, in PostgreSQL.

    Its customer lives in another server (MySQL/MariaDB), so it is referenced by
    id, not by a ForeignKey: no database could enforce a cross-server key.
    """

    customer_id = models.BigIntegerField(db_index=True)
    customer_email = models.EmailField()
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Order {self.pk} for {self.customer_email}: {self.amount}"
