"""PostgreSQL with psycopg 3 or psycopg2, whichever Django's own backend picks."""

from __future__ import annotations

import re
from typing import Any

from django.db.backends.postgresql import base, creation
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_sapool.backends import ServerFacts
from django_sapool.drivers import Psycopg2Ops, Psycopg3Ops
from django_sapool.errors import ServerSilent
from django_sapool.wrapper import PooledCreationMixin, PooledDatabaseWrapperMixin

#: libpq's ``options`` turning the session's default read-only (``-c name=on``).
_READ_ONLY_OPTION = re.compile(
    r"default_transaction_read_only\s*=\s*'?(?:on|true|yes|1)\b", re.IGNORECASE
)


class DatabaseCreation(PooledCreationMixin, creation.DatabaseCreation):
    pass


def _seconds(connect_timeout: Any) -> float | None:
    """Return libpq's ``connect_timeout`` in seconds, or None where it sets no bound."""
    try:
        seconds = float(connect_timeout)
    except (TypeError, ValueError):
        return None  # absent, or libpq refuses it at connect
    return seconds if seconds > 0 else None


class PostgresPoolMixin(PooledDatabaseWrapperMixin):
    """What pooling needs to know about Django's PostgreSQL wrappers (+ PostGIS)."""

    sapool_driver = Psycopg3Ops() if is_psycopg3 else Psycopg2Ops()
    #: Django's PostgreSQL get_connection_params() (4.2 to 6.1) sets nothing on the wrapper.
    sapool_params_set_wrapper = False
    timezone_name: str

    def sapool_fingerprint_extra(self) -> tuple[object, ...]:
        # USE_TZ and the global TIME_ZONE decide psycopg's adapters and the
        # session time zone, and live outside settings_dict. Django derives
        # both cached properties from them (and the alias's TIME_ZONE).
        return (self.timezone_name, self.timezone is None)  # type: ignore[attr-defined]

    #: The TimeZone the session should report, as libpq gives it (psycopg 3;
    #: None: ask Django), worked out when the settings change.
    _sapool_timezone: bytes | None = None

    def sapool_settings_changed(self) -> None:
        wanted = self.timezone_name
        self._sapool_timezone = wanted.encode() if is_psycopg3 and wanted else None

    def sapool_new_connection(self, conn_params: dict[str, Any]) -> Any:
        driver = self.sapool_driver
        connect = super().sapool_new_connection
        seconds = _seconds(conn_params.get("connect_timeout"))
        if not isinstance(driver, Psycopg2Ops) or seconds is None:
            return connect(conn_params)
        # psycopg2 under a wait callback (gevent): libpq's timeout does not apply.
        return driver.connect_within(
            lambda: connect(conn_params),
            seconds,
            lambda: ServerSilent(
                f"django_sapool: the server did not answer a new connection of alias "
                f"{self.alias!r} within connect_timeout={seconds:g}s (a hung server or a "
                f"silent network): psycopg2 with a wait callback connects without libpq's "
                f"own timeout, so the pool bounds it."
            ),
        )

    def sapool_refresh_session(self) -> None:
        # Free: libpq reports the session's TimeZone without a round trip; a
        # SET is sent only if someone changed it (override_settings(TIME_ZONE),
        # a SET TIME ZONE in the last request).
        wanted = self._sapool_timezone
        if wanted is not None and self.connection.pgconn.parameter_status(b"TimeZone") == wanted:
            return
        configure = getattr(self, "_configure_timezone", None)  # Django >= 5.1
        changed = configure(self.connection) if configure else self.ensure_timezone()  # type: ignore[attr-defined]
        if changed and not self.get_autocommit():  # type: ignore[attr-defined]
            self.connection.commit()

    def _set_autocommit(self, autocommit: bool) -> None:
        # A pooled connection usually has the mode already; psycopg 3 spends
        # several microseconds on a no-op switch.
        if self._sapool_record is None or self.connection.autocommit != autocommit:
            super()._set_autocommit(autocommit)  # type: ignore[misc]

    def sapool_read_only_by_choice(self) -> bool:
        # OPTIONS["options"] = "-c default_transaction_read_only=on": a replica or
        # reporting alias made read-only on purpose; every write on it fails.
        options = (self.settings_dict.get("OPTIONS") or {}).get("options")
        return isinstance(options, str) and _READ_ONLY_OPTION.search(options) is not None

    def sapool_server_facts(self, cursor: Any) -> ServerFacts:
        """Return the server's version, max_connections and client sessions open now."""
        cursor.execute("SHOW server_version")
        version = f"PostgreSQL {cursor.fetchone()[0]}"
        cursor.execute("SHOW max_connections")
        max_connections = int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        return ServerFacts(version, max_connections, int(cursor.fetchone()[0]))


class DatabaseWrapper(PostgresPoolMixin, base.DatabaseWrapper):
    creation_class = DatabaseCreation
