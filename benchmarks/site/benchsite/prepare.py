"""Create and fill the bench tables: ``python -m benchsite.prepare`` (same env as the site).

Run once per bench database, with the ``default`` contender's settings, before any
measurement; the tables are dropped with the database at the end.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
django.setup()

from django.db import connection  # noqa: E402

from benchsite.models import ITEMS, Hit, Item  # noqa: E402


def main() -> None:
    with connection.schema_editor() as editor:
        editor.create_model(Item)
        editor.create_model(Hit)
    Item.objects.bulk_create(Item(id=i, name=f"item-{i}") for i in range(1, ITEMS + 1))
    print(f"prepare: {Item.objects.count()} items in {connection.settings_dict['NAME']}")
    connection.close()


if __name__ == "__main__":
    main()
