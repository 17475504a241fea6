"""The lifesite itself works on both servers (the lifecycle tests build on it)."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import ROOT

SNIPPET = """
import django, json
django.setup()
from django.test import Client
c = Client()
out = [c.get('/pid').json(), c.get('/write?name=a').json(), c.get('/apid').json()]
print(json.dumps(out))
"""


def run(env: dict[str, str]) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPET], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_pg_site(pg_site) -> None:  # type: ignore[no-untyped-def]
    first, written, counted = run(pg_site())
    assert first["count"] == 0 and written["id"] == 1 and counted["count"] == 1


def test_mysql_site(mysql_site) -> None:  # type: ignore[no-untyped-def]
    first, written, counted = run(mysql_site())
    assert first["count"] == 0 and written["id"] == 1 and counted["count"] == 1
