"""Pooling another backend: pooled_wrapper()'s classes, the generic ENGINE, every refusal.

Also the parameters of new connections: worked out for each new server
connection (never reused from an earlier one), none for a checkout of a pooled
one, and POOL_OPTIONS["PASSWORD_PROVIDER"]'s password in them.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler, OperationalError

import django_sapool
from django_sapool.backends import BACKENDS, GENERIC, Backend, backend_for
from django_sapool.checks import check_database_settings
from django_sapool.lean import LeanDjangoSteps
from django_sapool.wrapper import PooledCreationMixin, PooledDatabaseWrapperMixin
from django_sapool.wrapping import FAMILIES, pooled_wrapper
from tests.integration.conftest import unavailable
from tests.unit.pools import write_backend

BACKEND_PATH = "settings.DATABASES['default']['POOL_OPTIONS']['BACKEND']"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for backend packages of a test's own."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def sqlite_settings(tmp_path: Path, engine: str, **pool_options: Any) -> dict[str, Any]:
    return {
        "ENGINE": engine,
        "NAME": str(tmp_path / "db.sqlite3"),
        "POOL_OPTIONS": pool_options,
    }


def wrapper_of(databases: dict[str, Any], alias: str = "default") -> Any:
    """Build the alias's wrapper the way Django does (defaults filled in)."""
    return ConnectionHandler(copy.deepcopy(databases))[alias]


def refused(databases: dict[str, Any]) -> str:
    """The message building the wrapper raises, after asserting the system checks report
    the same one (sapool.E003, and nothing else): a project learns of it either way."""
    with pytest.raises(ImproperlyConfigured) as info:
        wrapper_of(databases)
    message = str(info.value)
    assert [(e.id, e.msg) for e in check_database_settings(databases)] == [("sapool.E003", message)]
    return message


# -- pooled_wrapper(): what it builds ---------------------------------------------


@pytest.mark.parametrize(
    ("engine", "mixin"),
    [
        ("django.db.backends.sqlite3", "SQLitePoolMixin"),
        ("django.db.backends.postgresql", "PostgresPoolMixin"),
        ("django.db.backends.mysql", "MySQLPoolMixin"),
        ("django.contrib.gis.db.backends.postgis", "PostgresPoolMixin"),
    ],
)
def test_the_class_is_our_vendor_mixin_on_the_wrapped_one(engine: str, mixin: str) -> None:
    wrapped = importlib.import_module(f"{engine}.base").DatabaseWrapper
    cls = pooled_wrapper(engine)
    assert cls.__mro__[1].__name__ == mixin and cls.__mro__[2] is PooledDatabaseWrapperMixin
    assert cls.__mro__[3] is LeanDjangoSteps and cls.__mro__[4] is wrapped
    assert cls.vendor == wrapped.vendor
    assert cls.sapool_wraps == engine
    assert cls.creation_class.__mro__[1:3] == (PooledCreationMixin, wrapped.creation_class)
    assert cls.__qualname__ == f"pooled_wrapper({engine!r}).DatabaseWrapper"
    # One class per engine: pools, isinstance and connection_created senders agree.
    assert pooled_wrapper(engine) is cls
    assert django_sapool.pooled_wrapper is pooled_wrapper


def test_our_backends_and_pooled_wrapper_compose_the_same_parts() -> None:
    """Each of our six is what pooled_wrapper() of the Django backend it extends builds."""
    for backend in BACKENDS:
        ours = importlib.import_module(f"{backend.engine}.base").DatabaseWrapper
        made = pooled_wrapper(backend.extends)
        assert ours.__mro__[1:] == made.__mro__[1:], backend.engine
        creation = made.creation_class.__mro__[1:]
        assert ours.creation_class.__mro__[1:] == creation, backend.engine


def test_the_families_are_the_django_backends_of_the_table() -> None:
    plain = {f"{b.extends}.base" for b in BACKENDS if b.extends.startswith("django.db.")}
    assert set(FAMILIES) == plain
    for ours, mixin in FAMILIES.values():
        assert ours.startswith("django_sapool.backends.")
        assert issubclass(getattr(importlib.import_module(ours), mixin), PooledDatabaseWrapperMixin)


