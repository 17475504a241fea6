from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("one", views.one),
    path("ten", views.ten),
    path("write", views.write),
    path("io", views.io),
]
