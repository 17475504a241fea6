"""Django tests that fail by design with django_sapool, and tests that are skipped.

Each entry names one test by its id (``module.Class.method``, as runtests.py
prints it) and says why. sapool_runner.py marks the expected failures of the
vendor under test (``expected_failures(vendor)``), so they must keep failing:
one that passes is reported as an unexpected success and fails the run, which
is the cue to drop its entry. A listed test that Django skips (another driver,
another vendor) just skips.

- ``EXPECTED_FAILURES``: every vendor; ``VENDOR_EXPECTED_FAILURES[vendor]``:
  one vendor (``connection.vendor``: "postgresql", "mysql", "sqlite").
- ``REQUIRES_MODULE``: skipped unless an optional package is installed.
- ``ENVIRONMENT_SKIPS``: skipped always; tests that use no database and fail
  with Django's own backends too, because of the GEOS/GDAL versions of this
  machine (Debian 12). Nothing of django_sapool is tested by them.
"""

from __future__ import annotations

_HEALTH = "backends.base.test_base.ConnectionHealthChecksTests"
_PG = "backends.postgresql.tests.Tests"

_PERSISTENT = (
    "patches settings_dict['CONN_MAX_AGE'] = None to test persistent connections; "
    "django_sapool refuses CONN_MAX_AGE != 0 (ImproperlyConfigured at connect) "
    "because the pool, not the thread, keeps connections (conf.check_connection_settings)"
)
_DJANGO_POOL = (
    "turns on Django's own pool with OPTIONS['pool'] and connects; django_sapool refuses "
    "OPTIONS['pool'] (ImproperlyConfigured at connect): one pool per alias, ours"
)

EXPECTED_FAILURES: dict[str, str] = {
    f"{_HEALTH}.test_health_checks_disabled": _PERSISTENT,
    f"{_HEALTH}.test_health_checks_enabled": _PERSISTENT,
    f"{_HEALTH}.test_health_checks_enabled_errors_occurred": _PERSISTENT,
    f"{_HEALTH}.test_set_autocommit_health_checks_enabled": _PERSISTENT,
}

VENDOR_EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "postgresql": {
        # psycopg 3 only.
        f"{_PG}.test_connect_pool": _DJANGO_POOL,
        f"{_PG}.test_connect_pool_with_timezone": _DJANGO_POOL,
        # psycopg2 only: expects Django's "Database pooling requires psycopg >= 3" and
        # gets our refusal of OPTIONS['pool'], which is checked first.
        f"{_PG}.test_connect_pool_setting_ignored_for_psycopg2": (
            "expects Django's 'Database pooling requires psycopg >= 3' ImproperlyConfigured; "
            "django_sapool's check_settings() refuses OPTIONS['pool'] first, with its own "
            "message"
        ),
    },
    "mysql": {},
}

# PostgreSQL through PgBouncer in transaction pooling mode (settings_pgbouncer.py,
# whose runner marks this key instead of "postgresql"): the PostgreSQL entries,
# plus the tests that assert server-side cursors are used. settings_pgbouncer sets
# DISABLE_SERVER_SIDE_CURSORS=True because transaction pooling needs it (see
# docs/pgbouncer.md); test_server_side_cursors_setting, which turns them back on
# inside the test's transaction, passes.
_SSC = "backends.postgresql.test_server_side_cursors.ServerSideCursorsPostgres"
_NO_SERVER_SIDE_CURSORS = (
    "asserts that QuerySet.iterator() opens a server-side cursor (pg_cursors); "
    "settings_pgbouncer sets DISABLE_SERVER_SIDE_CURSORS=True as transaction pooling "
    "requires: a cursor declared in autocommit is WITH HOLD and outlives its "
    "transaction, and PgBouncer may send the next FETCH to another server connection"
)
VENDOR_EXPECTED_FAILURES["pgbouncer"] = {
    **VENDOR_EXPECTED_FAILURES["postgresql"],
    f"{_SSC}.test_server_side_cursor": _NO_SERVER_SIDE_CURSORS,
    f"{_SSC}.test_server_side_cursor_many_cursors": _NO_SERVER_SIDE_CURSORS,
    f"{_SSC}.test_values": _NO_SERVER_SIDE_CURSORS,
    f"{_SSC}.test_values_list": _NO_SERVER_SIDE_CURSORS,
    f"{_SSC}.test_values_list_fields_not_equal_to_names": _NO_SERVER_SIDE_CURSORS,
    f"{_SSC}.test_values_list_flat": _NO_SERVER_SIDE_CURSORS,
    # psycopg 3 only.
    f"{_SSC}.test_server_side_binding": (
        "expects psycopg 3's server-side binding (OPTIONS['server_side_binding']=True) to "
        "fail on a named cursor with ProgrammingError; with DISABLE_SERVER_SIDE_CURSORS=True "
        "(required by transaction pooling) iterator() uses no named cursor, so the query "
        "succeeds"
    ),
}

