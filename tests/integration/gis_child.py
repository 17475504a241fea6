"""A Django process with a geometry model on one GIS backend (``-m tests.integration.gis_child``).

Django settings are per process, so each backend gets its own process. The
parent passes a JSON config in SAPOOL_GIS_CHILD::

    {"databases": {"default": {...}}, "driver": "psycopg" | "psycopg2", "cycles": 8}

The child creates the table of a model with a PointField (schema_editor), then
runs ``cycles`` request cycles (request_started / request_finished, which call
close_old_connections() as under a WSGI server), each inserting one point
through the ORM, then spatial queries in a last cycle. Its facts come back as
JSON on the last stdout line: query results, the server session seen in each
cycle, and the pool's counters.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

CONFIG = read_config("SAPOOL_GIS_CHILD")
use_driver(CONFIG.get("driver"))


def _sqlite_with_extensions() -> str:
    """Give ``import sqlite3`` a module that can load SpatiaLite; return its name.

    The same as tests/django_suite/suite_common.py: Python built without
    --enable-loadable-sqlite-extensions (pyenv's default) has no
    enable_load_extension(); scripts/bootstrap then installs pysqlite3, built
    against the system SQLite, which stands in for sqlite3 here.
    """
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return "sqlite3"
    try:
        import pysqlite3
        import pysqlite3.dbapi2
    except ImportError:
        return "sqlite3"  # Django then explains that SpatiaLite needs extension loading
    sys.modules["sqlite3"] = pysqlite3
    sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2
    return "pysqlite3"


if "spatialite" in CONFIG["databases"]["default"]["ENGINE"]:
    SQLITE_MODULE = _sqlite_with_extensions()

setup_django(
    # GIS fields need no app of their own; the model below borrows the "gis" label.
    INSTALLED_APPS=["django.contrib.gis"],
    DATABASES=CONFIG["databases"],
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)

from django.contrib.gis.db import models  # noqa: E402
from django.contrib.gis.db.models.functions import Distance  # noqa: E402
from django.contrib.gis.geos import Point, Polygon  # noqa: E402
from django.contrib.gis.measure import D  # noqa: E402
from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import connection  # noqa: E402

import django_sapool  # noqa: E402

# Web Mercator: projected, in metres, known to PostGIS, SpatiaLite and GDAL
# (MySQL's backend asks GDAL for the units). Planar distances keep the expected
# numbers exact on every backend.
SRID = 3857


class Place(models.Model):
    name = models.CharField(max_length=20)
    # MySQL/MariaDB refuse a spatial index on a NULLable column, and Django
    # creates one by default: NOT NULL it is (Django's default anyway).
    point = models.PointField(srid=SRID)

    class Meta:
        app_label = "gis"
        db_table = "sapool_gis_place"


def session_id() -> Any:
    """Identify the server session (or, on SpatiaLite, the raw connection)."""
    if connection.vendor in ("postgresql", "mysql"):
        sql = (
            "SELECT pg_backend_pid()"
            if connection.vendor == "postgresql"
            else ("SELECT CONNECTION_ID()")
        )
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]
    connection.ensure_connection()
    return id(connection.connection)


def request_cycle(work: Any) -> Any:
    """Run ``work`` as one request: Django's signals close the connection around it."""
    request_started.send(sender=None)
    try:
        return work()
    finally:
        request_finished.send(sender=None)
    # After request_finished the connection is back in the pool (CONN_MAX_AGE = 0).


def main() -> None:
    cycles = int(CONFIG.get("cycles", 8))
    facts: dict[str, Any] = {"vendor": connection.vendor, "sessions": []}

    def create_table() -> Any:
        # CREATE EXTENSION postgis (PostGIS) / InitSpatialMetadata (SpatiaLite):
        # what migrate runs first, through our wrapper's connection.
        connection.prepare_database()
        with connection.schema_editor() as editor:
            editor.create_model(Place)
        return session_id()

    facts["sessions"].append(request_cycle(create_table))

    for i in range(cycles):

        def insert(i: int = i) -> Any:
            Place.objects.create(name=f"p{i}", point=Point(i * 1000.0, 0.0, srid=SRID))
            return session_id()

        facts["sessions"].append(request_cycle(insert))

    def query() -> Any:
        box = Polygon.from_bbox((-500.0, -500.0, 2500.0, 500.0))
        box.srid = SRID
        origin = Point(2600.0, 0.0, srid=SRID)
        facts["within"] = sorted(
            Place.objects.filter(point__within=box).values_list("name", flat=True)
        )
        facts["intersects"] = sorted(
            Place.objects.filter(point__intersects=Point(3000.0, 0.0, srid=SRID)).values_list(
                "name", flat=True
            )
        )
        nearest = Place.objects.annotate(d=Distance("point", origin)).order_by("d")[:3]
        facts["nearest"] = [(p.name, round(p.d.m, 3)) for p in nearest]
        facts["distance_lte"] = sorted(
            Place.objects.filter(point__distance_lte=(origin, D(m=1500))).values_list(
                "name", flat=True
            )
        )
        facts["count"] = Place.objects.count()
        return session_id()

    facts["sessions"].append(request_cycle(query))

    # Nothing may still be checked out, and one server connection served all cycles.
    facts["connection_is_none"] = connection.connection is None
    facts["pools"] = [asdict(s) for s in django_sapool.pool_status()]
    facts["driver"] = connection.Database.__name__
    if connection.vendor == "sqlite":
        facts["driver"] = SQLITE_MODULE
    print("SAPOOL-RESULT " + json.dumps(facts, default=str))


if __name__ == "__main__":
    main()
