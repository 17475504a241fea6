"""The one fork hook: what a forked child forgets, in order.

A child must never use, close or garbage-collect what it inherited from its
parent: closing a connection (or a driver's destructor sending its goodbye)
goes over the parent's socket and kills the parent's session. Threads do not
survive ``fork()`` either, and a lock held by one of the parent's threads stays
held for ever in the child. So, in the child, in this order:

1. the threads' own state: the watchdog (``deadline.py``) and the housekeeper
   (``housekeeper.py``) forget their locks, queues and threads; the child starts
   its own when it needs them;
2. the registry forgets the parent's pools, keeps them referenced and points
   their sockets at /dev/null (``registry.forget_inherited_pools``);
3. every Django wrapper of this thread drops its inherited connection without
   closing it (``wrapper.forget_inherited_connections``).

Only modules already imported take part: a module nobody loaded holds nothing
inherited, and importing ``django.db`` here would be wrong (see ``after_fork`` in
``__init__.py``). Registered once, when ``django_sapool`` is imported.
"""

from __future__ import annotations

import os
import sys

_STEPS = (
    ("django_sapool.deadline", "forget_in_child"),
    ("django_sapool.housekeeper", "forget_in_child"),
    ("django_sapool.registry", "forget_inherited_pools"),
    ("django_sapool.wrapper", "forget_inherited_connections"),
)


#: This process's pid, kept by the fork hook: the hot path asks whether a pool
#: is this process's (``ManagedPool.pid == fork.pid``) without a system call.
pid = os.getpid()


def after_fork_in_child() -> None:
    """Forget, in a forked child, everything inherited from the parent (idempotent)."""
    global pid
    pid = os.getpid()
    for module_name, function in _STEPS:
        module = sys.modules.get(module_name)
        if module is not None:
            getattr(module, function)()


_registered = False


def register() -> None:
    """Register :func:`after_fork_in_child` with ``os.register_at_fork`` (once)."""
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork_in_child)
        _registered = True
