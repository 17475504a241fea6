"""Serve one request through Django's real WSGI handler, inside a child process.

The scenario children (tests/integration/child.py, session_child.py,
tests/faults/child.py) configure Django and then call :func:`request`, so
request_started / request_finished fire and close_old_connections() returns
connections exactly as under a WSGI server.
"""

from __future__ import annotations

import io
import json
from typing import Any

_handler: Any = None


def prepare() -> None:
    """Create the handler now (before threads start serving), as a server does."""
    global _handler
    if _handler is None:
        from django.core.handlers.wsgi import WSGIHandler

        _handler = WSGIHandler()


def request(url: str, host: str = "testserver") -> tuple[int, Any]:
    """Serve one GET for ``host`` through Django's WSGI handler: (status, JSON body or None)."""
    if _handler is None:
        prepare()
    route, _, query = url.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": route,
        "QUERY_STRING": query,
        "HTTP_HOST": host,
        "SERVER_NAME": host,
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
    }
    status: list[str] = []
    response = _handler(environ, lambda s, headers, exc_info=None: status.append(s))
    try:
        body = b"".join(response)
    finally:
        response.close()  # fires request_finished -> close_old_connections()
    code = int(status[0].split()[0])
    return code, json.loads(body) if code == 200 else None
