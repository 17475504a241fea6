"""Two views: one request that uses all three databases, and the pools' status."""

from __future__ import annotations

import dataclasses
import os
from decimal import Decimal, InvalidOperation
from typing import Any

from cache_app.models import Counter
from django.db import connections, models, router, transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from legacy_app.models import LegacyCustomer
from shop.models import Order

import django_sapool


def _where(obj: models.Model) -> dict[str, str]:
    """Name the alias and vendor a row was saved to: the router's decision, made visible."""
    alias = obj._state.db or "?"
    return {"database": alias, "vendor": connections[alias].vendor}


@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """Place an order: one request, three databases on three servers.

    POST ``customer`` (an e-mail), optional ``name`` and ``amount``.

    1. find or create the customer in the legacy MySQL/MariaDB database and
       count the order there;
    2. create the order in PostgreSQL;
    3. bump the ``orders`` counter in the local SQLite file.

    Each alias checks a connection out of its own pool on first use, and
    Django's request_finished signal returns all three at the end. Every
    request takes them in the same order (legacy, default, local), so threads
    waiting for a connection of a small pool can never wait on each other in a
    cycle. There is no transaction spanning the three servers: each step
    commits on its own.
    """
    email = request.POST.get("customer", "").strip().lower()
    if "@" not in email:
        return JsonResponse({"error": "POST a customer e-mail as 'customer'"}, status=400)
    try:
        amount = Decimal(request.POST.get("amount", "9.99")).quantize(Decimal("0.01"))
    except InvalidOperation:
        return JsonResponse({"error": "'amount' must be a decimal number"}, status=400)
    name = request.POST.get("name") or email.partition("@")[0]
    now = timezone.now()

    # 1. legacy (MySQL/MariaDB). atomic() needs the alias explicitly: it would
    # otherwise open its transaction on `default`. Ask the router, don't repeat it.
    with transaction.atomic(using=router.db_for_write(LegacyCustomer)):
        customer, created = LegacyCustomer.objects.get_or_create(
            email=email, defaults={"name": name}
        )
        # An UPDATE ... SET order_count = order_count + 1: concurrent requests for
        # the same customer can't lose each other's increments.
        LegacyCustomer.objects.filter(pk=customer.pk).update(
            order_count=F("order_count") + 1, last_order_at=now
        )
        customer.refresh_from_db(fields=["order_count", "last_order_at"])

    # 2. default (PostgreSQL).
    order = Order.objects.create(customer_id=customer.pk, customer_email=email, amount=amount)

    # 3. local (SQLite file).
    with transaction.atomic(using=router.db_for_write(Counter)):
        counter, _ = Counter.objects.get_or_create(name="orders")
        Counter.objects.filter(pk=counter.pk).update(value=F("value") + 1)
        counter.refresh_from_db(fields=["value"])

    return JsonResponse(
        {
            "order": {"id": order.pk, "amount": str(order.amount), **_where(order)},
            "customer": {
                "id": customer.pk,
                "email": customer.email,
                "created": created,
                "order_count": customer.order_count,
                **_where(customer),
            },
            "counter": {"name": counter.name, "value": counter.value, **_where(counter)},
        },
        status=201,
    )


@require_GET
def pools(request: HttpRequest) -> JsonResponse:
    """Return this process's pools, one per alias (``?alias=legacy`` for one).

    It touches no database, so ``checked_out`` counts connections that other
    requests hold right now (or never returned).
    """
    alias = request.GET.get("alias") or None
    statuses: list[dict[str, Any]] = [
        dataclasses.asdict(status) for status in django_sapool.pool_status(alias)
    ]
    return JsonResponse({"pid": os.getpid(), "pools": statuses})