def test_a_third_party_backend_keeps_its_own_behaviour(project: Path) -> None:
    engine = write_backend(
        project,
        "thirdparty_pg",
        "from django.db.backends.postgresql import base\n"
        "class DatabaseWrapper(base.DatabaseWrapper):\n"
        "    vendor = 'postgresql'\n"
        "    display_name = 'Third party'\n"
        "    def get_connection_params(self):\n"
        "        return {**super().get_connection_params(), 'application_name': 'third'}\n",
    )
    cls = pooled_wrapper(engine)
    assert cls.display_name == "Third party"
    assert cls.__mro__[1].__name__ == "PostgresPoolMixin"
    settings_dict = {
        "ENGINE": "myproject.db",
        "NAME": "app",
        "USER": "u",
        "PASSWORD": "",
        "HOST": "db",
        "PORT": 5432,
        "OPTIONS": {},
        "TIME_ZONE": None,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "AUTOCOMMIT": True,
        "ATOMIC_REQUESTS": False,
        "TEST": {},
        "POOL_OPTIONS": {"CONNECT_TIMEOUT": 3},
    }
    wrapper = cls(settings_dict, "default")
    params = wrapper.sapool_connect_params()
    assert params["application_name"] == "third" and params["connect_timeout"] == 3


# -- the refusals -------------------------------------------------------------------


def refusal(engine: Any) -> str:
    with pytest.raises(ImproperlyConfigured) as info:
        pooled_wrapper(engine)
    return str(info.value)


def test_refuses_a_module_that_cannot_be_imported() -> None:
    message = refusal("no_such_backend")
    assert message.startswith(
        "django_sapool.pooled_wrapper('no_such_backend'): the backend 'no_such_backend' "
        "cannot be imported (no_such_backend.base): ModuleNotFoundError: No module named "
        "'no_such_backend'. Name an installed Django database backend"
    )


def test_refuses_a_backend_whose_import_fails(project: Path) -> None:
    engine = write_backend(project, "broken_backend", "import no_such_driver\n")
    message = refusal(engine)
    assert (
        "cannot be imported (broken_backend.base): ModuleNotFoundError: No module named " in message
    )
    assert "'no_such_driver'" in message


def test_refuses_a_package_without_base() -> None:
    assert refusal("django.contrib.auth") == (
        "django_sapool.pooled_wrapper('django.contrib.auth'): 'django.contrib.auth' is not a "
        "Django database backend: it has no module django.contrib.auth.base (defining "
        "DatabaseWrapper). Name the package that ENGINE would name without django_sapool."
    )


@pytest.mark.parametrize(
    ("source", "found"),
    [("X = 1\n", "none"), ("class DatabaseWrapper:\n    pass\n", "<class 'not_a_backend")],
)
def test_refuses_a_module_without_a_database_wrapper(
    project: Path, source: str, found: str
) -> None:
    name = f"not_a_backend_{len(source)}"
    engine = write_backend(project, name, source)
    message = refusal(engine)
    assert message.startswith(
        f"django_sapool.pooled_wrapper({engine!r}): {engine!r} is not a Django database "
        f"backend: {engine}.base must define DatabaseWrapper, a subclass of Django's "
        f"BaseDatabaseWrapper (found {found}"
    ), message


@pytest.mark.parametrize("engine", [b.engine for b in BACKENDS[:3]])
def test_refuses_one_of_ours(engine: str) -> None:
    assert f"{engine!r} is already one of django_sapool's backends" in refusal(engine)
    assert f"use it directly, ENGINE = {engine!r}, instead of wrapping it again" in refusal(engine)


def test_refuses_a_module_made_with_pooled_wrapper(project: Path) -> None:
    engine = write_backend(
        project,
        "already_pooled",
        "import django_sapool\n"
        "DatabaseWrapper = django_sapool.pooled_wrapper('django.db.backends.sqlite3')\n",
    )
    message = refusal(engine)
    assert f"{engine!r} is already pooled (django_sapool.wrapping.pooled_wrapper(" in message
    assert f"use it directly, ENGINE = {engine!r}" in message


def test_refuses_the_generic_engine() -> None:
    assert refusal(GENERIC).endswith(
        f"{GENERIC!r} is django_sapool's generic ENGINE, already pooled: name the backend "
        f"it should pool (what ENGINE would be without django_sapool)."
    )


@pytest.mark.parametrize("engine", ["", None, 3])
def test_refuses_what_is_no_engine_string(engine: Any) -> None:
    assert "the backend to pool must be an ENGINE string such as" in refusal(engine)