# PostgreSQL with POOL_OPTIONS["LEND"] = "transaction" (settings_postgresql_lend.py,
# whose runner marks this key instead of "postgresql"): the PostgreSQL entries, plus
# the tests that rely on one session across statements outside atomic().
_RETURNED = (
    "reads wrapper.connection after the cursor it used was closed, outside atomic(); "
    "with LEND 'transaction' the connection went back to the pool then, so "
    "wrapper.connection is None (by design: docs/lend.md)"
)
VENDOR_EXPECTED_FAILURES["postgresql_lend"] = {
    **VENDOR_EXPECTED_FAILURES["postgresql"],
    # Compares the three threads' wrapper.connection once their cursors are closed:
    # all None, so one distinct value instead of three.
    "backends.tests.ThreadTests.test_default_connection_thread_local": _RETURNED,
    # Passes new_connection.connection, read after its cursor closed, to
    # _configure_connection(): None.
    f"{_PG}.test_bypass_timezone_configuration": _RETURNED,
}

# MySQL/MariaDB with LEND "transaction" (settings_mysql_lend.py).
VENDOR_EXPECTED_FAILURES["mysql_lend"] = {
    **VENDOR_EXPECTED_FAILURES["mysql"],
    "backends.tests.ThreadTests.test_default_connection_thread_local": _RETURNED,
}

# SQLite files with LEND "transaction" (settings_sqlite_lend.py).
VENDOR_EXPECTED_FAILURES["sqlite_lend"] = {
    "backends.tests.ThreadTests.test_default_connection_thread_local": _RETURNED,
}

# Tests of Django's own pool, which need psycopg_pool (Django's
# tests/requirements/postgres.txt); this project doesn't install it. They are
# skipped when it is missing. With it installed they run, and on Django 6.1
# (psycopg-pool 3.3.3, 2026-12-06) test_pool_check_can_be_overridden and
# test_pooling_health_checks fail besides the two expected failures above, and so
# does test_pooling_not_support_persistent_connections, which passes without it:
# they turn on Django's pool, which django_sapool replaces.
REQUIRES_MODULE: dict[str, str] = {
    f"{_PG}.test_connect_pool": "psycopg_pool",
    f"{_PG}.test_connect_pool_set_to_true": "psycopg_pool",
    f"{_PG}.test_connect_pool_with_timezone": "psycopg_pool",
    f"{_PG}.test_pooling_health_checks": "psycopg_pool",
    # Django 6.1.
    f"{_PG}.test_pool_check_can_be_overridden": "psycopg_pool",
    f"{_PG}.test_pool_options_not_mutated": "psycopg_pool",
}

_GEOS_WKT = (
    "no database: GEOS 3.11 (Debian 12) fails to read 'GEOMETRYCOLLECTIONZM(' without "
    "whitespace before the dimension marker (GEOSException), which this test of Django's "
    "WKT nesting limit (5.2.x security release) expects newer GEOS to parse; fails the "
    "same with django.contrib.gis.db.backends.postgis"
)

ENVIRONMENT_SKIPS: dict[str, str] = {
    "gis_tests.gdal_tests.test_srs.SpatialRefTest.test_esri_prefixed_wkt": (
        "no database: GDAL 3.6 (Debian 12) refuses leading whitespace before an 'ESRI::' "
        "prefix ('Corrupt data'); fails the same with django.contrib.gis.db.backends.postgis"
    ),
    "gis_tests.geos_tests.test_geos_limit.GEOSLimitTest."
    "test_wkt_dimension_marker_whitespace_is_limited": _GEOS_WKT,
    "gis_tests.geos_tests.test_geos_limit.GEOSLimitTest."
    "test_wkt_reader_whitespace_is_limited": _GEOS_WKT,
}


def expected_failures(vendor: str) -> dict[str, str]:
    """Return the expected failures (test id -> reason) for one ``connection.vendor``."""
    return {**EXPECTED_FAILURES, **VENDOR_EXPECTED_FAILURES.get(vendor, {})}
