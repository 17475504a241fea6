"""Databases and login users of our own on the real servers: made, then dropped.

For test_session_state.py and test_security.py, whose child processes log in as
these users (trust authentication on PostgreSQL ignores the passwords; they are
still given, and MariaDB checks them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .conftest import MySQLServer, PgServer, mysql_admin_cursor


def pg_create(pg: PgServer, dbname: str, logins: Sequence[tuple[str, str]]) -> None:
    """A database, and a login role for each (user, password)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg.conninfo(pg.admin_db), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        for user, password in logins:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )


def mysql_create(mysql: MySQLServer, dbname: str, logins: Sequence[tuple[str, str]]) -> None:
    """A database, and a user ('user'@'%') for each (user, password), allowed only on it."""
    with mysql_admin_cursor(mysql) as cursor:
        cursor.execute(f"CREATE DATABASE `{dbname}`")
        for user, password in logins:
            cursor.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", [password])
            cursor.execute(f"GRANT ALL ON `{dbname}`.* TO '{user}'@'%'")


def _each(execute: Callable[[Any], object], statements: Sequence[Any], error: type) -> None:
    """Run every statement, even after one failed with ``error``; then raise the first."""
    errors: list[Exception] = []
    for statement in statements:
        try:
            execute(statement)
        except error as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def pg_drop(pg: PgServer, dbname: str, roles: Sequence[str]) -> None:
    """Drop a test database and roles, each statement tried even if another fails.

    A fresh admin connection: one held since setup may have been killed meanwhile
    (fault-injection tests terminate idle sessions).
    """
    import psycopg
    from psycopg import sql

    statements = [sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))]
    statements += [sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)) for r in roles]
    with psycopg.connect(pg.conninfo(pg.admin_db), autocommit=True) as admin:
        _each(admin.execute, statements, psycopg.Error)


def mysql_drop(
    mysql: MySQLServer,
    dbname: str,
    users: Sequence[str],
    roles: Sequence[str] = (),
) -> None:
    """Drop a test database, users ('user'@'%') and roles; see pg_drop()."""
    import MySQLdb

    statements = [f"DROP DATABASE IF EXISTS `{dbname}`"]
    statements += [f"DROP USER IF EXISTS '{user}'@'%'" for user in users]
    statements += [f"DROP ROLE IF EXISTS `{role}`" for role in roles]
    with mysql_admin_cursor(mysql) as cursor:
        _each(cursor.execute, statements, MySQLdb.Error)
