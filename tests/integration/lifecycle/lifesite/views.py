"""Views that report which server session served them, sync and async."""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

import django_sapool

from .models import Item


def session_id() -> Any:
    """The server's id for the current session (or the raw connection's, on SQLite)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
        elif connection.vendor == "mysql":
            cursor.execute("SELECT CONNECTION_ID()")
        else:
            return id(connection.connection)
        return cursor.fetchone()[0]


def pid(request: HttpRequest) -> HttpResponse:
    """One query through the ORM plus the session id: a typical small sync view."""
    count = Item.objects.count()
    return JsonResponse({"session": session_id(), "worker": os.getpid(), "count": count})


def write(request: HttpRequest) -> HttpResponse:
    item = Item.objects.create(name=request.GET.get("name", "x"))
    return JsonResponse({"id": item.pk, "worker": os.getpid()})


async def apid(request: HttpRequest) -> HttpResponse:
    """The async ORM API (Django runs the queries in its sync thread)."""
    count = await Item.objects.acount()
    await Item.objects.filter(name="never").aexists()
    return JsonResponse({"worker": os.getpid(), "count": count})


async def asleep(request: HttpRequest) -> HttpResponse:
    """Query, wait without a query (an API call, say), query: LEND "transaction"'s case."""
    item = await Item.objects.aget(name=request.GET.get("name", "lend"))
    await asyncio.sleep(float(request.GET.get("seconds", "0.2")))
    count = await Item.objects.acount()
    return JsonResponse({"worker": os.getpid(), "id": item.pk, "count": count})


def stats(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {"worker": os.getpid(), "pools": [asdict(s) for s in django_sapool.pool_status()]}
    )
