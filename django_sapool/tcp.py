"""TCP keepalive and user-timeout defaults for the pool's sockets.

A pooled connection can sit idle for minutes and a query can run for minutes; a
network path that dies silently meanwhile (a partition, a dropped NAT entry, a
server host that vanished) is otherwise noticed only after the kernel's defaults:
two hours of idleness before the first keepalive, about fifteen minutes of
retransmissions for unacknowledged data. With keepalive probes after
``TCP_KEEPALIVE`` idle seconds and ``TCP_USER_TIMEOUT`` (which also bounds how
long the probes may go unanswered), the kernel itself closes a dead path's
connection within about TCP_KEEPALIVE + TCP_USER_TIMEOUT seconds, idle or under
a running query, and the driver reports the connection lost. A healthy server
answers every probe, so a long query is never interrupted.
"""

from __future__ import annotations

import logging
import math
import os
import socket

logger = logging.getLogger("django_sapool")

#: Probes after the first one, and the seconds between them (TCP_USER_TIMEOUT, when
#: set, is what ends the connection; the count is the bound without it).
KEEPALIVE_PROBES = 3
KEEPALIVE_INTERVAL_FRACTION = 1 / 3

_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def tune(fd: int, keepalive: float | None, user_timeout: float | None) -> bool:
    """Set keepalive and user-timeout options on a TCP socket; return whether it was TCP.

    Sockets of other families (a UNIX socket to a local server) are left alone.
    """
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        if sock.family not in _TCP_FAMILIES:
            return False
        if keepalive is not None:
            idle = max(1, math.ceil(keepalive))
            interval = max(1, math.ceil(keepalive * KEEPALIVE_INTERVAL_FRACTION))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
        if user_timeout is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            milliseconds = max(1, math.ceil(user_timeout * 1000))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
        return True
    except OSError:  # pragma: no cover - a platform without one of the options
        logger.debug("django_sapool: could not set TCP keepalive options", exc_info=True)
        return False
    finally:
        sock.close()
