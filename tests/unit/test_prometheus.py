"""The optional Prometheus collector (prometheus_client; required under CI)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from django_sapool import registry
from django_sapool.backends.sqlite3.base import DatabaseWrapper as SqliteWrapper
from django_sapool.stats import WAIT_BUCKETS_MS, PoolStatus

from .pools import Holder, checkout_after_a_wait, sqlite_settings

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
if not IN_CI:  # under CI a missing prometheus_client fails the run
    pytest.importorskip("prometheus_client", reason="pip install prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import django_sapool.prometheus as sapool_prometheus  # noqa: E402

pytestmark = pytest.mark.usefixtures("clean_registry")


def samples(metrics_registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    text = generate_latest(metrics_registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_collector_reports_sizes_counters_and_wait_quantiles(tmp_path: Path) -> None:
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=1, MAX_OVERFLOW=0)
    name = settings_dict["NAME"]
    wrapper = checkout_after_a_wait(settings_dict)

    metrics = CollectorRegistry()
    collector = sapool_prometheus.register(metrics)
    assert sapool_prometheus.register(metrics) is collector  # once per registry
    got = samples(metrics)
    labels = (("alias", "default"), ("database", name), ("vendor", "sqlite"))
    status = wrapper.sapool_pool().status()

    def value(metric: str, **extra: str) -> float:
        return got[(metric, tuple(sorted((*labels, *extra.items()))))]

    assert value("django_sapool_pool_size") == 1
    assert value("django_sapool_pool_max_overflow") == 0
    assert value("django_sapool_connections_open") == 1
    assert value("django_sapool_connections_checked_out") == 1
    assert value("django_sapool_connections_idle") == 0
    assert value("django_sapool_checkout_waiting") == 0
    assert value("django_sapool_connections_opened_total") == 1
    assert value("django_sapool_connections_recycled_total") == 0
    assert value("django_sapool_checkouts_total") == 2
    assert value("django_sapool_checkout_waits_total") == 1
    assert value("django_sapool_checkout_timeouts_total") == 0
    assert value("django_sapool_checkouts_connecting") == 0
    assert value("django_sapool_checkouts_pinging") == 0
    assert value("django_sapool_pings_timed_out_total") == 0
    assert value("django_sapool_evictions_total") == 0
    wrapper.sapool_pool().evict("a test")
    assert samples(metrics)[("django_sapool_evictions_total", labels)] == 1
    assert value("django_sapool_checkout_wait_seconds_count") == 1
    waited = value("django_sapool_checkout_wait_recent_seconds", quantile="0.99")
    assert 0.05 <= waited < 5
    assert waited == pytest.approx(status.wait_ms_p99 / 1000)
    assert value("django_sapool_checkout_wait_recent_seconds", quantile="0.5") == waited
    assert value("django_sapool_checkout_wait_seconds_sum") == pytest.approx(waited, abs=1e-3)
    assert value("django_sapool_checkout_wait_max_seconds") == waited
    # The histogram: the one wait is in every bucket from its own upward (they
    # are cumulative), and the buckets add up across processes, unlike quantiles.
    for bound in WAIT_BUCKETS_MS:
        expected = 1 if status.wait_ms_max <= bound else 0
        bucket = value("django_sapool_checkout_wait_seconds_bucket", le=f"{bound / 1000:g}")
        assert bucket == expected, bound
    assert value("django_sapool_checkout_wait_seconds_bucket", le="0.05") == 0  # it waited >= 0.1 s
    assert value("django_sapool_checkout_wait_seconds_bucket", le="+Inf") == 1
    wrapper.close()


def test_a_settings_change_leaves_one_series_the_new_pools(tmp_path: Path) -> None:
    name = sqlite_settings(tmp_path)["NAME"]  # the database of both pools

    def cycle(**pool_options: Any) -> None:
        wrapper = SqliteWrapper(sqlite_settings(tmp_path, **pool_options), "default")
        wrapper.ensure_connection()
        wrapper.close()

    cycle(POOL_SIZE=2)
    cycle(POOL_SIZE=3)  # other connect settings: the first pool is disposed, same labels
    metrics = CollectorRegistry()
    sapool_prometheus.register(metrics)
    got = samples(metrics)
    key = (("alias", "default"), ("database", name), ("vendor", "sqlite"))
    assert got[("django_sapool_pool_size", key)] == 3
    assert got[("django_sapool_checkouts_total", key)] == 1


def test_no_pool_no_samples_and_no_duplicate_names() -> None:
    metrics = CollectorRegistry()
    sapool_prometheus.register(metrics)
    text = generate_latest(metrics).decode()
    assert "# TYPE django_sapool_checkouts_total counter" in text
    assert 'alias="' not in text
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.register(sapool_prometheus.SapoolCollector())


def test_importing_django_sapool_does_not_need_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import django_sapool, django_sapool.prometheus\n"
        "try:\n"
        "    django_sapool.prometheus.register()\n"
        "except ImportError:\n"
        "    print('register needs prometheus_client')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "register needs prometheus_client"


def test_waits_in_progress_are_not_histogram_observations(tmp_path: Path) -> None:
    """The histogram's +Inf bucket and count hold the waits that ended, as its buckets and sum."""
    settings_dict = sqlite_settings(tmp_path, POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=10)
    name = settings_dict["NAME"]
    holder = Holder(settings_dict)

    def wait_for_a_connection() -> None:
        wrapper = SqliteWrapper(settings_dict, "default")
        wrapper.ensure_connection()
        wrapper.close()

    waiters = [threading.Thread(target=wait_for_a_connection) for _ in range(2)]
    metrics = CollectorRegistry()
    sapool_prometheus.register(metrics)
    labels = (("alias", "default"), ("database", name), ("vendor", "sqlite"))

    def value(metric: str, **extra: str) -> float:
        return samples(metrics)[(metric, tuple(sorted((*labels, *extra.items()))))]

    try:
        for waiter in waiters:
            waiter.start()
        deadline = time.monotonic() + 5
        while value("django_sapool_checkout_waiting") < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert value("django_sapool_checkout_waiting") == 2
        assert value("django_sapool_checkout_waits_total") == 2  # waits started
        assert value("django_sapool_checkout_wait_seconds_bucket", le="30") == 0
        assert value("django_sapool_checkout_wait_seconds_bucket", le="+Inf") == 0
        assert value("django_sapool_checkout_wait_seconds_count") == 0
        assert value("django_sapool_checkout_wait_seconds_sum") == 0
    finally:
        holder.stop()
        for waiter in waiters:
            waiter.join(10)
    assert value("django_sapool_checkout_waiting") == 0
    assert value("django_sapool_checkout_waits_total") == 2
    assert value("django_sapool_checkout_wait_seconds_bucket", le="30") == 2
    assert value("django_sapool_checkout_wait_seconds_bucket", le="+Inf") == 2
    assert value("django_sapool_checkout_wait_seconds_count") == 2
    assert value("django_sapool_checkout_wait_seconds_sum") > 0


