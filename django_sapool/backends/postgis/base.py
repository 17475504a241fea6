"""PostGIS: Django's GIS backend for PostgreSQL, pooled."""

from __future__ import annotations

from django.contrib.gis.db.backends.postgis import base

from django_sapool.backends.postgresql.base import DatabaseCreation, PostgresPoolMixin


class DatabaseWrapper(PostgresPoolMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation
