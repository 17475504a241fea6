from __future__ import annotations

from django.apps import AppConfig


class LifesiteConfig(AppConfig):
    name = "tests.integration.lifecycle.lifesite"
    label = "lifesite"
