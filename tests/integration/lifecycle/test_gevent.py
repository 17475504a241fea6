"""gunicorn's gevent worker: one process, many greenlets, a small pool.

1 worker, ``--worker-connections 100``, POOL_SIZE=4 + MAX_OVERFLOW=2, 500 requests at
50 concurrent. The same load then runs on Django's own backend (CONN_MAX_AGE=0) so
``-s`` prints both side by side: peak server sessions and connections opened.

Drivers under gevent (the worker monkey-patches in init_process, *after* post_fork
and before it loads the app, i.e. before Django imports the driver):

- psycopg 3 (>= 3.1.14) notices the patched ``select`` when it is imported and uses
  a cooperative wait instead of its C one: nothing to do (as long as psycopg is not
  imported in the master, e.g. by ``--preload``, before the patching).
- psycopg2 is C calling libpq; it cooperates only with a wait callback
  (``psycopg2.extensions.set_wait_callback``, what psycogreen installs). The test's
  gunicorn config installs one in post_fork.
- PyMySQL is pure Python on the (patched) socket module: cooperative.
- mysqlclient is C doing blocking I/O: a query blocks the whole worker, so greenlets
  take turns. It is still correct (the pool's waits are gevent-aware after
  patching), just not concurrent, so the peaks are not compared: Django's backend
  never yields between connect and close (peak 1, but a connect per request),
  while ours yields once per checkout in the pre-ping's zero-timeout poll(), which
  gevent turns into a hub switch, so other greenlets check out meanwhile and the
  pool runs at its cap with overflow churn (~100-160 connects per 500 requests;
  1 connect if DriverOps.poller used the unpatched poll()).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._http import (
    EXAMPLE_CONF,
    Gunicorn,
    LoadResult,
    Sampler,
    Site,
    load,
    open_site,
    terminate_cleanly,
    wait_for,
    worker_stats,
)

POOL_SIZE, MAX_OVERFLOW = 4, 2
CAP = POOL_SIZE + MAX_OVERFLOW
REQUESTS, CONCURRENCY = 500, 50
GEVENT_ARGS = ["-k", "gevent", "--worker-connections", "100", "--workers", "1"]

DRIVERS = [
    pytest.param("postgresql", "psycopg", marks=pytest.mark.postgresql, id="psycopg"),
    pytest.param("postgresql", "psycopg2", marks=pytest.mark.postgresql, id="psycopg2"),
    pytest.param("mysql", "mysqlclient", marks=pytest.mark.mysql, id="mysqlclient"),
    pytest.param("mysql", "pymysql", marks=pytest.mark.mysql, id="pymysql"),
]
#: Drivers that yield to other greenlets while waiting for the server.
COOPERATIVE = {"psycopg": True, "psycopg2": True, "pymysql": True, "mysqlclient": False}

# The example's settings and hooks, plus the driver setup a gevent worker needs. It
# runs in post_fork: in the worker, before Django loads the database backend.
DRIVER_CONF = """
exec(compile(open({example!r}).read(), {example!r}, "exec"))
_example_post_fork = post_fork
DRIVER = {driver!r}


def post_fork(server, worker):
    _example_post_fork(server, worker)
    import sys

    if DRIVER == "psycopg2":
        sys.modules["psycopg"] = None  # Django then picks psycopg2
        from psycopg2 import extensions

        from tests.psycogreen import gevent_wait_callback

        extensions.set_wait_callback(gevent_wait_callback)
    elif DRIVER == "pymysql":
        import pymysql

        pymysql.install_as_MySQLdb()
"""


@dataclass
class Outcome:
    label: str
    result: LoadResult
    peak: int  # most sessions the server saw at once
    opened: int  # distinct server sessions that served a request
    pool: dict[str, Any] | None  # our pool's status after the load (None: Django's)

    def row(self) -> str:
        return (
            f"{self.label:<28} peak {self.peak:>3} sessions   {self.opened:>4} opened   "
            f"{self.result.elapsed:5.2f}s"
        )


def driver_conf(tmp_path: Path, driver: str) -> Path:
    conf = tmp_path / f"gunicorn_{driver}.conf.py"
    conf.write_text(DRIVER_CONF.format(example=str(EXAMPLE_CONF), driver=driver))
    return conf


def djangos_own(env: dict[str, str], vendor: str) -> dict[str, str]:
    """The same site and database on Django's default backend, CONN_MAX_AGE=0."""
    databases = json.loads(env["SAPOOL_SITE_DATABASES"])
    default = databases["default"]
    default.pop("POOL_OPTIONS", None)
    default.update(ENGINE=f"django.db.backends.{vendor}", CONN_MAX_AGE=0)
    return {**env, "SAPOOL_SITE_DATABASES": json.dumps(databases)}


