"""A Django backend that logs in with a password it fetches for every connection.

What an IAM authentication backend (django-iam-dbauth and in-house ones) does:
``get_connection_params()`` puts a freshly issued token where Django puts
PASSWORD. Django calls it for every new connection; django_sapool must too.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base

from tests.faults import credentials


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        params["password"] = credentials.read_password()
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        try:
            return super().get_new_connection(conn_params)
        finally:
            credentials.release()