def test_refuses_mssql_django_a_vendor_we_cannot_pool() -> None:
    """mssql-django's real backend (it imports; its server cannot run here)."""
    try:
        wrapped = importlib.import_module("mssql.base").DatabaseWrapper
    except (ImportError, ImproperlyConfigured) as exc:  # pyodbc needs libodbc.so.2
        unavailable(f"mssql-django cannot be imported: {exc}")
    assert wrapped.vendor == "microsoft"
    assert refusal("mssql") == (
        "django_sapool.pooled_wrapper('mssql'): 'mssql' is a 'microsoft' backend, which "
        "django_sapool cannot pool: it pools postgresql, mysql and sqlite backends (built "
        "on Django's postgresql, mysql or sqlite3 backend, whose drivers it knows). Leave "
        "this alias unpooled: ENGINE = 'mssql' without django_sapool (its own or its "
        "driver's pooling, if it has one)."
    )
    # The generic ENGINE names the setting instead, and the checks report it.
    databases = {
        "default": {"ENGINE": GENERIC, "NAME": "app", "POOL_OPTIONS": {"BACKEND": "mssql"}}
    }
    assert refused(databases).startswith(f"{BACKEND_PATH}: 'mssql' is a 'microsoft' backend")
    assert backend_for(GENERIC, databases["default"]) == Backend(
        GENERIC, "microsoft", "mssql", (), None
    )


# -- the generic ENGINE ---------------------------------------------------------------


def test_the_generic_engine_pools_its_backend(tmp_path: Path) -> None:
    databases = {
        "default": sqlite_settings(tmp_path, GENERIC, BACKEND="django.db.backends.sqlite3")
    }
    wrapper = wrapper_of(databases)
    assert type(wrapper) is pooled_wrapper("django.db.backends.sqlite3")
    raws = set()
    for _ in range(3):
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
        raws.add(id(wrapper.connection))
        wrapper.close()
    assert len(raws) == 1
    status = wrapper.sapool_pool().status()
    assert (status.checkouts, status.connections_opened, status.checked_out) == (3, 1, 0)
    assert backend_for(GENERIC, databases["default"]) == Backend(
        GENERIC, "sqlite", "django.db.backends.sqlite3", ("sqlite3",), None
    )
    assert check_database_settings(databases) == []
    wrapper.sapool_pool().dispose("test over")


def test_the_generic_engine_requires_backend(tmp_path: Path) -> None:
    databases = {"default": sqlite_settings(tmp_path, GENERIC)}
    expected = (
        f"{BACKEND_PATH} is required with ENGINE {GENERIC!r}: name the Django backend to "
        f"pool (what ENGINE would be without django_sapool), such as "
        f"'django_tenants.postgresql_backend'."
    )
    assert refused(databases) == expected


def test_backend_is_refused_on_another_engine(tmp_path: Path) -> None:
    engine = "django_sapool.backends.sqlite3"
    databases = {"default": sqlite_settings(tmp_path, engine, BACKEND="django.db.backends.sqlite3")}
    expected = (
        f"{BACKEND_PATH} is only read with ENGINE {GENERIC!r}; ENGINE {engine!r} names its "
        f"backend itself. Set ENGINE to {GENERIC!r} to pool 'django.db.backends.sqlite3', "
        f"or remove BACKEND."
    )
    assert refused(databases) == expected


def test_the_generic_engine_names_the_setting_of_a_bad_backend(tmp_path: Path) -> None:
    databases = {"default": sqlite_settings(tmp_path, GENERIC, BACKEND="no_such_backend")}
    assert refused(databases).startswith(
        f"{BACKEND_PATH}: the backend 'no_such_backend' cannot be imported"
    )
    assert backend_for(GENERIC, databases["default"]) == Backend(
        GENERIC, "unknown", "no_such_backend", (), None
    )


# -- a project's own module (recipe 2) ------------------------------------------------------


