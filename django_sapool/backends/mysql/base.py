"""MySQL and MariaDB with mysqlclient (the driver Django recommends) or PyMySQL."""

from __future__ import annotations

import functools
from typing import Any

from django.db.backends.mysql import base, creation

from django_sapool.backends import ServerFacts
from django_sapool.drivers import MysqlclientOps, MySQLOps, mysql_ops
from django_sapool.errors import ServerSilent
from django_sapool.wrapper import PooledCreationMixin, PooledDatabaseWrapperMixin


class DatabaseCreation(PooledCreationMixin, creation.DatabaseCreation):
    pass


@functools.cache
def _connects_as_django(mro: tuple[type, ...]) -> bool:
    """Return whether a wrapper class (its ``__mro__``) connects with Django's own MySQL one.

    Only then may the pool open them itself (``connect_within``); a backend
    that a project wraps around ours with a get_new_connection() of its own
    (``wrapping.py``) keeps it, and mysqlclient's own setup stays unbounded.
    """
    after = mro[mro.index(PooledDatabaseWrapperMixin) + 1 :]
    owner = next((c for c in after if "get_new_connection" in c.__dict__), None)
    return owner is base.DatabaseWrapper


class MySQLPoolMixin(PooledDatabaseWrapperMixin):
    """What pooling needs to know about Django's MySQL wrappers (+ GIS)."""

    # Django's backend imported MySQLdb above and connects with that module
    # ever after: PyMySQL's if pymysql.install_as_MySQLdb() ran first.
    sapool_driver: MySQLOps = mysql_ops(base.DatabaseWrapper.Database)

    def sapool_new_connection(self, conn_params: dict[str, Any]) -> Any:
        params = dict(conn_params)
        handshake_only = params.pop(MySQLOps.HANDSHAKE_ONLY, ())
        conn = self._sapool_connect(params)
        if handshake_only and not self.sapool_driver.end_handshake(conn, handshake_only):
            # Timeouts meant for the login that cannot be lifted (mysqlclient,
            # whose server answered ``ssl`` without TLS) would cut every later
            # long query: this connection goes, the next one has none.
            conn.close()
            for timeout in handshake_only:
                del params[timeout]
            conn = self._sapool_connect(params)
        return conn

    def _sapool_connect(self, params: dict[str, Any]) -> Any:
        """Open a server connection with ``params``: mysqlclient's setup within the timeout."""
        driver = self.sapool_driver
        seconds = params.get("connect_timeout")
        if (
            isinstance(driver, MysqlclientOps)
            and seconds
            and _connects_as_django(type(self).__mro__)
        ):
            conn = driver.connect_within(params, seconds, lambda: self._sapool_silent(seconds))
            # What Django's get_new_connection() does after Database.connect()
            # (4.2 to 5.2; 6.x does nothing more: tests/unit/test_backends.py).
            if conn.encoders.get(bytes) is bytes:
                conn.encoders.pop(bytes)
        else:
            conn = super().sapool_new_connection(params)
        return conn

    def _sapool_silent(self, seconds: float) -> ServerSilent:
        return ServerSilent(
            f"django_sapool: the server did not answer mysqlclient's session setup of a new "
            f"connection of alias {self.alias!r} (SET NAMES, autocommit) within "
            f"connect_timeout={seconds:g}s after the login (a hung server or a silent "
            f"network): the connection is discarded."
        )

    def sapool_fingerprint_extra(self) -> tuple[object, ...]:
        from django.conf import settings

        return (settings.USE_TZ,)

    def sapool_restore_session(self) -> None:
        # What the driver does when it connects, before Django's session setup
        # and in the same order: its init commands (OPTIONS['init_command'],
        # often sql_mode, and an option file's init-command), then SET NAMES.
        # COM_RESET_CONNECTION puts the session variables back to the server's
        # defaults, and the character set to the handshake's with its default
        # collation: the handshake's is an option file's default-character-set
        # if it has one, while the driver goes on encoding in Django's charset.
        # OPTIONS['sql_mode'] too: mysqlclient sets it last, PyMySQL before
        # the init commands.
        options = self.settings_dict.get("OPTIONS") or {}
        sql_mode = options.get("sql_mode")
        statements: list[tuple[str, list[Any] | None]] = [
            (command, None)
            for command in self.sapool_driver.init_commands(self.connection, options)
        ]
        if sql_mode and not isinstance(self.sapool_driver, MysqlclientOps):
            statements.insert(0, ("SET SESSION sql_mode = %s", [sql_mode]))
        self._sapool_run(statements)
        collation = options.get("collation")
        if collation or "read_default_file" in options or "read_default_group" in options:
            # The character set Django connects with, which the driver encodes
            # in; not the session's now, which a view's SET NAMES may have changed.
            charset = self.get_connection_params().get("charset")  # type: ignore[attr-defined]
            self.connection.set_character_set(
                charset or self.connection.character_set_name(), collation or None
            )
        if sql_mode and isinstance(self.sapool_driver, MysqlclientOps):
            self._sapool_run([("SET SESSION sql_mode = %s", [sql_mode])])

    def _sapool_run(self, statements: list[tuple[str, list[Any] | None]]) -> None:
        if not statements:
            return
        cursor = self.connection.cursor()
        try:
            for sql, params in statements:
                cursor.execute(sql, params)
        finally:
            cursor.close()

    def sapool_server_facts(self, cursor: Any) -> ServerFacts:
        """Return the server's version, max_connections and client sessions open now."""
        cursor.execute("SELECT VERSION(), @@max_connections")
        version, max_connections = cursor.fetchone()
        # MariaDB says so in its version ("10.11.6-MariaDB"); MySQL does not.
        if "mariadb" not in version.lower():
            version = f"MySQL {version}"
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        return ServerFacts(version, int(max_connections), int(cursor.fetchone()[1]))


class DatabaseWrapper(MySQLPoolMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation
