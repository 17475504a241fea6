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

import dataclasses
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

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
RECENT = "django_sapool_checkout_wait_recent_seconds"
WAIT_MAX = "django_sapool_checkout_wait_max_seconds"
QUANTILES = (("0.5", "wait_ms_p50"), ("0.95", "wait_ms_p95"), ("0.99", "wait_ms_p99"))

_lock = threading.Lock()
#: The collector given to each registry, so that registering again returns it.
#: Weak keys: a registry its owner dropped (a test's) is not kept alive here.
_registered: weakref.WeakKeyDictionary[CollectorRegistry, SapoolCollector] = (
    weakref.WeakKeyDictionary()
)


class SapoolCollector:
    """A prometheus_client custom collector for this process's django_sapool pools.

    One series per alias, vendor and database: a pool disposed of while its
    connections were lent is folded into the series of the alias's pool now
    (``fold_disposed``) until they are returned.
    """

    def describe(self) -> list[Metric]:
        """Return the metric families without samples (for duplicate detection)."""
        return list(self._build([]))

    def collect(self) -> Iterator[Metric]:
        """Read pool_status() and yield one family per metric."""
        from . import registry

        yield from self._build(registry.status())

    def _build(self, pools: list[PoolStatus]) -> Iterator[Metric]:
        from prometheus_client.core import (  # type: ignore[import-not-found]
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        from .stats import WAIT_BUCKETS_MS, WAIT_WINDOW

        labelled = fold_disposed(pools)
        for name, field, text in GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=LABELS)
            for labels, status in labelled:
                gauge.add_metric(labels, getattr(status, field))
            yield gauge
        for name, field, text in COUNTERS:
            counter = CounterMetricFamily(name, text, labels=LABELS)
            for labels, status in labelled:
                counter.add_metric(labels, getattr(status, field))
            yield counter
        histogram = HistogramMetricFamily(
            WAIT,
            "Time checkouts waited for a connection when the pool was exhausted.",
            labels=LABELS,
        )
        recent = GaugeMetricFamily(
            RECENT,
            f"Checkout wait-time quantiles over the last {WAIT_WINDOW} waits "
            f"(per process; aggregate {WAIT} instead).",
            labels=(*LABELS, "quantile"),
        )
        longest = GaugeMetricFamily(
            WAIT_MAX, f"Longest of the last {WAIT_WINDOW} checkout waits.", labels=LABELS
        )
        for labels, status in labelled:
            buckets = [
                (f"{bound / 1000.0:g}", count)
                for bound, count in zip(WAIT_BUCKETS_MS, status.wait_ms_buckets, strict=True)
            ]
            # Not checkout_waits: that counts the waits in progress too, which
            # would show as waits longer than the last bound.
            buckets.append(("+Inf", status.waits_ended))
            histogram.add_metric(labels, buckets, status.wait_ms_total / 1000.0)
            for quantile, field in QUANTILES:
                recent.add_metric((*labels, quantile), getattr(status, field) / 1000.0)
            longest.add_metric(labels, status.wait_ms_max / 1000.0)
        yield histogram
        yield recent
        yield longest


#: What a disposed pool's connections still lent add to its alias's series:
#: they are open server sessions. Its counters are another pool's history.
FOLDED = ("size", "checked_out", "connecting", "pinging")


def fold_disposed(pools: list[PoolStatus]) -> list[tuple[tuple[str, str, str], PoolStatus]]:
    """Return one (labels, status) per label set: a disposed pool's sessions in the live one's."""
    folded: dict[tuple[str, str, str], PoolStatus] = {}
    for status in sorted(pools, key=lambda p: p.disposed):  # the alias's live pool first
        labels = (status.alias, status.vendor, status.database)
        first = folded.get(labels)
        if first is None:
            folded[labels] = status
        else:
            sums = {name: getattr(first, name) + getattr(status, name) for name in FOLDED}
            folded[labels] = dataclasses.replace(first, **sums)
    return list(folded.items())


def register(registry: CollectorRegistry | None = None) -> SapoolCollector:
    """Register a SapoolCollector with a registry (default: REGISTRY), once; return it.

    Registering again returns the same collector, registered again if it was
    unregistered meanwhile (``registry.unregister(collector)``).
    """
    if registry is None:
        from prometheus_client import REGISTRY  # type: ignore[import-not-found]

        registry = REGISTRY
    with _lock:
        known = _registered.get(registry)
        collector = known if known is not None else SapoolCollector()
        try:
            # Asked every time: only the registry knows whether it still has ours.
            registry.register(collector)
        except ValueError:  # prometheus_client's "Duplicated timeseries"
            if known is None:
                raise  # another collector of these metrics, not ours
            return known  # still registered
        _registered[registry] = collector
    return collector
