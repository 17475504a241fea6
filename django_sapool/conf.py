"""Parse and validate ``DATABASES[alias]["POOL_OPTIONS"]`` into a frozen object."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .backends import GENERIC

if TYPE_CHECKING:
    from .drivers import DriverOps

# Reset modes that are not SQL statements.
RESET_ROLLBACK = "rollback"
RESET_COMMIT = "commit"
#: The vendor's full session reset: DISCARD ALL, COM_RESET_CONNECTION.
RESET_SESSION = "reset"

#: LEND: when a checked-out connection goes back to the pool (lend.py).
LEND_REQUEST = "request"  # at the request's end (Django's close_old_connections)
LEND_TRANSACTION = "transaction"  # after each statement or outermost atomic() block
LEND_MODES = (LEND_REQUEST, LEND_TRANSACTION)


@dataclass(frozen=True)
class PoolOptions:
    """Validated pool settings for one database alias."""

    pool_size: int = 10
    max_overflow: int = 10
    timeout: float = 30.0
    recycle: float = 1800.0
    pre_ping: bool = True
    pre_ping_interval: float = 0.5
    reset_on_return: str | None = RESET_ROLLBACK
    use_lifo: bool = True
    echo: bool | str = False
    idle_timeout: float | None = 600.0
    min_idle: int = 1
    leak_timeout: float | None = None
    recycle_jitter: float = 0.1
    ping_timeout: float | None = 5.0
    connect_timeout: float | None = 10.0
    tcp_keepalive: float | None = 10.0
    tcp_user_timeout: float | None = 10.0
    #: The ENGINE that ENGINE 'django_sapool.backends.pooled' pools (wrapping.py).
    backend: str | None = None
    #: Dotted path of provider(settings_dict) -> password, called per new connection.
    password_provider: str | None = None
    #: "request" (held until the request ends) or "transaction" (lend.py).
    lend: str = LEND_REQUEST

    @property
    def reset_query(self) -> str | None:
        """Return the SQL statement to run on return, if RESET_ON_RETURN is one."""
        if self.reset_on_return in (None, RESET_ROLLBACK, RESET_COMMIT, RESET_SESSION):
            return None
        return self.reset_on_return

    def as_settings(self) -> dict[str, Any]:
        """Return the options under their POOL_OPTIONS names (for display)."""
        return {f.name.upper(): getattr(self, f.name) for f in fields(self)}


def _path(alias: str, key: str | None = None) -> str:
    path = f"settings.DATABASES[{alias!r}]['POOL_OPTIONS']"
    return f"{path}[{key!r}]" if key else path


def _got(value: object) -> str:
    return f"got {value!r} ({type(value).__name__})"


def _is_number(value: object) -> bool:
    """A finite int or float; bools, strings, NaN and infinity are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _int_at_least(minimum: int) -> Callable[[str, object], int]:
    def parse(path: str, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ImproperlyConfigured(f"{path} must be an int >= {minimum}, {_got(value)}.")
        return value

    return parse


def _max_overflow(path: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
        raise ImproperlyConfigured(
            f"{path} must be an int >= 0 (or -1 for no limit), {_got(value)}."
        )
    return value


def _seconds(path: str, value: object) -> float:
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise ImproperlyConfigured(f"{path} must be a number of seconds >= 0, {_got(value)}.")
    return float(value)  # type: ignore[arg-type]


def _recycle(path: str, value: object) -> float:
    if value is None or value == -1 and not isinstance(value, bool):
        return -1.0
    if not _is_number(value) or value <= 0:  # type: ignore[operator]
        raise ImproperlyConfigured(
            f"{path} must be a number of seconds > 0, or None/-1 to never recycle, {_got(value)}."
        )
    return float(value)  # type: ignore[arg-type]


def _optional_seconds(path: str, value: object) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or value <= 0:  # type: ignore[operator]
        raise ImproperlyConfigured(
            f"{path} must be a number of seconds > 0, or None to turn it off, {_got(value)}."
        )
    return float(value)  # type: ignore[arg-type]


def _fraction(path: str, value: object) -> float:
    if not _is_number(value) or not 0 <= value <= 0.5:  # type: ignore[operator]
        raise ImproperlyConfigured(
            f"{path} must be a number from 0 to 0.5 (the fraction of RECYCLE by which "
            f"a connection may be recycled early; 0 turns jitter off), {_got(value)}."
        )
    return float(value)  # type: ignore[arg-type]


def _bool(path: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"{path} must be True or False, {_got(value)}.")
    return value


def _reset(path: str, value: object) -> str | None:
    if value is None or value is False:
        return None
    if value is True:
        return RESET_ROLLBACK
    if isinstance(value, str):
        word = value.strip()
        if word.lower() in (RESET_ROLLBACK, RESET_COMMIT, RESET_SESSION):
            return word.lower()
        # A statement such as "DISCARD ALL" always has a space; a lone word is
        # almost certainly a misspelt mode, which must not be sent as SQL.
        if word and any(ch.isspace() for ch in word):
            return word
    raise ImproperlyConfigured(
        f"{path} must be 'rollback', 'commit', 'reset' (the server's full session "
        f"reset), None, or an SQL statement to run on return such as 'DISCARD ALL', "
        f"{_got(value)}."
    )


def _echo(path: str, value: object) -> bool | str:
    if isinstance(value, bool) or value == "debug":
        return value  # type: ignore[return-value]
    raise ImproperlyConfigured(f"{path} must be True, False or 'debug', {_got(value)}.")


def _is_dotted_path(value: object) -> bool:
    return isinstance(value, str) and all(part.isidentifier() for part in value.split("."))


def _backend(path: str, value: object) -> str | None:
    if value is None:  # the default, written out
        return None
    # By name only: wrapping.py imports it when the alias's wrapper is built,
    # and refuses a module that is no Django backend, or one we cannot pool.
    if not _is_dotted_path(value):
        raise ImproperlyConfigured(
            f"{path} must be the dotted path of a Django database backend (what its "
            f"ENGINE would be without django_sapool), such as "
            f"'django_tenants.postgresql_backend', {_got(value)}."
        )
    return value  # type: ignore[return-value]


def _password_provider(path: str, value: object) -> str | None:
    if value is None:  # the default, written out (an unset environment variable, say)
        return None
    if not _is_dotted_path(value) or "." not in value:  # type: ignore[operator]
        raise ImproperlyConfigured(
            f"{path} must be the dotted path of a callable, such as "
            f"'myproject.secrets.db_password', called with the alias's settings dict "
            f"for every new server connection and returning its password, {_got(value)}."
        )
    try:
        provider = import_string(value)  # type: ignore[arg-type]
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"{path} = {value!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(provider):
        raise ImproperlyConfigured(
            f"{path} = {value!r} is a {type(provider).__name__}, not a callable: name a "
            f"function that takes the alias's settings dict and returns the password."
        )
    return value  # type: ignore[return-value]


def _lend(path: str, value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in LEND_MODES:
        return value.strip().lower()
    raise ImproperlyConfigured(
        f"{path} must be 'request' (a connection is held from the first query until "
        f"the request ends) or 'transaction' (returned after each statement outside "
        f"atomic(), and at the end of each outermost atomic() block), {_got(value)}."
    )


_PARSERS: dict[str, Callable[[str, object], Any]] = {
    "POOL_SIZE": _int_at_least(1),
    "MAX_OVERFLOW": _max_overflow,
    "TIMEOUT": _seconds,
    "RECYCLE": _recycle,
    "PRE_PING": _bool,
    "PRE_PING_INTERVAL": _seconds,
    "RESET_ON_RETURN": _reset,
    "USE_LIFO": _bool,
    "ECHO": _echo,
    "IDLE_TIMEOUT": _optional_seconds,
    "MIN_IDLE": _int_at_least(0),
    "LEAK_TIMEOUT": _optional_seconds,
    "RECYCLE_JITTER": _fraction,
    "PING_TIMEOUT": _optional_seconds,
    "CONNECT_TIMEOUT": _optional_seconds,
    "TCP_KEEPALIVE": _optional_seconds,
    "TCP_USER_TIMEOUT": _optional_seconds,
    "BACKEND": _backend,
    "PASSWORD_PROVIDER": _password_provider,
    "LEND": _lend,
}

VALID_KEYS = tuple(_PARSERS)


def parse_pool_options(alias: str, settings_dict: Mapping[str, Any]) -> PoolOptions:
    """Validate the pool-related settings of one alias; raise ImproperlyConfigured."""
    check_connection_settings(alias, settings_dict)
    options = read_pool_options(alias, settings_dict)
    error = backend_error(alias, settings_dict)
    if error is not None:
        raise ImproperlyConfigured(error)
    return options


def read_pool_options(alias: str, settings_dict: Mapping[str, Any]) -> PoolOptions:
    """Validate POOL_OPTIONS alone (not CONN_MAX_AGE or OPTIONS['pool'])."""
    raw = settings_dict.get("POOL_OPTIONS")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"{_path(alias)} must be a dict, {_got(raw)}.")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        values[key.lower()] = read_pool_option(alias, key, value)  # refuses a non-str key first
    if "PRE_PING" not in raw and settings_dict.get("CONN_HEALTH_CHECKS"):
        values["pre_ping"] = True
    options = PoolOptions(**values)
    if options.min_idle > options.pool_size:
        raise ImproperlyConfigured(
            f"{_path(alias, 'MIN_IDLE')} must not exceed POOL_SIZE ({options.pool_size}): "
            f"at most POOL_SIZE idle connections are kept, got {options.min_idle}."
        )
    return options


def read_pool_option(alias: str, key: object, value: object) -> Any:
    """Validate one POOL_OPTIONS key and its value alone; return the value to use.

    What only the keys together can break (MIN_IDLE above POOL_SIZE) is
    ``read_pool_options()``'s to find.
    """
    parser = _PARSERS.get(key) if isinstance(key, str) else None
    if parser is None:
        hint = difflib.get_close_matches(str(key).upper(), VALID_KEYS, n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ImproperlyConfigured(
            f"{_path(alias)} has an unknown key {key!r}.{suggestion} "
            f"Valid keys: {', '.join(VALID_KEYS)}."
        )
    return parser(_path(alias, key), value)  # type: ignore[arg-type]


def conn_max_age_error(alias: str, settings_dict: Mapping[str, Any]) -> str | None:
    """Return why CONN_MAX_AGE is refused, or None when it is 0."""
    max_age = settings_dict.get("CONN_MAX_AGE", 0)
    if max_age == 0:
        return None
    return (
        f"settings.DATABASES[{alias!r}]['CONN_MAX_AGE'] must be 0 with django_sapool, "
        f"got {max_age!r}: the pool keeps connections open, and a persistent "
        f"connection would pin one pooled connection to each thread. Remove "
        f"CONN_MAX_AGE (or set it to 0) and size the pool with POOL_OPTIONS."
    )


def reset_error(alias: str, options: PoolOptions, driver: DriverOps) -> str | None:
    """Return why RESET_ON_RETURN 'reset' is refused with ``driver``, or None.

    Read with the alias's backend (``aliases.unsupported``): the same word is
    DISCARD ALL on PostgreSQL and COM_RESET_CONNECTION on MySQL, and nothing a
    driver without one can do.
    """
    if options.reset_on_return != RESET_SESSION or driver.no_session_reset is None:
        return None
    return (
        f"{_path(alias, 'RESET_ON_RETURN')} is 'reset' (the server's full session reset), "
        f"which the {driver.name} driver cannot do: {driver.no_session_reset}"
    )


def backend_error(alias: str, settings_dict: Mapping[str, Any]) -> str | None:
    """Return why POOL_OPTIONS['BACKEND'] is missing or misplaced, or None.

    The generic ENGINE needs it (it says what to pool); any other ENGINE names
    its backend itself, so BACKEND there would be silently ignored.
    """
    raw = settings_dict.get("POOL_OPTIONS")
    backend = raw.get("BACKEND") if isinstance(raw, Mapping) else None
    engine = settings_dict.get("ENGINE")
    if engine == GENERIC and backend is None:
        return (
            f"{_path(alias, 'BACKEND')} is required with ENGINE {GENERIC!r}: name the "
            f"Django backend to pool (what ENGINE would be without django_sapool), such "
            f"as 'django_tenants.postgresql_backend'."
        )
    if engine != GENERIC and backend is not None:
        return (
            f"{_path(alias, 'BACKEND')} is only read with ENGINE {GENERIC!r}; "
            f"ENGINE {engine!r} names its backend itself. Set ENGINE to {GENERIC!r} "
            f"to pool {backend!r}, or remove BACKEND."
        )
    return None


def django_pool_error(alias: str, settings_dict: Mapping[str, Any]) -> str | None:
    """Return why OPTIONS['pool'] is refused, or None when it is not set."""
    options = settings_dict.get("OPTIONS") or {}
    if not (isinstance(options, Mapping) and options.get("pool")):
        return None
    return (
        f"settings.DATABASES[{alias!r}]['OPTIONS']['pool'] enables Django's own "
        f"connection pool, which cannot be combined with django_sapool. Remove "
        f"OPTIONS['pool'] and put its sizes in "
        f"settings.DATABASES[{alias!r}]['POOL_OPTIONS']."
    )


def check_connection_settings(alias: str, settings_dict: Mapping[str, Any]) -> None:
    """Refuse Django settings that defeat or fight the pool."""
    # Django runs this at every connect(), i.e. every checkout: test inline, and
    # build a message only when there is something to refuse.
    if settings_dict.get("CONN_MAX_AGE", 0) != 0:
        raise ImproperlyConfigured(conn_max_age_error(alias, settings_dict))
    options = settings_dict.get("OPTIONS")
    if not options:
        return
    # type() first: isinstance() against the Mapping ABC costs a microsecond.
    if (type(options) is dict or isinstance(options, Mapping)) and options.get("pool"):
        raise ImproperlyConfigured(django_pool_error(alias, settings_dict))
