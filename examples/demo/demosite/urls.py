from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("hit/", views.hit),
    path("stats/", views.stats),
]
