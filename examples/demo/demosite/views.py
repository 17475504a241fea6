"""The demo's two views: one that uses the database, one that reports on it."""

from __future__ import annotations

import dataclasses
import os

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from .apps import connections_created
from .models import Hit


@require_POST
def hit(request: HttpRequest) -> JsonResponse:
    """Record a hit and return the total: a typical short request (INSERT + SELECT)."""
    Hit.objects.create()
    return JsonResponse({"hits": Hit.objects.count()})


@require_GET
def stats(request: HttpRequest) -> JsonResponse:
    """Report this server process's database statistics (touches no database)."""
    engine: str = settings.DATABASES["default"]["ENGINE"]
    pools: list[dict[str, object]] = []
    if engine.startswith("django_sapool."):
        import django_sapool

        pools = [dataclasses.asdict(status) for status in django_sapool.pool_status()]
    return JsonResponse(
        {
            "pid": os.getpid(),
            "engine": engine,
            "connection_created": connections_created.value,
            "pools": pools,
        }
    )
