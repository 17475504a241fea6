"""Django database backends on SQLAlchemy's connection pool.

Switch ``ENGINE`` to ``django_sapool.backends.<vendor>``; tune with
``DATABASES[alias]["POOL_OPTIONS"]``. The small public API is here.
"""

from __future__ import annotations

from .errors import PoolExhausted
from .pool import PoolStatus

__version__ = "0.1.0"

__all__ = ["PoolExhausted", "PoolStatus", "__version__", "after_fork", "dispose", "pool_status"]


def dispose(alias: str | None = None) -> int:
    """Close the idle connections of this process's pools (of one alias); return the count.

    Connections checked out at that moment are closed when they are returned. The
    next checkout builds a fresh pool.
    """
    from . import registry

    return registry.dispose(alias)


def pool_status(alias: str | None = None) -> list[PoolStatus]:
    """Return a snapshot of this process's pools (of one alias).

    An alias usually has one pool; it has more when its connect settings changed
    at run time (the test runner's database swap, ``override_settings``).
    """
    from . import registry

    return registry.status(alias)


def after_fork() -> None:
    """Forget pools and connections inherited from a parent process.

    Runs automatically after ``os.fork()``. Call it from gunicorn's ``post_fork``,
    Celery's ``worker_process_init`` or a ``multiprocessing`` initializer as well;
    it is idempotent.
    """
    from .wrapper import after_fork as _after_fork

    _after_fork()
