"""MySQL and MariaDB with mysqlclient (the driver Django recommends)."""

from __future__ import annotations

from django.db.backends.mysql import base, creation

from django_sapool.drivers import MysqlclientOps
from django_sapool.wrapper import PooledCreationMixin, PooledDatabaseWrapperMixin


class DatabaseCreation(PooledCreationMixin, creation.DatabaseCreation):
    pass


class MySQLPoolMixin(PooledDatabaseWrapperMixin):
    """What pooling needs to know about Django's MySQL wrappers (+ GIS)."""

    sapool_driver = MysqlclientOps()

    def sapool_fingerprint_extra(self) -> tuple[object, ...]:
        from django.conf import settings

        return (settings.USE_TZ,)


class DatabaseWrapper(MySQLPoolMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation
