"""Process-wide pools, keyed by (pid, alias, fingerprint of the connect settings).

Django builds one DatabaseWrapper per thread (and per async task context), so a
pool cannot live on the wrapper: it lives here, shared by every wrapper of one
alias in this process. The key holds the pid so that a forked child never finds
its parent's pool, and a keyed hash of the connect settings so that the test
runner's NAME swap, override_settings, or two aliases with different users never
share a connection. The hash is keyed with a per-process secret and the password
is never stored, logged or shown.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import housekeeper
from .pool import ManagedPool
from .state import state_of
from .stats import PoolStatus

logger = logging.getLogger("django_sapool")

#: Settings that decide where, as whom and how we connect.
FINGERPRINT_FIELDS = (
    "ENGINE",
    "NAME",
    "USER",
    "PASSWORD",
    "HOST",
    "PORT",
    "OPTIONS",
    "TIME_ZONE",
    "AUTOCOMMIT",
    "POOL_OPTIONS",
)

_SECRET = secrets.token_bytes(32)
_lock = threading.Lock()
_lock_pid = os.getpid()
_pools: dict[PoolKey, ManagedPool] = {}
# Pools and connections inherited through fork(). They belong to the parent:
# closing them, or letting the garbage collector run the driver's destructor,
# would send a goodbye over the parent's socket and end the parent's session.
# So they are kept referenced, untouched, until the process exits.
_inherited: list[Any] = []
# Disposed pools that still have connections open (checked out when dispose()
# ran; each is closed when returned). They are out of _pools, but after a fork
# their sockets are the parent's too: forget_inherited_pools() must find them.
_disposed: list[ManagedPool] = []

#: An alias whose settings changed more often than this within CHURN_WINDOW
#: seconds gets one warning: each change costs a new pool and new connections.
CHURN_LIMIT = 10
CHURN_WINDOW = 60.0
# When each alias last got a new pool (recent ones only), and the aliases warned about.
_created: dict[str, deque[float]] = {}
_churn_warned: set[str] = set()


@dataclass(frozen=True)
class PoolKey:
    pid: int
    alias: str
    fingerprint: str


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    return value


def fingerprint(settings_dict: Mapping[str, Any], *extra: Any) -> str:
    """Return a keyed hash of the settings that decide the server session."""
    material = repr((tuple(_canonical(settings_dict.get(f)) for f in FINGERPRINT_FIELDS), extra))
    return hashlib.blake2b(material.encode(), key=_SECRET, digest_size=16).hexdigest()


def get_pool(alias: str, fp: str, factory: Callable[[], ManagedPool]) -> ManagedPool:
    """Return this process's pool for (alias, fingerprint), creating it once.

    A new fingerprint for an alias means its settings changed (a credential
    rotation, the test runner's database swap, ``override_settings``): the
    alias's previous pools are disposed (idle connections closed now, the ones
    in use when returned), so no pool outlives its settings.
    """
    key = PoolKey(os.getpid(), alias, fp)
    pool = _pools.get(key)
    if pool is None:
        replaced: list[PoolKey] = []
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = factory()
                replaced = [k for k in _select(alias, None) if k != key]
                _pools[key] = pool
                housekeeper.register(pool)
                _note_created(alias)
                logger.info(
                    "django_sapool: created pool for alias %r (%s, database %r): %s",
                    alias,
                    pool.vendor,
                    pool.database,
                    ", ".join(f"{k}={v!r}" for k, v in pool.options.as_settings().items()),
                )
        for old in replaced:
            _dispose_keys([old], "its settings changed")
    return pool


def _note_created(alias: str) -> None:
    """Warn once about an alias whose settings change so often that pools churn."""
    now = time.monotonic()
    recent = _created.setdefault(alias, deque())
    recent.append(now)
    while recent and recent[0] < now - CHURN_WINDOW:
        recent.popleft()
    if len(recent) > CHURN_LIMIT and alias not in _churn_warned:
        _churn_warned.add(alias)
        logger.warning(
            "django_sapool: the settings of alias %r changed %d times within %g s, and each "
            "change opens a new pool (and new server connections). Keep "
            "settings.DATABASES[%r] stable while the process runs (for example, read "
            "rotated credentials in a backend's get_connection_params()).",
            alias,
            len(recent),
            CHURN_WINDOW,
            alias,
        )


def _select(alias: str | None, database: Any) -> list[PoolKey]:
    pid = os.getpid()
    if database is not None:
        database = str(database)  # a pathlib.Path NAME (SQLite): pools keep str(NAME)
    return [
        key
        for key, pool in list(_pools.items())
        if key.pid == pid
        and (alias is None or key.alias == alias)
        and (database is None or pool.database == database)
    ]


def has_pools(alias: str) -> bool:
    """Return whether this process has a pool for ``alias``."""
    return bool(_select(alias, None))


def dispose(alias: str | None = None, *, database: Any = None) -> int:
    """Close the idle connections of matching pools and forget them; return how many."""
    return _dispose_keys(_select(alias, database), "dispose() was called")


def retire(pool: ManagedPool, reason: str) -> bool:
    """Dispose of one pool if it is still registered; return whether it was."""
    with _lock:
        keys = [key for key, value in _pools.items() if value is pool]
    return bool(_dispose_keys(keys, reason))


def _dispose_keys(keys: list[PoolKey], reason: str) -> int:
    with _lock:
        victims = [pool for pool in (_pools.pop(key, None) for key in keys) if pool is not None]
        # Listed as disposed at once: a wrapper collected while they close their
        # idle connections (owner_gone) must find its pool in one list or the other.
        _disposed[:] = [*_disposed, *victims]
    for pool in victims:
        pool.dispose(reason)
    with _lock:
        _disposed[:] = [p for p in _disposed if p.opened.all()]
    return len(victims)


def evict(alias: str | None = None) -> int:
    """Retire every connection of matching pools softly; return how many pools."""
    matching = [_pools[key] for key in _select(alias, None) if key in _pools]
    for pool in matching:
        pool.evict("django_sapool.evict() was called")
    return len(matching)


def status(alias: str | None = None) -> list[PoolStatus]:
    """Return a status snapshot of each of this process's pools (of one alias).

    Then those disposed of whose connections lent before are still out: their
    server sessions are open until they are returned (``disposed`` is True).
    """
    current = [_pools[key].status() for key in _select(alias, None) if key in _pools]
    gone = [p for p in _disposed_here() if alias in (None, p.alias)]
    return current + [s for s in (p.status() for p in gone) if s.size or s.connecting]


def _disposed_here() -> list[ManagedPool]:
    """Return this process's pools disposed of while connections of theirs were out.

    Without the lock: owner_gone() runs where the collector finds a dead
    wrapper, possibly while this very thread holds it. The list is copied in
    one C call and replaced whole (``_disposed[:] = ...``).
    """
    pid = os.getpid()
    return [p for p in list(_disposed) if p.pid == pid]


def pools() -> list[ManagedPool]:
    """Return this process's pools."""
    return [_pools[key] for key in _select(None, None) if key in _pools]


def owner_gone(owner: Any) -> None:
    """Weak-reference callback: a wrapper died; return what it had checked out or left.

    Only this process's pools: what a wrapper inherited through fork is the parent's.
    A pool disposed of meanwhile closes what it gets back.
    """
    for pool in [*pools(), *_disposed_here()]:
        for record in pool.lending.abandoned_by(owner):
            state = state_of(record)
            state.owner = None  # dead: nobody to remember it for
            state.autocommit = False  # and its autocommit mode is unknown
            pool.checkin(record)
        pool.remembered.forget(owner)  # and what the pool remembered for it


def keep_inherited(*objects: Any) -> None:
    """Keep objects inherited from a parent process alive and untouched."""
    _inherited.extend(objects)


def forget_inherited_pools() -> int:
    """Forget every pool created by another process (our parent); return how many.

    Runs automatically in a child after ``os.fork()``; calling it again is harmless.
    """
    global _lock, _lock_pid
    pid = os.getpid()
    if _lock_pid != pid:
        # The parent may have forked while another thread held the lock. Only
        # then: in the lock's own process, a new one would let two threads in.
        _lock, _lock_pid = threading.Lock(), pid
    foreign = [key for key in _pools if key.pid != pid]
    for key in foreign:
        _inherited.append(_pools.pop(key))
    _inherited.extend(p for p in _disposed if p.pid != pid)
    _disposed[:] = [p for p in _disposed if p.pid == pid]
    for pool in _inherited:
        if isinstance(pool, ManagedPool):
            _disarm(pool)
    return len(foreign)


def _disarm(pool: ManagedPool) -> int:
    """In a forked child, point a (parent's) pool's sockets at /dev/null.

    The child's copies of the parent's sockets are the only way the child
    can hurt the parent's sessions: a driver's destructor (mysqlclient sends
    COM_QUIT, libpq a Terminate message) or a stray reset would go over
    them. Replacing the child's file descriptors with /dev/null makes every
    such write harmless, whatever runs at exit; the parent's own
    descriptors are untouched. Return how many sockets were disarmed.
    """
    if pool.pid == os.getpid():
        return 0
    disarmed = 0
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for raw in pool.opened.all():
            fd = pool.driver.socket_fd(raw)
            if fd is not None and fd >= 0:
                os.dup2(devnull, fd)
                disarmed += 1
    finally:
        os.close(devnull)
    return disarmed
