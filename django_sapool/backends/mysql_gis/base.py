"""MySQL/MariaDB spatial: Django's GIS backend for MySQL, pooled."""

from __future__ import annotations

from django.contrib.gis.db.backends.mysql import base

from django_sapool.backends.mysql.base import DatabaseCreation, MySQLPoolMixin


class DatabaseWrapper(MySQLPoolMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation
