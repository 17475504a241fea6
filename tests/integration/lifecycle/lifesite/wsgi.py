from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.lifecycle.lifesite.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

# Touching the database at import time, as some apps do: with gunicorn --preload
# this runs in the master before the workers fork (Django imports views lazily,
# at the first request, which would be in a worker).
if os.environ.get("SAPOOL_SITE_QUERY_AT_IMPORT"):
    from .models import Item

    Item.objects.exists()
