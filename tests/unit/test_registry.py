"""Registry keying: which settings share a pool, and which must never."""

from __future__ import annotations

import os
from typing import Any

import pytest

from django_sapool import pool_status, registry
from django_sapool.backends.postgresql.base import DatabaseWrapper as PgWrapper
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper

from .pools import SQLITE, filled

pytestmark = pytest.mark.usefixtures("clean_registry")


def pg_settings(**overrides: Any) -> dict[str, Any]:
    return filled(
        **{
            "ENGINE": "django_sapool.backends.postgresql",
            "NAME": "app",
            "USER": "app",
            "PASSWORD": "pw-one",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            **overrides,
        }
    )


def pool_of(alias: str = "default", **overrides: Any) -> Any:
    return PgWrapper(pg_settings(**overrides), alias).sapool_pool()


def test_same_settings_share_one_pool() -> None:
    assert pool_of() is pool_of()
    assert len(pool_status()) == 1


CHANGES = [
    {"NAME": "test_app"},
    {"USER": "other"},
    {"PASSWORD": "pw-two"},
    {"HOST": "db.internal"},
    {"PORT": "6432"},
    {"OPTIONS": {"sslmode": "require"}},
    {"TIME_ZONE": "Europe/Paris"},
    {"POOL_OPTIONS": {"POOL_SIZE": 3}},
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: next(iter(change)))
def test_connect_settings_change_gives_another_pool(change: dict[str, Any]) -> None:
    assert pool_of() is not pool_of(**change)


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: next(iter(change)))
def test_a_wrapper_whose_settings_change_in_place_looks_its_pool_up_again(
    change: dict[str, Any],
) -> None:
    # What the test runner does to a wrapper's settings_dict (NAME), and anyone
    # else may: the wrapper checks the pool it found last against its settings.
    wrapper = PgWrapper(pg_settings(), "default")
    first = wrapper.sapool_pool()
    assert wrapper.sapool_pool() is first
    wrapper.settings_dict.update(change)
    assert wrapper.sapool_pool() is not first


def test_a_wrapper_sees_its_options_changed_in_place_but_not_test_settings() -> None:
    wrapper = PgWrapper(pg_settings(OPTIONS={}), "default")
    first = wrapper.sapool_pool()
    wrapper.settings_dict["TEST"]["NAME"] = "test_other"  # not a connect setting
    assert wrapper.sapool_pool() is first
    wrapper.settings_dict["OPTIONS"]["sslmode"] = "require"  # the nested dict itself
    second = wrapper.sapool_pool()
    assert second is not first
    wrapper.settings_dict["POOL_OPTIONS"] = {"POOL_SIZE": 2}  # a key it did not have
    assert wrapper.sapool_pool() is not second


def test_a_wrapper_sees_django_time_zone_settings_change() -> None:
    from django.test import override_settings

    wrapper = PgWrapper(pg_settings(), "default")
    first = wrapper.sapool_pool()
    with override_settings(TIME_ZONE="Asia/Tokyo", USE_TZ=False):
        # What Django's setting_changed receiver does to every wrapper it knows.
        for name in ("timezone", "timezone_name"):
            wrapper.__dict__.pop(name, None)
        assert wrapper.sapool_pool() is not first


def test_aliases_never_share_even_with_identical_settings() -> None:
    assert pool_of("default") is not pool_of("replica")


def test_options_order_does_not_matter() -> None:
    a = pool_of(OPTIONS={"sslmode": "require", "connect_timeout": 3})
    b = pool_of(OPTIONS={"connect_timeout": 3, "sslmode": "require"})
    assert a is b


def test_key_holds_pid_and_a_keyed_hash_not_the_password() -> None:
    pool_of()
    (key,) = [k for k in registry._pools if k.pid == os.getpid()]
    assert key.alias == "default"
    assert len(key.fingerprint) == 32
    assert "pw-one" not in repr(key)
    # Keyed with a per-process secret: not a plain hash anyone could recompute.
    import hashlib

    plain = hashlib.blake2b(b"pw-one", digest_size=16).hexdigest()
    assert key.fingerprint != plain


def test_dispose_one_alias_or_database() -> None:
    pool_of("default")
    pool_of("replica")
    pool_of("reports", NAME="test_app")
    assert registry.dispose(database="test_app") == 1
    assert {s.alias for s in pool_status()} == {"default", "replica"}
    assert registry.dispose("replica") == 1
    assert [s.alias for s in pool_status()] == ["default"]


def test_settings_change_disposes_the_alias_previous_pool() -> None:
    first = pool_of("default")
    replica = pool_of("replica")
    second = pool_of("default", PASSWORD="pw-two")  # a credential rotation
    assert first.disposed and not second.disposed and not replica.disposed
    assert [s.database for s in pool_status("default")] == [second.database]
    assert pool_of("default", PASSWORD="pw-two") is second


def test_churning_settings_warn_once_naming_the_alias(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="django_sapool"):
        for i in range(registry.CHURN_LIMIT + 3):
            pool_of("churny", PASSWORD=f"pw-{i}")
    warnings = [r.getMessage() for r in caplog.records if "changed" in r.getMessage()]
    assert len(warnings) == 1
    assert "alias 'churny'" in warnings[0] and "settings.DATABASES['churny']" in warnings[0]
    assert "pw-" not in warnings[0]
    assert len(pool_status("churny")) == 1


def test_forked_child_forgets_parent_pools_but_keeps_them_referenced() -> None:
    parent_pool = pool_of()
    key = next(iter(registry._pools))
    registry._pools[key.__class__(key.pid - 1, "ghost", "x" * 32)] = parent_pool
    assert registry.forget_inherited_pools() == 1
    assert parent_pool in registry._inherited
    assert all(k.pid == os.getpid() for k in registry._pools)


def test_nodb_wrapper_is_not_pooled() -> None:
    wrapper = PgWrapper(pg_settings(NAME=None), "__no_db__")
    assert wrapper.sapool_enabled() is False


def test_in_memory_sqlite_is_not_pooled(tmp_path: Any) -> None:
    def wrapper(name: str) -> SqliteWrapper:
        return SqliteWrapper(filled(ENGINE=SQLITE, NAME=name), "default")

    memory = wrapper(":memory:")
    assert memory.sapool_enabled() is False
    with memory.cursor() as cursor:  # behaves exactly like Django's own backend
        cursor.execute("CREATE TABLE t (x int)")
    memory.close()  # Django ignores close() for in-memory databases: data survives
    with memory.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone() == (0,)
    assert pool_status() == []
    assert wrapper(str(tmp_path / "x.db")).sapool_enabled() is True


def test_bad_pool_options_fail_when_the_wrapper_is_built() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=r"\['POOL_SIZE'\] must be an int >= 1"):
        PgWrapper(pg_settings(POOL_OPTIONS={"POOL_SIZE": "10"}), "default")


def test_the_public_calls_refuse_what_names_no_alias() -> None:
    """A typo passed for "nothing to do": evict("primary ") closed nothing and returned 0."""
    import django_sapool

    pool_of("default")
    for call in (django_sapool.dispose, django_sapool.evict, django_sapool.pool_status):
        name = call.__name__
        with pytest.raises(ValueError, match=rf"{name}\('defualt'\): there is no such alias; "):
            call("defualt")
        with pytest.raises(TypeError, match=r"an alias name \(a str\) or None, got int 123"):
            call(123)
        with pytest.raises(TypeError, match=r"got list \['default'\]"):
            call(["default"])
    assert [s.alias for s in pool_status("default")] == ["default"]  # untouched
    # An alias this process has a pool for is known, even if added at run time.
    pool_of("added_at_run_time")
    assert [s.alias for s in pool_status("added_at_run_time")] == ["added_at_run_time"]
    assert django_sapool.dispose("added_at_run_time") == 1
