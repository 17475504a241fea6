"""POOL_OPTIONS parsing: defaults, every invalid value, and the settings we refuse."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_sapool.conf import PoolOptions, parse_pool_options

PATH = "settings.DATABASES['default']['POOL_OPTIONS']"


def parse(pool_options: Any = None, **settings: Any) -> PoolOptions:
    settings_dict = {"CONN_MAX_AGE": 0, "OPTIONS": {}, **settings}
    if pool_options is not None:
        settings_dict["POOL_OPTIONS"] = pool_options
    return parse_pool_options("default", settings_dict)


def test_defaults_without_pool_options() -> None:
    options = parse()
    assert options == PoolOptions()
    assert (options.pool_size, options.max_overflow, options.timeout) == (10, 10, 30.0)
    assert options.pre_ping is True
    assert options.reset_on_return == "rollback"
    assert options.reset_query is None
    assert (options.use_lifo, options.idle_timeout, options.min_idle) == (True, 600.0, 1)
    assert (options.leak_timeout, options.recycle_jitter) == (None, 0.1)
    assert (options.ping_timeout, options.connect_timeout) == (5.0, 10.0)
    assert (options.tcp_keepalive, options.tcp_user_timeout) == (10.0, 10.0)


def test_every_key_is_accepted() -> None:
    options = parse(
        {
            "POOL_SIZE": 4,
            "MAX_OVERFLOW": 0,
            "TIMEOUT": 0.5,
            "RECYCLE": 900,
            "PRE_PING": False,
            "PRE_PING_INTERVAL": 0,
            "RESET_ON_RETURN": "DISCARD ALL",
            "USE_LIFO": False,
            "ECHO": "debug",
            "IDLE_TIMEOUT": 60,
            "MIN_IDLE": 2,
            "LEAK_TIMEOUT": 30,
            "RECYCLE_JITTER": 0,
            "PING_TIMEOUT": 2,
            "CONNECT_TIMEOUT": 3.5,
            "TCP_KEEPALIVE": None,
            "TCP_USER_TIMEOUT": 30,
        }
    )
    assert options == PoolOptions(
        pool_size=4,
        max_overflow=0,
        timeout=0.5,
        recycle=900.0,
        pre_ping=False,
        pre_ping_interval=0.0,
        reset_on_return="DISCARD ALL",
        use_lifo=False,
        echo="debug",
        idle_timeout=60.0,
        min_idle=2,
        leak_timeout=30.0,
        recycle_jitter=0.0,
        ping_timeout=2.0,
        connect_timeout=3.5,
        tcp_keepalive=None,
        tcp_user_timeout=30.0,
    )
    assert options.reset_query == "DISCARD ALL"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rollback", "rollback"),
        ("COMMIT", "commit"),
        (None, None),
        (True, "rollback"),
        (False, None),
        ("  RESET ALL ", "RESET ALL"),
        ("Reset", "reset"),
    ],
)
def test_reset_on_return_values(value: Any, expected: str | None) -> None:
    assert parse({"RESET_ON_RETURN": value}).reset_on_return == expected


@pytest.mark.parametrize("value", [None, -1])
def test_recycle_can_be_disabled(value: Any) -> None:
    assert parse({"RECYCLE": value}).recycle == -1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("request", "request"), ("transaction", "transaction"), (" Transaction ", "transaction")],
)
def test_lend_values(value: str, expected: str) -> None:
    assert parse({"LEND": value}).lend == expected


def test_lend_defaults_to_request() -> None:
    assert parse().lend == "request"
    assert parse().as_settings()["LEND"] == "request"


@pytest.mark.parametrize("key", ["BACKEND", "PASSWORD_PROVIDER"])
def test_none_written_out_is_the_default(key: str) -> None:
    # "PASSWORD_PROVIDER": os.environ.get("DB_PASSWORD_PROVIDER") with the variable unset.
    assert getattr(parse({key: None}), key.lower()) is None
    assert parse({key: None}) == parse()


def test_max_overflow_minus_one_means_unlimited() -> None:
    assert parse({"MAX_OVERFLOW": -1}).max_overflow == -1


def test_conn_health_checks_imply_pre_ping_unless_set() -> None:
    assert parse({"PRE_PING": False}, CONN_HEALTH_CHECKS=True).pre_ping is False
    assert parse({}, CONN_HEALTH_CHECKS=True).pre_ping is True


RESET_MESSAGE = (
    "must be 'rollback', 'commit', 'reset' (the server's full session reset), None, "
    "or an SQL statement"
)

LEND_MESSAGE = (
    "must be 'request' (a connection is held from the first query until the request "
    "ends) or 'transaction' (returned after each statement outside atomic(), and at "
    "the end of each outermost atomic() block), "
)

INVALID = [
    ("POOL_SIZE", "10", "must be an int >= 1, got '10' (str)"),
    ("POOL_SIZE", 0, "must be an int >= 1, got 0 (int)"),
    ("POOL_SIZE", True, "must be an int >= 1, got True (bool)"),
    ("POOL_SIZE", 2.5, "must be an int >= 1, got 2.5 (float)"),
    ("MAX_OVERFLOW", -2, "must be an int >= 0 (or -1 for no limit), got -2 (int)"),
    ("MAX_OVERFLOW", "5", "must be an int >= 0 (or -1 for no limit), got '5' (str)"),
    ("TIMEOUT", -1, "must be a number of seconds >= 0, got -1 (int)"),
    ("TIMEOUT", "30", "must be a number of seconds >= 0, got '30' (str)"),
    ("TIMEOUT", None, "must be a number of seconds >= 0, got None (NoneType)"),
    ("RECYCLE", 0, "must be a number of seconds > 0, or None/-1 to never recycle, got 0"),
    ("RECYCLE", "900", "must be a number of seconds > 0, or None/-1 to never recycle"),
    ("RECYCLE", False, "must be a number of seconds > 0, or None/-1 to never recycle"),
    ("PRE_PING", "yes", "must be True or False, got 'yes' (str)"),
    ("PRE_PING", 1, "must be True or False, got 1 (int)"),
    ("PRE_PING_INTERVAL", -0.1, "must be a number of seconds >= 0, got -0.1 (float)"),
    ("RESET_ON_RETURN", "rolback", RESET_MESSAGE),
    ("RESET_ON_RETURN", "", RESET_MESSAGE),
    ("RESET_ON_RETURN", 1, RESET_MESSAGE),
    ("USE_LIFO", "true", "must be True or False, got 'true' (str)"),
    ("ECHO", "info", "must be True, False or 'debug', got 'info' (str)"),
    ("IDLE_TIMEOUT", 0, "must be a number of seconds > 0, or None to turn it off, got 0 (int)"),
    ("IDLE_TIMEOUT", "600", "must be a number of seconds > 0, or None to turn it off"),
    ("MIN_IDLE", -1, "must be an int >= 0, got -1 (int)"),
    ("MIN_IDLE", 11, "must not exceed POOL_SIZE (10): at most POOL_SIZE idle connections"),
    ("LEAK_TIMEOUT", -5, "must be a number of seconds > 0, or None to turn it off, got -5"),
    ("LEAK_TIMEOUT", True, "must be a number of seconds > 0, or None to turn it off"),
    ("RECYCLE_JITTER", 0.9, "must be a number from 0 to 0.5 (the fraction of RECYCLE"),
    ("RECYCLE_JITTER", float("nan"), "must be a number from 0 to 0.5"),
    ("TIMEOUT", float("inf"), "must be a number of seconds >= 0, got inf (float)"),
    ("PRE_PING_INTERVAL", float("nan"), "must be a number of seconds >= 0, got nan (float)"),
    ("PING_TIMEOUT", 0, "must be a number of seconds > 0, or None to turn it off, got 0 (int)"),
    ("CONNECT_TIMEOUT", "3", "must be a number of seconds > 0, or None to turn it off"),
    ("TCP_KEEPALIVE", -1, "must be a number of seconds > 0, or None to turn it off, got -1"),
    ("TCP_USER_TIMEOUT", float("inf"), "must be a number of seconds > 0, or None to turn it off"),
    ("LEND", "statement", LEND_MESSAGE + "got 'statement' (str)"),
    ("LEND", None, LEND_MESSAGE + "got None (NoneType)"),
    ("LEND", True, LEND_MESSAGE + "got True (bool)"),
    ("BACKEND", "django-tenants", "must be the dotted path of a Django database backend"),
    ("BACKEND", 3, "must be the dotted path of a Django database backend (what its ENGINE"),
    ("PASSWORD_PROVIDER", len, "must be the dotted path of a callable, such as"),
    ("PASSWORD_PROVIDER", "nosuch.module.f", "= 'nosuch.module.f' cannot be imported: "),
    ("PASSWORD_PROVIDER", "os.sep", "= 'os.sep' is a str, not a callable: name a function"),
]


@pytest.mark.parametrize(("key", "value", "message"), INVALID)
def test_invalid_values_name_the_exact_setting(key: str, value: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        parse({key: value})
    assert str(info.value).startswith(f"{PATH}[{key!r}] {message}")


def test_every_key_has_an_invalid_case() -> None:
    from django_sapool.conf import VALID_KEYS

    assert {key for key, _, _ in INVALID} == set(VALID_KEYS)


def test_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"unknown key 'POOL_SIZ'\. Did you mean 'POOL_SIZE'\?"
    ):
        parse({"POOL_SIZ": 3})


def test_lower_case_key_is_refused_with_the_upper_case_name() -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"unknown key 'pool_size'\. Did you mean 'POOL_SIZE'\?"
    ):
        parse({"pool_size": 3})


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"unknown key 'X'\. Valid keys: POOL_SIZE, "):
        parse({"X": 1})


def test_pool_options_must_be_a_dict() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        parse([("POOL_SIZE", 1)])
    assert str(info.value).startswith(f"{PATH} must be a dict, got [('POOL_SIZE', 1)] (list)")


@pytest.mark.parametrize("max_age", [60, None])
def test_persistent_connections_are_refused(max_age: Any) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        parse({}, CONN_MAX_AGE=max_age)
    assert str(info.value).startswith(
        f"settings.DATABASES['default']['CONN_MAX_AGE'] must be 0 with django_sapool, "
        f"got {max_age!r}"
    )


def test_djangos_own_pool_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"\['OPTIONS'\]\['pool'\] enables Django's own"):
        parse({}, OPTIONS={"pool": {"min_size": 2}})


def test_options_pool_false_is_fine() -> None:
    assert parse({}, OPTIONS={"pool": False}) == PoolOptions()
