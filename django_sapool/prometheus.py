"""Prometheus metrics for this process's pools (optional: needs ``prometheus_client``).

Nothing is exported unless you register the collector::

    import django_sapool.prometheus
    django_sapool.prometheus.register()          # prometheus_client's default REGISTRY

Each scrape reads ``django_sapool.pool_status()``; samples carry the labels
``alias``, ``vendor`` and ``database``. Pools are per process: with several worker
processes, each one reports its own pools (prometheus_client's multiprocess mode
does not aggregate custom collectors).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # prometheus_client is imported only when metrics are built, so that importing
    # django_sapool never needs it.
    from prometheus_client.metrics_core import Metric  # type: ignore[import-not-found]
    from prometheus_client.registry import CollectorRegistry  # type: ignore[import-not-found]

    from .stats import PoolStatus

from . import stats

__all__ = ["SapoolCollector", "register"]

LABELS = ("alias", "vendor", "database")
# Every gauge and counter of PoolStatus, as stats.py declares them: (metric name,
# PoolStatus field, help); a counter's name gets prometheus_client's "_total".
GAUGES = stats.GAUGES
COUNTERS = stats.COUNTERS
WAIT = "django_sapool_checkout_wait_seconds"
WAIT_MAX = "django_sapool_checkout_wait_max_seconds"
QUANTILES = (("0.5", "wait_ms_p50"), ("0.95", "wait_ms_p95"), ("0.99", "wait_ms_p99"))
# The PoolStatus fields a scrape reads.
_FIELDS = (
    *(f for _, f, _ in GAUGES),
    *(f for _, f, _ in COUNTERS),
    "wait_ms_total",
    *(f for _, f in QUANTILES),
    "wait_ms_max",
)

_lock = threading.Lock()
_registered: dict[int, tuple[Any, SapoolCollector]] = {}


def _merged(statuses: Iterable[PoolStatus]) -> dict[tuple[str, str, str], dict[str, float]]:
    """Fold pools that share (alias, vendor, database) into one labelled series.

    An alias has several pools when its connect settings changed at run time
    (override_settings, the test runner's swap). Sizes and counters add up;
    of the wait-time quantiles, the largest is kept (the windows can't be merged).
    """
    merged: dict[tuple[str, str, str], dict[str, float]] = {}
    for status in statuses:
        key = (status.alias, status.vendor, status.database)
        values = {name: float(getattr(status, name)) for name in _FIELDS}
        seen = merged.get(key)
        if seen is None:
            merged[key] = values
            continue
        for name, value in values.items():
            if name.startswith("wait_ms_p") or name == "wait_ms_max":
                seen[name] = max(seen[name], value)
            else:
                seen[name] += value
    return merged


class SapoolCollector:
    """A prometheus_client custom collector for this process's django_sapool pools."""

    def describe(self) -> list[Metric]:
        """Return the metric families without samples (for duplicate detection)."""
        return list(self._build({}))

    def collect(self) -> Iterator[Metric]:
        """Read pool_status() and yield one family per metric."""
        from . import registry

        yield from self._build(_merged(registry.status()))

    def _build(self, pools: dict[tuple[str, str, str], dict[str, float]]) -> Iterator[Metric]:
        from prometheus_client.core import (  # type: ignore[import-not-found]
            CounterMetricFamily,
            GaugeMetricFamily,
            Metric,
        )

        from .stats import WAIT_WINDOW

        for name, field, text in GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=LABELS)
            for labels, values in pools.items():
                gauge.add_metric(labels, values[field])
            yield gauge
        for name, field, text in COUNTERS:
            counter = CounterMetricFamily(name, text, labels=LABELS)
            for labels, values in pools.items():
                counter.add_metric(labels, values[field])
            yield counter
        # prometheus_client's SummaryMetricFamily has no quantiles: build the samples.
        summary = Metric(
            WAIT,
            f"Time checkouts waited for a connection when the pool was exhausted; "
            f"quantiles over the last {WAIT_WINDOW} waits.",
            "summary",
        )
        longest = GaugeMetricFamily(
            WAIT_MAX, f"Longest of the last {WAIT_WINDOW} checkout waits.", labels=LABELS
        )
        for labels, values in pools.items():
            label_map = dict(zip(LABELS, labels, strict=True))
            for quantile, field in QUANTILES:
                summary.add_sample(
                    WAIT, {**label_map, "quantile": quantile}, values[field] / 1000.0
                )
            summary.add_sample(f"{WAIT}_count", label_map, values["checkout_waits"])
            summary.add_sample(f"{WAIT}_sum", label_map, values["wait_ms_total"] / 1000.0)
            longest.add_metric(labels, values["wait_ms_max"] / 1000.0)
        yield summary
        yield longest


def register(registry: CollectorRegistry | None = None) -> SapoolCollector:
    """Register a SapoolCollector with a registry (default: REGISTRY), once; return it."""
    if registry is None:
        from prometheus_client import REGISTRY  # type: ignore[import-not-found]

        registry = REGISTRY
    with _lock:
        entry = _registered.get(id(registry))
        if entry is not None and entry[0] is registry:
            return entry[1]
        collector = SapoolCollector()
        registry.register(collector)
        _registered[id(registry)] = (registry, collector)
    return collector