def without_tls(env: dict[str, str]) -> dict[str, str]:
    """PyMySQL >= 1.1 builds a TLS context (loading the CA store) per connection.

    That costs ~50 ms of CPU per connect, which under gevent blocks the whole worker:
    Django's own backend, connecting per request, then needs ~20 s for the load
    instead of ~2. The server here is local and plain-text anyway, so turn it off
    (only for PyMySQL: mysqlclient, used by migrate, doesn't know the option).
    """
    databases = json.loads(env["SAPOOL_SITE_DATABASES"])
    databases["default"].setdefault("OPTIONS", {})["ssl_disabled"] = True
    return {**env, "SAPOOL_SITE_DATABASES": json.dumps(databases)}


def serve_load(site: Site, env: dict[str, str], conf: Path, log: Path, label: str) -> Outcome:
    """One gunicorn gevent worker under the load; stopped (and checked clean) after."""
    assert wait_for(lambda: site.count() == 0, timeout=5), site.probe.current()
    abandoned = site.abandoned()
    with Gunicorn(env, GEVENT_ARGS, log, conf=conf) as server:
        server.start(1)
        with Sampler(site.new_probe) as sampler:
            result = load(server.port, "/pid", total=REQUESTS, concurrency=CONCURRENCY)
        assert result.all_ok, f"{label}: {result.summary()}\n{server.log()}"
        (stats,) = worker_stats(server, 1).values()
        pools = stats["pools"]
        terminate_cleanly(server, site, abandoned)
    return Outcome(
        label=label,
        result=result,
        peak=sampler.peak,
        opened=len({p["session"] for p in result.payloads}),
        pool=pools[0] if pools else None,
    )


@pytest.mark.parametrize(("vendor", "driver"), DRIVERS)
def test_gevent_worker_respects_the_cap(
    request: pytest.FixtureRequest, vendor: str, driver: str, tmp_path: Path
) -> None:
    """500 requests, 50 at a time, through one gevent worker: the pool's cap holds."""
    pytest.importorskip({"mysqlclient": "MySQLdb"}.get(driver, driver))
    site = open_site(
        request, vendor, POOL_OPTIONS={"POOL_SIZE": POOL_SIZE, "MAX_OVERFLOW": MAX_OVERFLOW}
    )
    env = without_tls(site.env) if driver == "pymysql" else site.env
    conf = driver_conf(tmp_path, driver)

    ours = serve_load(site, env, conf, tmp_path / "ours.log", "django_sapool")
    theirs = serve_load(
        site, djangos_own(env, vendor), conf, tmp_path / "django.log", "Django, CONN_MAX_AGE=0"
    )
    print(
        f"\n[gevent {vendor}/{driver}] {REQUESTS} requests, {CONCURRENCY} concurrent, "
        f"1 worker, cap {CAP}\n  {ours.row()}\n  {theirs.row()}"
    )

    # Ours: never more than the cap, the pool intact, nobody timed out waiting.
    assert 1 <= ours.peak <= CAP, ours.peak
    assert ours.pool is not None and theirs.pool is None
    assert ours.pool["timeouts"] == ours.pool["checked_out"] == 0, ours.pool
    assert ours.pool["size"] <= POOL_SIZE, ours.pool
    assert ours.pool["connections_opened"] == ours.opened, ours.pool
    # Django's default opens one connection per request; ours reuses its pool.
    assert theirs.opened == REQUESTS
    assert ours.opened < theirs.opened
    if COOPERATIVE[driver]:
        # Concurrent greenlets each hold a connection of their own on Django's backend.
        assert theirs.peak > ours.peak, (theirs.peak, ours.peak)


@pytest.mark.postgresql
def test_after_fork_in_post_fork_is_harmless_under_gevent(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The README's advice, literally: post_fork calls django_sapool.after_fork().

    gunicorn calls post_fork before the gevent worker monkey-patches. Anything that
    imports django.db there makes Django's per-thread connection storage a real
    thread-local, shared by all greenlets of the worker: concurrent requests then
    use one DatabaseWrapper ("DatabaseWrapper objects created in a thread can only
    be used in that same thread", or a hang). examples/gunicorn.conf.py avoids it by
    calling after_fork() only with --preload; this test calls it unconditionally.
    """
    site = open_site(request, "postgresql", POOL_OPTIONS={"POOL_SIZE": 4})
    conf = tmp_path / "gunicorn_plain.conf.py"
    conf.write_text(
        "def post_fork(server, worker):\n"
        "    import django_sapool\n\n"
        "    django_sapool.after_fork()\n"
    )
    with Gunicorn(site.env, GEVENT_ARGS, tmp_path / "g.log", conf=conf) as server:
        server.start(1)
        # Short timeouts: the broken case fails fast with 500s, or hangs (two greenlets
        # waiting on one connection) until the client gives up.
        result = load(server.port, "/pid", total=20, concurrency=10, deadline=2, timeout=2)
        assert result.all_ok, result.summary()
