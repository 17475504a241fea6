"""SpatiaLite: Django's GIS backend for SQLite, pooled (file databases)."""

from __future__ import annotations

from django.contrib.gis.db.backends.spatialite import base

from django_sapool.backends.sqlite3.base import DatabaseCreation, SQLitePoolMixin


class DatabaseWrapper(SQLitePoolMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation
