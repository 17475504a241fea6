"""A PASSWORD_PROVIDER that fails once, after a while, when armed (tests/integration/child.py).

The server trusts every login: the password is never checked, only whether the
provider raised. Per process.
"""

from __future__ import annotations

import time
from typing import Any

#: Set by the scenario: the next call fails (and disarms it).
armed = False


def fails_once_when_armed(settings_dict: dict[str, Any]) -> str:
    global armed
    if armed:
        armed = False
        time.sleep(1.0)  # long enough for another checkout to queue behind this one
        raise ConnectionError("the token service did not answer")
    return ""
