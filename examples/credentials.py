"""A PASSWORD_PROVIDER: the database password as a secrets agent keeps it, read when needed.

``POOL_OPTIONS["PASSWORD_PROVIDER"] = "examples.credentials.password_from_file"``
(docs/credentials.md). django_sapool calls it with the alias's settings dict for
every new server connection, never for a checkout of a pooled one, so a
password rotated by Vault Agent, a Kubernetes secret or a cron job is picked up
by the next connection the pool opens, and no settings change is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def password_from_file(settings_dict: dict[str, Any]) -> str:
    """Return the password in $DB_PASSWORD_FILE (default /run/secrets/db-password)."""
    path = Path(os.environ.get("DB_PASSWORD_FILE", "/run/secrets/db-password"))
    return path.read_text().strip()