def test_the_inf_bucket_counts_ended_waits_longer_than_the_last_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Of 4 waits started, 1 still waiting: 3 observations, one of them longer than 30 s."""
    values: dict[str, Any] = {f.name: 0 for f in fields(PoolStatus)}
    values.update(
        alias="default",
        vendor="sqlite",
        database="db",
        checkout_waits=4,
        waiting=1,
        wait_ms_total=31_000.0 + 2 * 0.5,
        wait_ms_buckets=(2,) * len(WAIT_BUCKETS_MS),  # two waits of 0.5 ms, one of 31 s
    )
    monkeypatch.setattr(registry, "status", lambda: [PoolStatus(**values)])
    metrics = CollectorRegistry()
    sapool_prometheus.register(metrics)
    got = samples(metrics)
    labels = (("alias", "default"), ("database", "db"), ("vendor", "sqlite"))

    def bucket(le: str) -> float:
        return got[
            ("django_sapool_checkout_wait_seconds_bucket", tuple(sorted((*labels, ("le", le)))))
        ]

    assert bucket("30") == 2
    assert bucket("+Inf") == 3
    assert got[("django_sapool_checkout_wait_seconds_count", labels)] == 3
    assert got[("django_sapool_checkout_wait_seconds_sum", labels)] == pytest.approx(31.001)
    assert got[("django_sapool_checkout_waits_total", labels)] == 4
    assert got[("django_sapool_checkout_waiting", labels)] == 1


def test_register_again_after_unregister(tmp_path: Path) -> None:
    """A collector unregistered (a test's cleanup, an app reload) is registered again."""
    settings_dict = sqlite_settings(tmp_path)
    wrapper = SqliteWrapper(settings_dict, "default")
    wrapper.ensure_connection()
    wrapper.close()
    key = (
        "django_sapool_checkouts_total",
        (("alias", "default"), ("database", settings_dict["NAME"]), ("vendor", "sqlite")),
    )
    metrics = CollectorRegistry()
    collector = sapool_prometheus.register(metrics)
    assert samples(metrics)[key] == 1
    metrics.unregister(collector)
    assert key not in samples(metrics)
    assert sapool_prometheus.register(metrics) is collector
    assert samples(metrics)[key] == 1
    assert sapool_prometheus.register(metrics) is collector  # registered: left as it is
    assert samples(metrics)[key] == 1
    # Another registry gets a collector of its own; a dropped registry is not kept alive.
    other = CollectorRegistry()
    assert sapool_prometheus.register(other) is not collector
    dropped = weakref.ref(other)
    del other
    gc.collect()
    assert dropped() is None
