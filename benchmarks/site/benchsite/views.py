"""The measured views: each runs a known number of queries through the ORM."""

from __future__ import annotations

import random
import time

from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse

from .models import ITEMS, Hit, Item


def _read(pk: int) -> str:
    # One SELECT by primary key (values_list: no model instance to build).
    return Item.objects.filter(pk=pk).values_list("name", flat=True)[0]


def one(request: HttpRequest) -> JsonResponse:
    """One query."""
    return JsonResponse({"name": _read(random.randint(1, ITEMS))})


def ten(request: HttpRequest) -> JsonResponse:
    """Ten queries, one after the other, on the same connection."""
    names = [_read(random.randint(1, ITEMS)) for _ in range(10)]
    return JsonResponse({"names": names})


def write(request: HttpRequest) -> JsonResponse:
    """A small write transaction: one INSERT and one UPDATE in transaction.atomic()."""
    pk = random.randint(1, ITEMS)
    with transaction.atomic():
        Hit.objects.create(item_id=pk, note="bench")
        Item.objects.filter(pk=pk).update(counter=F("counter") + 1)
    return JsonResponse({"item": pk})


#: The simulated I/O of ``/io`` (an HTTP call, a slow template...), in seconds.
IO_SECONDS = 0.05


def io(request: HttpRequest) -> JsonResponse:
    """A query, 50 ms of waiting on something else (no database work), a query.

    The view of issue 15: a pool that lends its connection for the whole request holds
    it idle through the sleep; one that lends it per statement (django_sapool's
    ``LEND = "transaction"``, django-pg-real-pool, PgBouncer's transaction pooling)
    serves the other threads with it meanwhile.
    """
    first = _read(random.randint(1, ITEMS))
    time.sleep(IO_SECONDS)
    second = _read(random.randint(1, ITEMS))
    return JsonResponse({"names": [first, second]})
