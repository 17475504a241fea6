"""The child's side of the credential rotation test: where the current password is read.

The test (``test_credentials.py``) rotates a role's password on the server and
writes the new one to ``$SAPOOL_CRED_DIR/password``. Two consumers read it in
the child, each once per new server connection:

- ``iam_backend`` (a Django backend of the test's own, as an IAM authentication
  backend is): its ``get_connection_params()`` returns the current password;
- :func:`current_password`, the alias's ``POOL_OPTIONS["PASSWORD_PROVIDER"]``.

A rotated PostgreSQL password is void at once (an IAM token stays valid for
minutes), so a login that read the old password a moment before the rotation
would fail through no fault of the pool. A file lock serialises them: a reader
holds it shared from reading the password until its connection is
established (the backend's ``get_new_connection()``, or ``connection_created``
for the provider), and the test holds it exclusively while it rotates.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from django.db.backends.signals import connection_created

_held = threading.local()


def _dir() -> Path:
    return Path(os.environ["SAPOOL_CRED_DIR"])


def read_password() -> str:
    """Return the current password, taking this thread's shared lock until release()."""
    if getattr(_held, "fd", None) is None:
        fd = os.open(_dir() / "lock", os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _held.fd = fd
    reads = _dir() / f"reads-{os.getpid()}"
    with open(reads, "a") as counter:  # how often a password was asked for
        counter.write(".")
    return (_dir() / "password").read_text()


def release() -> None:
    """Let the rotation go on: this thread's new connection is established (or failed)."""
    fd = getattr(_held, "fd", None)
    if fd is not None:
        _held.fd = None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def current_password(settings_dict: dict[str, Any]) -> str:
    """POOL_OPTIONS['PASSWORD_PROVIDER']: the role's password now."""
    assert settings_dict["USER"], settings_dict["USER"]  # called with the alias's settings
    return read_password()


def _established(sender: Any, connection: Any, **kwargs: Any) -> None:
    release()


connection_created.connect(_established)
