"""Whether one pooled alias can serve a request now, decided without joining its queue.

Two findings make an alias unhealthy:

- **exhausted**: a checkout would wait in the pool's queue now. That is the pool's
  own rule (``ManagedPool.checkout``), read from its public status: some thread
  is waiting already, or no connection is idle and all POOL_SIZE + MAX_OVERFLOW
  are checked out (MAX_OVERFLOW -1, no limit, is never exhausted). The probe then
  checks nothing out: it would wait for TIMEOUT behind the requests, and a
  probe that waits is no probe.
- **unreachable**: otherwise the probe checks a connection out as a request
  does (an idle one, pre-pinged per PRE_PING; or a new one, within
  CONNECT_TIMEOUT) and pings it once within PING_TIMEOUT; any failure is the
  finding, its text flattened and the password masked (``livecheck.mask``).

Why the pool and not a connection of the probe's own: a separate connection
would cost the server a login per probe (a process fork on PostgreSQL, a TLS
handshake, an IAM token), would count against ``max_connections`` beyond the
pool's cap, and would fail with "too many connections" on a server kept full by
healthy pools. A pooled checkout costs nothing but one round trip, and tests
the connections requests get. What it cannot rule out: another thread taking
the last idle connection between the status read and the checkout (a window of
microseconds); the probe then waits like a request, at most TIMEOUT.

The ping runs under PING_TIMEOUT as the pool's own pings do (``deadline.py``):
``livecheck.live_check``'s pings, made for an operator at a terminal, have no
deadline, and a hung server or a black-holed path would hang a health endpoint.
A connection whose ping failed is returned as suspect, so the pool discards it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections

import django_sapool
from django_sapool.aliases import describe
from django_sapool.conf import PoolOptions, read_pool_options
from django_sapool.deadline import RoundTrips
from django_sapool.leaks import PINGING
from django_sapool.livecheck import mask
from django_sapool.stats import PoolStatus
from django_sapool.wrapper import PooledDatabaseWrapperMixin


def pooled_aliases(databases: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Return the aliases django_sapool pools, in settings order (read without connecting).

    In-memory SQLite and Django's own backends are not pooled: django-health-check's
    ``Database`` check is theirs.
    """
    if databases is None:
        databases = settings.DATABASES
    return [
        alias for alias, settings_dict in databases.items() if describe(alias, settings_dict).pooled
    ]


def exhausted(status: PoolStatus) -> str | None:
    """Return why a pool's next checkout would wait in its queue, or None."""
    limits = f"POOL_SIZE={status.pool_size} + MAX_OVERFLOW={status.max_overflow}"
    if status.waiting:
        return (
            f"pool exhausted: {status.waiting} thread(s) waiting for a connection, "
            f"{status.checked_out} checked out ({limits})"
        )
    # A connection being opened holds its slot as surely as one checked out.
    taken = status.checked_out + status.connecting
    if status.max_overflow < 0 or status.idle or taken < status.pool_size + status.max_overflow:
        return None
    connecting = f", {status.connecting} of them connecting" if status.connecting else ""
    return f"pool exhausted: all {taken} connections checked out{connecting} ({limits}), none idle"


def bound(options: PoolOptions, settings_dict: Mapping[str, Any]) -> float | None:
    """Return the most seconds a probe takes, or None when a timeout is off.

    The checkout: a pre-ping that goes unanswered (PING_TIMEOUT), then a new
    connection (the driver's connect timeout: OPTIONS['connect_timeout'] if
    set, else CONNECT_TIMEOUT; whole seconds, as the drivers round it up);
    then the probe's own ping (PING_TIMEOUT).
    """
    connect = (settings_dict.get("OPTIONS") or {}).get("connect_timeout", options.connect_timeout)
    if options.ping_timeout is None or connect is None:
        return None
    try:
        connect_seconds = max(1, math.ceil(float(connect)))
    except (TypeError, ValueError):  # not a number: the driver will say so
        return None
    return 2 * options.ping_timeout + connect_seconds


def _ping(wrapper: PooledDatabaseWrapperMixin, options: PoolOptions) -> None:
    """One round trip on the wrapper's connection, within PING_TIMEOUT (networked drivers)."""
    driver = wrapper.sapool_driver
    timeout = options.ping_timeout if driver.networked else None
    # A RoundTrips of the probe's own: the pool's counters and busy list are the
    # pool's (pings_timed_out counts the checkouts' pings, not a probe's).
    round_trips = RoundTrips(wrapper.alias, timeout, driver, {}, lambda: None)
    round_trips.run(PINGING, driver.ping, wrapper.connection)


def probe(alias: str) -> str | None:
    """Return why ``alias`` cannot serve a request now (exhausted, unreachable), or None."""
    password = None
    try:
        wrapper = connections[alias]
        password = wrapper.settings_dict.get("PASSWORD")
        options = read_pool_options(alias, wrapper.settings_dict)
    except Exception as exc:  # an unknown alias, bad POOL_OPTIONS: the finding too
        return f"alias {alias!r}: {mask(f'{type(exc).__name__}: {exc}'.strip(), password)}"
    if not isinstance(wrapper, PooledDatabaseWrapperMixin):
        return (
            f"alias {alias!r} is not pooled by django_sapool: check it with "
            f"django-health-check's own Database check"
        )
    for status in django_sapool.pool_status(alias):
        if status.disposed:  # the next checkout goes to the alias's new pool
            continue
        reason = exhausted(status)
        if reason is not None:
            return f"alias {alias!r}: {reason}; not probed (a checkout would wait in the queue)"
    # Held already (a check run in the request's own thread): ping that one and
    # leave it as it was.
    held = wrapper.connection is not None
    started = time.monotonic()
    try:
        try:
            if not held:
                wrapper.ensure_connection()
            _ping(wrapper, options)
        except BaseException:
            if not held:
                wrapper.errors_occurred = True  # returned as suspect: the pool discards it
            raise
        finally:
            if not held:
                wrapper.close()
    except SynchronousOnlyOperation as exc:
        # Not the server's doing: the check runs in an event loop's thread (a
        # gevent worker's executor "threads" are greenlets of the loop's thread).
        return (
            f"alias {alias!r}: not probed: {exc} (the check ran inside an event loop; "
            f"under gunicorn's gevent worker it cannot run)"
        )
    except Exception as exc:  # any failure is the finding
        seconds = time.monotonic() - started
        error = mask(f"{type(exc).__name__}: {exc}".strip(), password)
        return f"alias {alias!r}: server unreachable ({seconds:.1f} s): {error}"
    return None
