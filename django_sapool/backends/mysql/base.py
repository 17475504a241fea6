"""MySQL and MariaDB with mysqlclient (the driver Django recommends) or PyMySQL."""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql import base, creation

from django_sapool.backends import ServerFacts
from django_sapool.drivers import MySQLOps, mysql_ops
from django_sapool.wrapper import PooledCreationMixin, PooledDatabaseWrapperMixin


class DatabaseCreation(PooledCreationMixin, creation.DatabaseCreation):
    pass


class MySQLPoolMixin(PooledDatabaseWrapperMixin):
    """What pooling needs to know about Django's MySQL wrappers (+ GIS)."""

    # Django's backend imported MySQLdb above and connects with that module
    # ever after: PyMySQL's if pymysql.install_as_MySQLdb() ran first.
    sapool_driver: MySQLOps = mysql_ops(base.DatabaseWrapper.Database)

    def sapool_new_connection(self, conn_params: dict[str, Any]) -> Any:
        params = dict(conn_params)
        handshake_only = params.pop(MySQLOps.HANDSHAKE_ONLY, False)
        conn = super().sapool_new_connection(params)
        if handshake_only:
            self.sapool_driver.end_handshake(conn)
        return conn

    def sapool_fingerprint_extra(self) -> tuple[object, ...]:
        from django.conf import settings

        return (settings.USE_TZ,)

    def sapool_restore_session(self) -> None:
        # What the driver does when it connects, before Django's session setup
        # and in the same order: OPTIONS['init_command'] (often sql_mode), then
        # SET NAMES with OPTIONS['collation']. COM_RESET_CONNECTION puts the
        # session variables back to the server's defaults, and the character
        # set to the handshake's with its default collation.
        options = self.settings_dict.get("OPTIONS") or {}
        init_command = options.get("init_command")
        if init_command:
            cursor = self.connection.cursor()
            try:
                cursor.execute(init_command)
            finally:
                cursor.close()
        collation = options.get("collation")
        if collation:
            self.connection.set_character_set(self.connection.character_set_name(), collation)

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
