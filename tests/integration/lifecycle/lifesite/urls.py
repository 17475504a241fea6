from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("pid", views.pid),
    path("write", views.write),
    path("apid", views.apid),
    path("asleep", views.asleep),
    path("stats", views.stats),
]
