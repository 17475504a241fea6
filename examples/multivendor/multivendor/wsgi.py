"""WSGI entry point: ``waitress-serve --threads 8 multivendor.wsgi:application``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "multivendor.settings")

application = get_wsgi_application()
