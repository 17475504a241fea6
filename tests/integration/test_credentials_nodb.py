"""PASSWORD_PROVIDER for Django's connection without a database: test databases.

Django creates and drops test databases through ``_nodb_cursor()``: a copy of
the alias's settings (NAME None) under the alias ``__no_db__``, which never
pools. It must log in with the provider's password as the alias's pooled
connections do; before this was fixed it connected with Django's parameters
alone (no password: MariaDB's "Access denied ... (using password: NO)").

MariaDB checks passwords (the local PostgreSQL trusts any), so a user of our
own with a password, allowed on its database and on its test database, logs in
with an empty PASSWORD and a provider that returns the password. The child
process (this module, run as ``python -m tests.integration.test_credentials_nodb``)
queries through the pool, through ``_nodb_cursor()``, then creates, uses and
destroys the test database with ``connection.creation``; with mysqlclient and
with PyMySQL (whose connect timeout is lifted after the handshake). The user
and both databases are dropped at the end, even on failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from tests.child_setup import read_config, setup_django, use_driver

ENV_VAR = "SAPOOL_NODB_CHILD"


def provider(settings_dict: dict[str, Any]) -> str:
    """POOL_OPTIONS['PASSWORD_PROVIDER'] of the child: the user's password, from its config."""
    CALLS.append(settings_dict["NAME"])
    password: str = read_config(ENV_VAR)["password"]
    return password


#: The NAME of each settings dict the provider was called with (never the password).
CALLS: list[str | None] = []


def child_main() -> None:
    config = read_config(ENV_VAR)
    use_driver(config["driver"])
    setup_django(DATABASES={"default": config["db"]})

    import json

    from django.db import connection

    import django_sapool

    def scalar(cursor: Any, sql: str) -> Any:
        cursor.execute(sql)
        return cursor.fetchone()[0]

    if connection.vendor == "mysql":
        user_sql, database_sql = "SELECT CURRENT_USER()", "SELECT DATABASE()"
    else:
        user_sql, database_sql = "SELECT current_user", "SELECT current_database()"
    facts: dict[str, Any] = {"driver": connection.sapool_driver.name}
    with connection.cursor() as cursor:
        facts["pooled_user"] = scalar(cursor, user_sql)
    connection.close()
    with connection._nodb_cursor() as cursor:
        facts["nodb_user"] = scalar(cursor, user_sql)
        facts["nodb_database"] = scalar(cursor, database_sql)
    old_name = connection.settings_dict["NAME"]
    facts["test_name"] = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, serialize=False
    )
    with connection.cursor() as cursor:
        facts["test_database"] = scalar(cursor, database_sql)
    connection.close()
    connection.creation.destroy_test_db(old_name, verbosity=0)
    facts["pools"] = [(s.alias, s.database) for s in django_sapool.pool_status()]
    # Where the provider module was imported: by its dotted path, not as __main__.
    from tests.integration import test_credentials_nodb

    facts["provider_calls"] = test_credentials_nodb.CALLS
    print("SAPOOL-RESULT " + json.dumps(facts), flush=True)


if __name__ == "__main__":
    child_main()
else:
    import pytest

    from .conftest import MySQLServer, mysql_admin_cursor, run_child
    from .logins import mysql_create, mysql_drop

    pytestmark = pytest.mark.mysql

    @pytest.fixture
    def provider_user(mysql: MySQLServer) -> Iterator[dict[str, str]]:
        """A user with a password, allowed on a database of its own and on its test database."""
        tag = uuid.uuid4().hex[:10]
        env = {
            "user": f"sapool_nodb_{tag}",
            "password": f"pw-nodb-{uuid.uuid4().hex}",
            "dbname": f"sapool_nodb_{tag}",
        }
        user, dbname = env["user"], env["dbname"]
        try:
            mysql_create(mysql, dbname, [(user, env["password"])])
            with mysql_admin_cursor(mysql) as cursor:
                cursor.execute(f"GRANT ALL ON `test_{dbname}`.* TO '{user}'@'%'")
            yield env
        finally:
            mysql_drop(mysql, f"test_{dbname}", [])
            mysql_drop(mysql, dbname, [user])

    def _databases(mysql: MySQLServer) -> set[str]:
        with mysql_admin_cursor(mysql) as cursor:
            cursor.execute("SHOW DATABASES")
            return {row[0] for row in cursor.fetchall()}

    @pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
    def test_test_database_is_created_and_destroyed_with_the_provider_password(
        mysql: MySQLServer, provider_user: dict[str, str], driver: str
    ) -> None:
        pytest.importorskip("MySQLdb" if driver == "mysqlclient" else driver)
        user, dbname = provider_user["user"], provider_user["dbname"]
        db = mysql.settings(
            dbname,
            USER=user,
            PASSWORD="",  # the provider gives it
            POOL_OPTIONS={"PASSWORD_PROVIDER": f"{__name__}.provider", "POOL_SIZE": 2},
        )
        facts = run_child(
            {"scenario": "nodb", "driver": driver, "db": db, "password": provider_user["password"]},
            timeout=120,
            module=__name__,
            env_var=ENV_VAR,
        )
        assert facts["driver"] == driver
        assert facts["pooled_user"].split("@")[0] == user
        assert facts["nodb_user"].split("@")[0] == user  # logged in: not "using password: NO"
        assert facts["nodb_database"] is None
        test_name = f"test_{dbname}"
        assert facts["test_name"] == facts["test_database"] == test_name
        assert test_name not in _databases(mysql)  # destroyed, as the user
        # Asked for each new server connection: the pooled one, _nodb_cursor()'s, the
        # ones creating and dropping the test database, and the pooled one on it.
        calls = facts["provider_calls"]
        assert calls[0] == dbname and test_name in calls
        assert calls.count(None) >= 3, calls
        assert provider_user["password"] not in facts["stderr"]
