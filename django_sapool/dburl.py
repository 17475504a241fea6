"""One alias's settings from a database URL, pool options in its query string.

``settings_from_url("postgres://app:pw@db/app?pool_size=10&max_overflow=0")`` returns
the dict for ``DATABASES[alias]``: ENGINE is our backend for the URL's scheme; a query
parameter named after a POOL_OPTIONS key (in lower case), or after CONN_MAX_AGE or
CONN_HEALTH_CHECKS, becomes that setting and is checked by ``conf.py`` exactly as
hand-written settings are; every other parameter goes to OPTIONS for the driver, as
dj-database-url puts it. ``?backend=<a Django backend>`` selects the generic ENGINE,
which pools that backend. dj-database-url parses the rest of the URL (the ``url``
extra); this module only splits the query string and names what went wrong.

Messages show the URL with its password masked, never the password.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from django.core.exceptions import ImproperlyConfigured

from . import conf
from .backends import BACKENDS, GENERIC, PREFIX

MASK = "********"

#: URL scheme -> (our ENGINE's last part, the scheme dj-database-url parses it as).
#: The schemes are dj-database-url's (and django-environ's psql), plus mariadb.
_SCHEMES: dict[str, tuple[str, str]] = {
    "postgres": ("postgresql", "postgres"),
    "postgresql": ("postgresql", "postgresql"),
    "pgsql": ("postgresql", "pgsql"),
    "psql": ("postgresql", "postgres"),
    "postgis": ("postgis", "postgis"),
    "mysql": ("mysql", "mysql"),
    "mysql2": ("mysql", "mysql2"),
    "mariadb": ("mysql", "mysql"),
    "mysqlgis": ("mysql_gis", "mysqlgis"),
    "sqlite": ("sqlite3", "sqlite"),
    "spatialite": ("spatialite", "spatialite"),
}

#: Django settings (not POOL_OPTIONS) that conf.py reads, so the URL may set them too.
DJANGO_KEYS = ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS")

#: Pool option names that a vendor's driver also takes, with another meaning: in a
#: URL they would be silently misread, so they are refused there (vendor -> key -> why).
_DRIVER_ALSO_TAKES: dict[str, dict[str, str]] = {
    "sqlite": {"TIMEOUT": "sqlite3's own timeout (seconds to wait for a locked database)"},
    "postgresql": {"TCP_USER_TIMEOUT": "libpq's own tcp_user_timeout (in milliseconds)"},
}

#: Query parameters whose values are secrets (libpq's sslpassword, ...).
_SECRET_NAME = re.compile(r"pass|secret|token", re.IGNORECASE)
#: A query parameter this close to an option name is taken for a misspelling of it
#: (0.85 flags pool_sise, max_overlow, timout; no libpq/MySQL/sqlite3 option is that close).
_TYPO_CUTOFF = 0.85


def settings_from_url(url: str, *, alias: str = "default", **overrides: Any) -> dict[str, Any]:
    """Return ``DATABASES[alias]`` for a database URL; raise ImproperlyConfigured.

    Keyword arguments are settings of the alias (``ENGINE``, ``TEST``,
    ``OPTIONS``...): they replace what the URL says, except that ``OPTIONS`` and
    ``POOL_OPTIONS`` are merged with the URL's, and a key given by both is refused.
    ``alias`` only names the alias in error messages.
    """
    shown = mask_url(url)
    if not isinstance(url, str) or "://" not in url:
        raise ImproperlyConfigured(
            f"{shown!r} is not a database URL: write scheme://user:password@host:port/name, "
            f"e.g. postgres://app@db:5432/app (schemes: {', '.join(_SCHEMES)})."
        )
    _check_override_names(overrides)
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _SCHEMES and "ENGINE" not in overrides:
        raise ImproperlyConfigured(
            f"{shown!r}: django_sapool knows no backend for the scheme {scheme!r}. Use one "
            f"of {', '.join(_SCHEMES)}, or name the ENGINE: "
            f"settings_from_url(url, ENGINE=...)."
        )
    ours = scheme in _SCHEMES
    engine_name, parse_as = _SCHEMES.get(scheme, ("", scheme))
    engine = PREFIX + engine_name if ours else str(overrides["ENGINE"])
    vendor = next((b.vendor for b in BACKENDS if b.engine == engine), "")

    query = _Query.split(url, shown, vendor)
    # dj-database-url applies what a scheme implies (currentSchema, ssl-ca) by the
    # Django ENGINE it picks for it (2.x): let it pick, then put ours in.
    url_to_parse = parse_as + url[len(scheme) :]
    parsed = _parse(_parser(), url_to_parse, query.driver_part, None if ours else engine, shown)
    parsed["ENGINE"] = engine

    settings: dict[str, Any] = {**parsed, **query.django_settings}
    if query.pool_options:
        settings["POOL_OPTIONS"] = dict(query.pool_options)
        if "BACKEND" in query.pool_options and "ENGINE" not in overrides:
            # ?backend=... says what to pool, which only the generic ENGINE reads.
            settings["ENGINE"] = GENERIC
    for key, value in overrides.items():
        if key in ("OPTIONS", "POOL_OPTIONS"):
            from_url = settings.get(key) or {}
            _refuse_twice(key, sorted(set(from_url) & set(value)), query, shown)
            settings[key] = {**from_url, **value}
        else:
            _refuse_twice(key, [key] if key in query.django_settings else [], query, shown)
            settings[key] = value

    query.check_each(alias, settings)
    try:
        conf.parse_pool_options(alias, settings)
    except ImproperlyConfigured as exc:
        raise ImproperlyConfigured(
            f"{exc} (These settings were made by settings_from_url() from {shown!r} "
            f"and its keyword arguments.)"
        ) from None
    return settings


def mask_url(url: object) -> str:
    """Return the URL with its password, and query values that look secret, masked."""
    if not isinstance(url, str):
        return repr(type(url))
    head, sep, rest = url.partition("://")
    if not sep:
        # Not a URL; it might still be a libpq DSN ("host=db password=..."), or a
        # URL missing its "//" ("postgres:/app:secret@db/app"): whatever an "@"
        # ends may be a password.
        shown = re.sub(r"(pass\w*\s*=\s*)\S+", rf"\1{MASK}", url, flags=re.IGNORECASE)
        return f"{MASK}@{shown.rpartition('@')[2]}" if "@" in shown else shown
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # a bad IPv6 host: mask as for a malformed URL below
        netloc = ""
    after = rest[len(netloc) :] if rest.startswith(netloc) else None
    if (
        netloc.count("@") == 1
        and after is not None
        # An "@" further on is a query value's only if the netloc's host looks
        # like one: else the netloc ended inside the password (at a "?").
        and ("@" not in after or (_HOST.fullmatch(netloc.split("@")[1]) and _no_userinfo(after)))
    ):
        userinfo, host = netloc.split("@")
        user, colon, _ = userinfo.partition(":")
        shown = f"{head}://{user}{colon and ':' + MASK}@{host}"
        return shown + _mask_query(after)
    if "@" in rest:
        # A password with an unquoted "/", "?", "#" or "@": where it ends is a guess,
        # so everything up to the last "@" is masked.
        return f"{head}://{MASK}@{_mask_query(rest.rpartition('@')[2])}"
    return f"{head}://{netloc}{_mask_query(rest[len(netloc) :])}"


#: A URL's host and optional port: a name or a bracketed IPv6 address, digits after ":".
_HOST = re.compile(r"(?:\[[^\]]*\]|[^:@\[\]]+)(?::\d*)?")


def _no_userinfo(tail: str) -> bool:
    """Whether no "@" after the host can end a password: only query values may hold one."""
    path, _, query = tail.partition("?")
    if "@" in path:
        return False
    return all(re.fullmatch(r"[\w.-]+=[^@]*@.*", p) for p in query.split("&") if "@" in p)


def _mask_query(tail: str) -> str:
    path, sep, query = tail.partition("?")
    if not sep:
        return tail
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        pairs.append(f"{name}={MASK}" if eq and _SECRET_NAME.search(name) else pair)
    return f"{path}?{'&'.join(pairs)}"


@dataclass
class _Param:
    name: str  # as written in the URL
    text: str  # its value as written (decoded)
    value: Any  # converted


class _Query:
    """The URL's query string split into our settings and the driver's parameters."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.params: dict[str, _Param] = {}  # setting key -> where it came from
        self.pool_options: dict[str, Any] = {}
        self.django_settings: dict[str, Any] = {}
        self.driver_part = ""

    @classmethod
    def split(cls, url: str, shown: str, vendor: str) -> _Query:
        self = cls(shown)
        pool_keys = tuple(conf.VALID_KEYS)  # read now: options added to conf.py count too
        known = {key.lower(): key for key in (*pool_keys, *DJANGO_KEYS)}
        driver: list[str] = []
        driver_seen: dict[str, str] = {}  # a driver parameter's name -> its first value
        # What urlsplit calls the query: after the first "?", before the "#".
        query = url.partition("#")[0].partition("?")[2]
        for raw in query.split("&") if query else ():
            name, _, text = (unquote_plus(part) for part in raw.partition("="))
            key = known.get(name.lower())
            if key is None:
                self._check_typo(name, known)
                if name in driver_seen:
                    # dj-database-url would make a list of both, which no driver takes
                    # (libpq: invalid sslmode value "['disable', 'prefer']").
                    first, second = driver_seen[name], text
                    if _SECRET_NAME.search(name):
                        first = second = MASK
                    raise ImproperlyConfigured(
                        f"{shown!r} gives {name} twice ({name}={first} and {name}={second}): "
                        f"keep one."
                    )
                driver_seen[name] = text
                driver.append(raw)
                continue
            if key in self.params:
                raise ImproperlyConfigured(
                    f"{shown!r} gives {name} twice ({self.params[key].name}="
                    f"{self.params[key].text} and {name}={text}): keep one."
                )
            why = _DRIVER_ALSO_TAKES.get(vendor, {}).get(key)
            if why:
                raise ImproperlyConfigured(
                    f"{shown!r}: the query parameter {name}={text} is ambiguous: {key} is "
                    f"a POOL_OPTIONS key, and {name} is also {why}. Remove it from the URL "
                    f"and pass the one you mean: settings_from_url(url, "
                    f"POOL_OPTIONS={{{key!r}: ...}}) or settings_from_url(url, "
                    f"OPTIONS={{{name.lower()!r}: ...}})."
                )
            param = self.params[key] = _Param(name, text, _convert(text))
            target = self.pool_options if key in pool_keys else self.django_settings
            target[key] = param.value
        self.driver_part = "&".join(driver)
        return self

    def _check_typo(self, name: str, known: Mapping[str, str]) -> None:
        close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=_TYPO_CUTOFF)
        if not close:
            return
        raise ImproperlyConfigured(
            f"{self.shown!r}: the query parameter {name} is no pool option; did you mean "
            f"{close[0]}? Spelt as it is, it would be passed to the database driver as "
            f"OPTIONS[{name!r}]. Correct it in the URL; if your driver does take {name}, "
            f"remove it from the URL and pass settings_from_url(url, "
            f"OPTIONS={{{name!r}: ...}})."
        )

    def check_each(self, alias: str, settings: Mapping[str, Any]) -> None:
        """Validate each URL-given option alone, so that an error names its parameter."""
        for key, param in self.params.items():
            if key == "CONN_HEALTH_CHECKS" and not isinstance(param.value, bool):
                raise ImproperlyConfigured(
                    f"{self.shown!r}: the query parameter {param.name}={param.text} is "
                    f"refused: CONN_HEALTH_CHECKS must be true or false."
                )
            try:
                if key in DJANGO_KEYS:
                    # Without OPTIONS, whose errors (OPTIONS['pool']) are not this parameter's.
                    conf.check_connection_settings(alias, {**settings, "OPTIONS": {}})
                else:
                    conf.read_pool_option(alias, key, param.value)
            except ImproperlyConfigured as exc:
                raise ImproperlyConfigured(
                    f"{self.shown!r}: the query parameter {param.name}={param.text} is "
                    f"refused: {exc} Change {param.name} in the URL (values are written "
                    f"as 10, 2.5, true, false or none)."
                ) from None


