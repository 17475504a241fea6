"""One strategy class per DBAPI driver: what the pool must know about each.

``base`` holds the interface (DriverOps); ``postgresql``, ``mysql`` and
``sqlite`` one class per driver; ``native`` the ctypes helpers some of them use,
each with an off switch (``DJANGO_SAPOOL_NATIVE``, see that module).
"""

from __future__ import annotations

from .base import DriverOps
from .mysql import MysqlclientOps, MySQLOps, PyMySQLOps, mysql_ops
from .native import native_paths
from .postgresql import PostgresOps, Psycopg2Ops, Psycopg3Ops
from .sqlite import Sqlite3Ops

__all__ = [
    "DriverOps",
    "MySQLOps",
    "MysqlclientOps",
    "PostgresOps",
    "Psycopg2Ops",
    "Psycopg3Ops",
    "PyMySQLOps",
    "Sqlite3Ops",
    "mysql_ops",
    "native_paths",
]
