"""Two small tables: ``Item`` is read (and its counter bumped), ``Hit`` grows on writes."""

from __future__ import annotations

from django.db import models

#: Rows in the item table; views pick one at random.
ITEMS = 1000


class Item(models.Model):
    name = models.CharField(max_length=50)
    counter = models.IntegerField(default=0)

    class Meta:
        app_label = "benchsite"
        db_table = "bench_item"


class Hit(models.Model):
    item_id = models.IntegerField()
    note = models.CharField(max_length=50)

    class Meta:
        app_label = "benchsite"
        db_table = "bench_hit"
