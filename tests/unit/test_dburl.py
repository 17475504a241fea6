"""settings_from_url(): schemes, the query string's pool options, errors, masking, recipes."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import make_dataclass
from typing import Any

import dj_database_url
import environ
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import ConnectionHandler

import django_sapool
from django_sapool import conf, dburl
from django_sapool.backends import BACKENDS, GENERIC
from django_sapool.conf import parse_pool_options
from django_sapool.dburl import MASK, mask_url, settings_from_url

PASSWORD = "pw-Zq8-secret"
PG = f"postgres://app:{PASSWORD}@db.example:5432/app"
OURS = "django_sapool.backends."


def refused(url: str, **overrides: Any) -> str:
    with pytest.raises(ImproperlyConfigured) as error:
        settings_from_url(url, **overrides)
    message = str(error.value)
    assert PASSWORD not in message
    return message


# -- schemes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "engine"),
    [
        ("postgres", "postgresql"),
        ("postgresql", "postgresql"),
        ("pgsql", "postgresql"),
        ("psql", "postgresql"),
        ("postgis", "postgis"),
        ("mysql", "mysql"),
        ("mysql2", "mysql"),
        ("mariadb", "mysql"),
        ("mysqlgis", "mysql_gis"),
    ],
)
def test_server_schemes_map_to_our_engines(scheme: str, engine: str) -> None:
    db = settings_from_url(f"{scheme}://app:{PASSWORD}@db.example:3307/app")
    assert db["ENGINE"] == OURS + engine
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "app",
        PASSWORD,
        "db.example",
        3307,
        "app",
    )
    assert db["CONN_MAX_AGE"] == 0
    assert "POOL_OPTIONS" not in db and "OPTIONS" not in db


def test_our_engine_extends_what_dj_database_url_picks() -> None:
    """Each scheme pools the Django backend dj-database-url itself would choose."""
    extends = {backend.engine: backend.extends for backend in BACKENDS}
    for scheme in ("postgres", "postgresql", "pgsql", "postgis", "mysql", "mysql2", "mysqlgis"):
        url = f"{scheme}://u@h/d"
        assert extends[settings_from_url(url)["ENGINE"]] == dj_database_url.parse(url)["ENGINE"]
    for scheme in ("sqlite", "spatialite"):
        url = f"{scheme}:////tmp/x.db"
        assert extends[settings_from_url(url)["ENGINE"]] == dj_database_url.parse(url)["ENGINE"]


@pytest.mark.parametrize(
    ("url", "engine", "name"),
    [
        ("sqlite:////var/db/app.sqlite3", "sqlite3", "/var/db/app.sqlite3"),
        ("sqlite:///app.sqlite3", "sqlite3", "app.sqlite3"),
        ("sqlite://:memory:", "sqlite3", ":memory:"),  # dj-database-url names Django's here
        ("sqlite://", "sqlite3", ":memory:"),
        ("spatialite:////var/db/geo.sqlite3?pool_size=2", "spatialite", "/var/db/geo.sqlite3"),
    ],
)
def test_sqlite_urls(url: str, engine: str, name: str) -> None:
    db = settings_from_url(url)
    assert (db["ENGINE"], db["NAME"]) == (OURS + engine, name)


def test_unknown_scheme_is_refused_unless_engine_is_named() -> None:
    message = refused(f"cockroach://app:{PASSWORD}@db/app")
    assert "no backend for the scheme 'cockroach'" in message
    assert "ENGINE=" in message and "postgres, postgresql" in message
    assert f"cockroach://app:{MASK}@db/app" in message
    # A scheme dj-database-url knows, with the ENGINE named: the URL is parsed as usual.
    db = settings_from_url("cockroach://app@db:26257/app?pool_size=3", ENGINE="my.backend")
    assert (db["ENGINE"], db["PORT"], db["POOL_OPTIONS"]) == ("my.backend", 26257, {"POOL_SIZE": 3})
    assert "not a database URL" in refused("db.example:5432/app")


# -- the query string ----------------------------------------------------------------


def test_pool_options_come_from_the_query_string_with_their_types() -> None:
    db = settings_from_url(
        PG + "?pool_size=10&max_overflow=0&pre_ping=true&timeout=5&recycle=none"
        "&pre_ping_interval=0.25&reset_on_return=DISCARD+ALL&echo=debug&use_lifo=False"
        "&LEAK_TIMEOUT=2.5e1&min_idle=0&connect_timeout=3"
    )
    assert db["POOL_OPTIONS"] == {
        "POOL_SIZE": 10,
        "MAX_OVERFLOW": 0,
        "PRE_PING": True,
        "TIMEOUT": 5,
        "RECYCLE": None,
        "PRE_PING_INTERVAL": 0.25,
        "RESET_ON_RETURN": "DISCARD ALL",
        "ECHO": "debug",
        "USE_LIFO": False,
        "LEAK_TIMEOUT": 25.0,
        "MIN_IDLE": 0,
        "CONNECT_TIMEOUT": 3,
    }
    options = parse_pool_options("default", db)
    assert (options.pool_size, options.max_overflow, options.timeout) == (10, 0, 5.0)
    assert (options.recycle, options.reset_query, options.leak_timeout) == (-1.0, "DISCARD ALL", 25)
    assert "OPTIONS" not in db  # none of them reaches the driver


def test_every_option_conf_knows_is_taken_from_the_url() -> None:
    """No POOL_OPTIONS key would reach the driver: each is ours, accepted or refused."""
    for key in conf.VALID_KEYS:
        name = key.lower()
        try:
            db = settings_from_url(f"postgres://u@h/d?{name}=x")
        except ImproperlyConfigured as exc:
            # Refused alone (naming the parameter), or with the whole settings.
            named = (f"query parameter {name}=x is", f"['POOL_OPTIONS'][{key!r}]")
            assert any(text in str(exc) for text in named), key
        else:
            assert db["POOL_OPTIONS"] == {key: "x"} and "OPTIONS" not in db, key


def test_option_names_are_read_from_conf_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """An option added to conf.py later (say PASSWORD_PROVIDER) works in URLs at once."""

    def parse_colour(path: str, value: object) -> str:
        if value not in ("red", "blue"):
            raise ImproperlyConfigured(f"{path} must be 'red' or 'blue', got {value!r}.")
        return str(value)

    extended = make_dataclass(
        "PoolOptions", [("colour", str, "red")], bases=(conf.PoolOptions,), frozen=True
    )
    monkeypatch.setitem(conf._PARSERS, "COLOUR", parse_colour)
    monkeypatch.setattr(conf, "VALID_KEYS", (*conf.VALID_KEYS, "COLOUR"))
    monkeypatch.setattr(conf, "PoolOptions", extended)
    db = settings_from_url("postgres://u@h/d?colour=blue&pool_size=2")
    assert db["POOL_OPTIONS"] == {"COLOUR": "blue", "POOL_SIZE": 2}
    message = refused("postgres://u@h/d?colour=green")
    assert "query parameter colour=green is refused" in message
    assert "['POOL_OPTIONS']['COLOUR'] must be 'red' or 'blue'" in message
    assert "did you mean colour?" in refused("postgres://u@h/d?colur=blue")


def test_backend_selects_the_generic_engine_and_password_provider_is_a_dotted_path() -> None:
    db = settings_from_url(f"{PG}?backend=django_tenants.postgresql_backend&pool_size=2")
    assert db["ENGINE"] == GENERIC
    assert db["POOL_OPTIONS"] == {"BACKEND": "django_tenants.postgresql_backend", "POOL_SIZE": 2}
    # An ENGINE named by keyword is kept, and conf.py says BACKEND does not fit it.
    message = refused(f"{PG}?backend=django_tenants.postgresql_backend", ENGINE=OURS + "postgis")
    assert f"['BACKEND'] is only read with ENGINE {GENERIC!r}" in message
    db = settings_from_url(f"{PG}?password_provider=os.getcwd")
    assert db["POOL_OPTIONS"] == {"PASSWORD_PROVIDER": "os.getcwd"}
    message = refused(f"{PG}?password_provider=os.no_such_function")
    assert "query parameter password_provider=os.no_such_function is refused" in message
    assert "cannot be imported" in message


def test_other_parameters_go_to_options_as_dj_database_url_puts_them() -> None:
    driver = "?sslmode=require&application_name=web%201&keepalives=1&currentSchema=tenant"
    db = settings_from_url(PG + driver + "&pool_size=4")
    # Exactly dj-database-url's OPTIONS (currentSchema becomes libpq's options in 3.x).
    assert db["OPTIONS"] == dj_database_url.parse(PG + driver)["OPTIONS"]
    plain = {key: db["OPTIONS"][key] for key in ("sslmode", "application_name", "keepalives")}
    assert plain == {"sslmode": "require", "application_name": "web 1", "keepalives": 1}
    mysql = settings_from_url("mariadb://root@db/app?ssl-ca=/ca.pem&charset=utf8mb4&pool_size=2")
    assert mysql["OPTIONS"] == {"ssl": {"ca": "/ca.pem"}, "charset": "utf8mb4"}


def test_conn_health_checks_and_conn_max_age() -> None:
    assert settings_from_url(PG + "?conn_health_checks=true")["CONN_HEALTH_CHECKS"] is True
    assert settings_from_url(PG, CONN_HEALTH_CHECKS=True)["CONN_HEALTH_CHECKS"] is True
    assert settings_from_url(PG + "?conn_max_age=0")["CONN_MAX_AGE"] == 0
    message = refused(PG + "?conn_health_checks=yes")
    assert "conn_health_checks=yes is refused" in message and "true or false" in message
    message = refused(PG + "?conn_max_age=600")
    assert "query parameter conn_max_age=600 is refused" in message
    assert "['CONN_MAX_AGE'] must be 0 with django_sapool, got 600" in message
    message = refused(PG, CONN_MAX_AGE=None)
    assert "['CONN_MAX_AGE'] must be 0 with django_sapool, got None" in message
    assert "made by settings_from_url()" in message


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pool_size=ten", "['POOL_OPTIONS']['POOL_SIZE'] must be an int >= 1, got 'ten' (str)"),
        ("pool_size=2.5", "['POOL_OPTIONS']['POOL_SIZE'] must be an int >= 1, got 2.5 (float)"),
        ("pre_ping=1", "['POOL_OPTIONS']['PRE_PING'] must be True or False, got 1 (int)"),
        ("timeout=-1", "['POOL_OPTIONS']['TIMEOUT'] must be a number of seconds >= 0"),
        ("reset_on_return=rolback", "['POOL_OPTIONS']['RESET_ON_RETURN'] must be 'rollback'"),
        ("idle_timeout=", "['POOL_OPTIONS']['IDLE_TIMEOUT'] must be a number of seconds > 0"),
    ],
)
def test_a_bad_value_names_its_query_parameter(query: str, expected: str) -> None:
    message = refused(f"{PG}?sslmode=require&{query}")
    name, _, value = query.partition("=")
    assert f"the query parameter {name}={value} is refused" in message
    assert f"settings.DATABASES['default']{expected}" in message
    assert f"Change {name} in the URL" in message
    assert f"postgres://app:{MASK}@db.example:5432/app?sslmode=require&{query}" in message


def test_the_alias_is_named() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"DATABASES\['replica'\]\['POOL_OPTIONS'\]"):
        settings_from_url(PG + "?pool_size=0", alias="replica")


def test_options_valid_together_are_not_checked_against_the_defaults() -> None:
    # MIN_IDLE=20 exceeds the default POOL_SIZE (10), not this URL's.
    settings = settings_from_url(PG + "?pool_size=30&min_idle=20")
    assert settings["POOL_OPTIONS"] == {"POOL_SIZE": 30, "MIN_IDLE": 20}


def test_options_that_conflict_only_together_are_refused_after_each_alone() -> None:
    message = refused(PG + "?pool_size=2&min_idle=5")
    assert "['MIN_IDLE'] must not exceed POOL_SIZE (2)" in message
    assert f"made by settings_from_url() from 'postgres://app:{MASK}@" in message


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("pool_sise", "pool_size"),
        ("poolsize", "pool_size"),
        ("max_overlow", "max_overflow"),
        ("timout", "timeout"),
        ("pre_pign", "pre_ping"),
        ("conn_health_check", "conn_health_checks"),
    ],
)
def test_a_misspelt_option_is_refused_not_sent_to_the_driver(typo: str, meant: str) -> None:
    message = refused(f"{PG}?{typo}=10")
    assert f"the query parameter {typo} is no pool option; did you mean {meant}?" in message
    assert f"OPTIONS={{'{typo}': ...}}" in message  # the way to pass it to a driver anyway


def test_driver_options_are_not_taken_for_misspellings() -> None:
    libpq = "keepalives_idle read_timeout write_timeout sslpassword target_session_attrs"
    others = "init_command isolation_level charset transaction_mode ssl_mode"
    query = "&".join(f"{name}=1" for name in f"{libpq} {others}".split())
    assert len(settings_from_url(f"{PG}?{query}")["OPTIONS"]) == 10


def test_a_parameter_given_twice_is_refused() -> None:
    message = refused(PG + "?pool_size=1&sslmode=require&POOL_SIZE=2")
    assert "gives POOL_SIZE twice (pool_size=1 and POOL_SIZE=2): keep one" in message


def test_a_driver_parameter_given_twice_is_refused() -> None:
    """dj-database-url made a list of both, which reached the driver at connect.

    libpq: invalid sslmode value "['disable', 'prefer']"; mysqlclient: "connect()
    argument 20 must be str, not list"; application_name became "['a', 'b']".
    """
    message = refused(PG + "?sslmode=disable&application_name=a&sslmode=prefer")
    assert "gives sslmode twice (sslmode=disable and sslmode=prefer): keep one" in message
    message = refused(PG + "?password=first-secret&password=second-secret")
    assert "gives password twice (password=******** and password=********)" in message
    assert "secret" not in message


def test_a_url_with_several_hosts_says_how_to_give_them() -> None:
    message = refused("postgres://app:pw@db1:5432,db2:5433/app")
    assert "names several hosts, which dj-database-url cannot read" in message
    assert "settings_from_url(url, HOST='db1,db2', PORT='5432,5433')" in message
    assert ":pw@" not in message
    settings = settings_from_url(
        "postgres://app:pw@db1:5432/app", HOST="db1,db2", PORT="5432,5433"
    )
    assert (settings["HOST"], settings["PORT"]) == ("db1,db2", "5432,5433")


@pytest.mark.parametrize(
    ("url", "name", "driver_meaning"),
    [
        ("sqlite:////tmp/x.db?timeout=20", "timeout", "sqlite3's own timeout"),
        ("spatialite:////tmp/x.db?timeout=20", "timeout", "sqlite3's own timeout"),
        (PG + "?tcp_user_timeout=30000", "tcp_user_timeout", "libpq's own tcp_user_timeout"),
    ],
)
def test_names_the_driver_reads_otherwise_are_refused(
    url: str, name: str, driver_meaning: str
) -> None:
    message = refused(url)
    assert f"the query parameter {name}=" in message and "is ambiguous" in message
    assert driver_meaning in message
    assert f"POOL_OPTIONS={{'{name.upper()}': ...}}" in message
    assert f"OPTIONS={{'{name}': ...}}" in message
    # Where the driver has no such option, the name is the pool's.
    assert settings_from_url("mysql://u@h/d?timeout=20")["POOL_OPTIONS"] == {"TIMEOUT": 20}
    assert settings_from_url("mysql://u@h/d?tcp_user_timeout=5")["POOL_OPTIONS"] == {
        "TCP_USER_TIMEOUT": 5
    }


def test_djangos_own_pool_in_the_url_is_refused() -> None:
    message = refused(PG + "?pool=true")
    assert "['OPTIONS']['pool'] enables Django's own connection pool" in message


# -- keyword arguments -----------------------------------------------------------------


def test_keywords_are_settings_merged_with_the_url() -> None:
    db = settings_from_url(
        PG + "?pool_size=4&sslmode=require",
        OPTIONS={"application_name": "web"},
        POOL_OPTIONS={"MAX_OVERFLOW": 0},
        TEST={"NAME": "test_app"},
        NAME="other",
        CONN_HEALTH_CHECKS=True,
    )
    assert db["OPTIONS"] == {"sslmode": "require", "application_name": "web"}
    assert db["POOL_OPTIONS"] == {"POOL_SIZE": 4, "MAX_OVERFLOW": 0}
    assert (db["TEST"], db["NAME"], db["CONN_HEALTH_CHECKS"]) == (
        {"NAME": "test_app"},
        "other",
        True,
    )
    # Keyword POOL_OPTIONS alone are validated too.
    assert "['POOL_OPTIONS']['POOL_SIZE'] must be an int" in refused(
        PG, POOL_OPTIONS={"POOL_SIZE": "4"}
    )


def test_a_setting_given_by_both_is_refused() -> None:
    message = refused(PG + "?pool_size=4", POOL_OPTIONS={"POOL_SIZE": 8})
    assert "POOL_OPTIONS['POOL_SIZE'] is set both by" in message and "(?pool_size=4)" in message
    message = refused(PG + "?sslmode=require", OPTIONS={"sslmode": "disable"})
    assert "OPTIONS['sslmode'] is set both by" in message
    message = refused(PG + "?conn_health_checks=false", CONN_HEALTH_CHECKS=True)
    assert "CONN_HEALTH_CHECKS is set both by" in message


def test_keywords_must_be_upper_case_settings() -> None:
    message = refused(PG, conn_health_checks=True)
    assert "in upper case (CONN_HEALTH_CHECKS=...)" in message
    assert "must be a dict, got str" in refused(PG, OPTIONS="sslmode=require")


# -- masking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgres://app:{PASSWORD}@db:5432/app", f"postgres://app:{MASK}@db:5432/app"),
        ("postgres://app@db/app", "postgres://app@db/app"),
        (f"postgres://app:{PASSWORD}@db/app?a=x@y", f"postgres://app:{MASK}@db/app?a=x@y"),
        (
            f"postgres://db/app?sslpassword={PASSWORD}&x=1",
            f"postgres://db/app?sslpassword={MASK}&x=1",
        ),
        # Unquoted "@", "/", "?" or "#" in a password: mask up to the last "@".
        (f"postgres://app:{PASSWORD}@x@db/app", f"postgres://{MASK}@db/app"),
        (f"postgres://app:{PASSWORD}/x@db/app", f"postgres://{MASK}@db/app"),
        (f"postgres://app:{PASSWORD}?x@db/app", f"postgres://{MASK}@db/app"),
        (f"postgres://app:{PASSWORD}#x@db/app", f"postgres://{MASK}@db/app"),
        (f"postgres://app:{PASSWORD}@[db/app", f"postgres://{MASK}@[db/app"),  # unparsable
        (f"host=db password={PASSWORD}", f"host=db password={MASK}"),
        # A "/" missing, or both, or the scheme: still no password shown.
        (f"mysql:/app:{PASSWORD}@db:3306/app", f"{MASK}@db:3306/app"),
        (f"postgres:app:{PASSWORD}@db/app", f"{MASK}@db/app"),
        (f"app:{PASSWORD}@db:5432/app", f"{MASK}@db:5432/app"),
        # A "?" ends the netloc inside the password (Azure's user@server form):
        # what follows is no query, the host before it no host.
        (
            f"postgres://app@srv:{PASSWORD}?t=W@srv.example.com:5432/app",
            f"postgres://{MASK}@srv.example.com:5432/app",
        ),
        (f"postgres://app:{PASSWORD}@?c=W@[::1]/app", f"postgres://{MASK}@[::1]/app"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        f"postgres://app:{PASSWORD}@db/app?pool_size=x",
        f"postgres://app:{PASSWORD}@db/app?pool_sise=1",
        f"postgres://app:{PASSWORD}@db/app?pool_size=1&pool_size=2",
        f"postgres://app:{PASSWORD}@db/app?conn_max_age=60",
        f"postgres://app:{PASSWORD}@db/app?pool=true",
        f"postgres://app:{PASSWORD}@db/app?tcp_user_timeout=1",
        f"postgres://app:{PASSWORD}@db:99999/app",
        f"postgres://app:{PASSWORD}@[db/app",
        f"postgres://app:{PASSWORD}/x@db/app?pool_size=0",
        f"postgres://app:{PASSWORD}#x@db/app?pool_size=0",
        f"cockroach://app:{PASSWORD}@db/app",
        f"host=db password={PASSWORD}",
    ],
)
def test_no_message_shows_the_password(url: str) -> None:
    message = refused(url)  # refused() asserts that the password is not in it
    assert MASK in message


# -- dj-database-url missing; the public name ---------------------------------------------


def test_without_dj_database_url_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "dj_database_url", None)
    with pytest.raises(ImportError, match=r"pip install 'django-sapool\[url\]'"):
        settings_from_url(PG)


def test_exported_lazily() -> None:
    assert django_sapool.settings_from_url(PG + "?pool_size=3")["POOL_OPTIONS"] == {"POOL_SIZE": 3}
    assert "settings_from_url" in django_sapool.__all__
    code = (
        "import sys, django_sapool; "
        "assert not {'dj_database_url', 'django_sapool.dburl', 'django.db'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_loads_through_connection_handler(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/app.sqlite3?pool_size=3&max_overflow=0"
    db = settings_from_url(url, POOL_OPTIONS={"TIMEOUT": 2}, OPTIONS={"timeout": 7})
    handler = ConnectionHandler({"default": db})
    wrapper = handler["default"]
    assert wrapper.settings_dict["NAME"] == f"{tmp_path}/app.sqlite3"
    options = parse_pool_options("default", wrapper.settings_dict)
    assert (options.pool_size, options.max_overflow, options.timeout) == (3, 0, 2.0)
    assert wrapper.get_connection_params()["timeout"] == 7  # sqlite3's own


# -- the recipes without our helper: what dj-database-url and django-environ do ----------


def test_dj_database_url_recipe() -> None:
    engine = OURS + "postgresql"
    db = {**dj_database_url.parse(PG, engine=engine), "POOL_OPTIONS": {"POOL_SIZE": 4}}
    assert (db["ENGINE"], db["CONN_MAX_AGE"]) == (engine, 0)
    assert parse_pool_options("default", db).pool_size == 4
    # Its query parameters all go to OPTIONS, which the driver receives: pool options
    # there would break the connect. Hence settings_from_url() or POOL_OPTIONS.
    assert dj_database_url.parse(PG + "?pool_size=4", engine=engine)["OPTIONS"] == {"pool_size": 4}
    # Its conn_max_age= is refused by our settings check, as everywhere.
    with pytest.raises(ImproperlyConfigured, match="CONN_MAX_AGE'] must be 0"):
        parse_pool_options("default", dj_database_url.parse(PG, engine=engine, conn_max_age=600))


def test_django_environ_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = OURS + "mysql"
    monkeypatch.setenv("DATABASE_URL", f"mysql://app:{PASSWORD}@db:3306/app?charset=utf8mb4")
    db = {**environ.Env().db_url(engine=engine), "POOL_OPTIONS": {"POOL_SIZE": 4}}
    assert (db["ENGINE"], db["OPTIONS"]) == (engine, {"charset": "utf8mb4"})
    assert parse_pool_options("default", db).pool_size == 4
    # Unknown query parameters stay in OPTIONS for the driver, as with dj-database-url;
    # its own five Django settings (conn_max_age, ...) are moved out of them.
    parsed = environ.Env.db_url_config(f"{PG}?pool_size=4&conn_max_age=600", engine=engine)
    assert parsed["OPTIONS"] == {"pool_size": 4}
    with pytest.raises(ImproperlyConfigured, match="CONN_MAX_AGE'] must be 0"):
        parse_pool_options("default", parsed)


def test_module_reads_no_option_list_of_its_own() -> None:
    """The option names live in conf.py only (dburl.py lists driver names, not ours)."""
    source = dburl.__file__
    with open(source, encoding="utf-8") as handle:
        text = handle.read()
    for key in conf.VALID_KEYS:
        # Named for what they do: two driver clashes, and BACKEND selects the ENGINE.
        if key not in ("TIMEOUT", "TCP_USER_TIMEOUT", "BACKEND"):
            assert f'"{key}"' not in text, key