def _convert(text: str) -> Any:
    """A query-string value as the Python value a settings file would hold."""
    word = text.strip()
    if word.lower() in ("true", "false"):
        return word.lower() == "true"
    if word.lower() in ("none", "null"):
        return None
    if re.fullmatch(r"[+-]?\d+", word):
        return int(word)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|[+-]?\d+[eE][+-]?\d+", word):
        return float(word)
    return text  # a string option (RESET_ON_RETURN, ECHO, a dotted path)


def _check_override_names(overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if key != key.upper():
            raise ImproperlyConfigured(
                f"settings_from_url() got the keyword {key}=...: its keywords are "
                f"settings of the alias, in upper case ({key.upper()}=...)."
            )
        if key in ("OPTIONS", "POOL_OPTIONS") and not isinstance(value, Mapping):
            raise ImproperlyConfigured(
                f"settings_from_url(url, {key}=...) must be a dict, got {type(value).__name__}."
            )


def _refuse_twice(setting: str, keys: list[str], query: _Query, shown: str) -> None:
    """Refuse a setting given both by the URL and by a keyword argument."""
    if not keys:
        return
    key = keys[0]
    where = f"{setting}[{key!r}]" if key != setting else setting
    param = query.params.get(key)
    written = f" (?{param.name}={param.text})" if param else ""
    raise ImproperlyConfigured(
        f"{where} is set both by {shown!r}{written} and by settings_from_url(url, "
        f"{setting}=...): set it in one place."
    )


def _parser() -> ModuleType:
    try:
        import dj_database_url
    except ImportError as exc:
        raise ImportError(
            "django_sapool.settings_from_url() reads URLs with dj-database-url, which is "
            "not installed: pip install 'django-sapool[url]'."
        ) from exc
    return dj_database_url


def _parse(
    parser: ModuleType, url: str, driver_query: str, engine: str | None, shown: str
) -> dict[str, Any]:
    base = url.partition("#")[0].partition("?")[0]
    try:
        parsed: dict[str, Any] = dict(
            parser.parse(base + ("?" + driver_query if driver_query else ""), engine=engine)
        )
    except ValueError:
        # The hosts and ports, after the user info (urlsplit() may fail on it too).
        if "," in base.partition("://")[2].partition("/")[0].rpartition("@")[2]:
            raise ImproperlyConfigured(
                f"{shown!r} names several hosts, which dj-database-url cannot read: write "
                f"the URL with the first host and port, and pass them all as keyword "
                f"arguments, e.g. settings_from_url(url, HOST='db1,db2', "
                f"PORT='5432,5433') (libpq tries them in turn)."
            ) from None
        # Not the exception's text: urllib's (which older dj-database-url versions let
        # through) quotes the unparsable part, which may be the password.
        raise ImproperlyConfigured(
            f"{shown!r} is not a database URL that dj-database-url can read: check its "
            f"scheme and port, and percent-encode special characters of the user name "
            f"and password (urllib.parse.quote)."
        ) from None
    return parsed