def test_a_projects_module_is_known_and_validated(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = write_backend(
        project,
        "wrapping_recipe_db",
        "import django_sapool\n"
        "DatabaseWrapper = django_sapool.pooled_wrapper('django.db.backends.sqlite3')\n",
    )
    assert backend_for(engine) == Backend(
        engine, "sqlite", "django.db.backends.sqlite3", ("sqlite3",), None
    )
    # Every pooled alias is validated when the first wrapper is built: this one too.
    from django.conf import settings

    bad = {**sqlite_settings(tmp_path, engine, POOL_SIZE="10"), "NAME": str(tmp_path / "b")}
    monkeypatch.setattr(settings, "DATABASES", {**settings.DATABASES, "other": bad})
    with pytest.raises(ImproperlyConfigured, match=r"\['other'\]\['POOL_OPTIONS'\]\['POOL_SIZE'\]"):
        wrapper_of({"default": sqlite_settings(tmp_path, engine)})


def test_a_backends_own_close_runs_at_every_return(project: Path, tmp_path: Path) -> None:
    """A wrapped backend that forgets per-connection state in close() (django-tenants)."""
    engine = write_backend(
        project,
        "closing_backend",
        "from django.db.backends.sqlite3 import base\n"
        "class DatabaseWrapper(base.DatabaseWrapper):\n"
        "    closes = 0\n"
        "    def close(self):\n"
        "        type(self).closes += 1\n"
        "        self.cached_session_state = None\n"
        "        super().close()\n",
    )
    cls = pooled_wrapper(engine)
    assert cls._sapool_inline_close is False
    assert all(
        importlib.import_module(f"{b.engine}.base").DatabaseWrapper._sapool_inline_close
        for b in BACKENDS
    )
    wrapper = wrapper_of({"default": sqlite_settings(tmp_path, GENERIC, BACKEND=engine)})
    raws = set()
    for _ in range(3):
        wrapper.ensure_connection()
        wrapper.cached_session_state = "tenant A"
        raws.add(id(wrapper.connection))
        wrapper.close_if_unusable_or_obsolete()  # what request_finished calls
        assert wrapper.cached_session_state is None
    assert cls.closes == 3 and len(raws) == 1
    assert wrapper.sapool_pool().status().checked_out == 0
    wrapper.sapool_pool().dispose("test over")


# -- connect parameters ----------------------------------------------------------------------


def test_params_are_worked_out_for_each_new_connection_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = pooled_wrapper("django.db.backends.sqlite3")
    calls: list[int] = []
    original = cls.get_connection_params

    def counting(self: Any) -> Any:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(cls, "get_connection_params", counting)
    wrapper = wrapper_of(
        {"default": sqlite_settings(tmp_path, GENERIC, BACKEND="django.db.backends.sqlite3")}
    )
    for _ in range(5):  # the first opens a connection with the parameters it worked out
        wrapper.ensure_connection()
        wrapper.close()
    assert len(calls) == 1
    pool = wrapper.sapool_pool()
    for expected in (2, 3):
        pool.evict("a new connection is needed")
        wrapper.ensure_connection()  # a new server connection: parameters worked out now
        wrapper.close()
        wrapper.ensure_connection()  # a pooled one: none
        wrapper.close()
        assert len(calls) == expected
    assert pool.status().connections_opened == 3
    pool.dispose("test over")


def pg_settings(**pool_options: Any) -> dict[str, Any]:
    return {
        "ENGINE": "django_sapool.backends.postgresql",
        "NAME": "app",
        "USER": "app",
        "PASSWORD": "from-settings",
        "HOST": "db.invalid",
        "PORT": 5432,
        "POOL_OPTIONS": pool_options,
    }


seen: list[dict[str, Any]] = []


def provider(settings_dict: dict[str, Any]) -> str:
    seen.append(settings_dict)
    return f"token-{len(seen)}"


def failing_provider(settings_dict: dict[str, Any]) -> str:
    raise RuntimeError("secrets manager unreachable")


def number_provider(settings_dict: dict[str, Any]) -> Any:
    return 1234


def test_password_provider_gives_each_new_connection_its_password() -> None:
    seen.clear()
    wrapper = wrapper_of({"default": pg_settings(PASSWORD_PROVIDER=f"{__name__}.provider")})
    first, second = wrapper.sapool_connect_params(), wrapper.sapool_connect_params()
    assert (first["password"], second["password"]) == ("token-1", "token-2")
    assert seen == [wrapper.settings_dict, wrapper.settings_dict]
    assert first["connect_timeout"] == 10 and first["user"] == "app"
    assert wrapper.settings_dict["PASSWORD"] == "from-settings"  # settings untouched


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "failing_provider",
            "failed, so no new connection could be opened: "
            "RuntimeError: secrets manager unreachable",
        ),
        ("number_provider", "must return the password as a str, returned a int."),
    ],
)
def test_a_failing_provider_is_an_operational_error_naming_the_option(
    name: str, message: str
) -> None:
    wrapper = wrapper_of({"default": pg_settings(PASSWORD_PROVIDER=f"{__name__}.{name}")})
    with pytest.raises(OperationalError) as info:
        wrapper.sapool_connect_params()
    assert str(info.value) == (
        f"django_sapool: settings.DATABASES['default']['POOL_OPTIONS']['PASSWORD_PROVIDER'] "
        f"('{__name__}.{name}') {message}"
    )
    assert "1234" not in str(info.value) and "from-settings" not in str(info.value)


def test_a_provider_on_sqlite_is_refused(tmp_path: Path) -> None:
    settings_dict = sqlite_settings(
        tmp_path, "django_sapool.backends.sqlite3", PASSWORD_PROVIDER=f"{__name__}.provider"
    )
    with pytest.raises(ImproperlyConfigured) as info:
        wrapper_of({"default": settings_dict})
    assert str(info.value) == (
        "settings.DATABASES['default']['POOL_OPTIONS']['PASSWORD_PROVIDER'] has no use with "
        "the 'sqlite' backend, which connects without a password: remove it."
    )


def test_every_wrapped_class_is_a_django_wrapper() -> None:
    for engine in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
        assert issubclass(pooled_wrapper(engine), BaseDatabaseWrapper)
