"""django-tenants on the pool: no tenant ever sees another's rows.

ENGINE is the generic ``django_sapool.backends.pooled`` with
``POOL_OPTIONS["BACKEND"] = "django_tenants.postgresql_backend"`` (the README's
recipe). Each test makes its own database and runs tests/integration/
tenants_child.py in a fresh Django process: two tenants, each with a table of
the same name in its own schema and different rows, and 1,000 interleaved
requests from 8 threads on POOL_SIZE=2 through django-tenants' middleware.
Two server sessions carry both tenants, so each one's ``search_path`` was set
by the other tenant a moment ago: a request that trusted it would see the
other tenant's rows (or no table at all), which these tests count.

With ``TENANT_LIMIT_SET_CALLS = True`` django-tenants sends ``SET search_path``
once per wrapper and connection, remembering it on the wrapper
(``search_path_set_schemas``) until ``close()``: the pool must call that close()
whenever the connection goes back, or the wrapper's next server session keeps
whichever tenant used it last. Without it, every cursor sets the path.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import PgServer, own_pg_database, run_child, unavailable

pytestmark = pytest.mark.postgresql

TENANTS = {
    "tenant_a": ["a-1", "a-2", "a-3"],
    "tenant_b": ["b-1", "b-2", "b-3", "b-4", "b-5"],
}
THREADS, REQUESTS, JOB_CYCLES = 8, 1000, 25


@pytest.fixture
def tenants_db(pg: PgServer) -> Iterator[str]:
    """A database of this test's own (tenants' schemas and all), dropped at the end."""
    try:
        import django_tenants  # noqa: F401
    except ImportError as exc:
        unavailable(f"django-tenants is not installed (the test extra has it): {exc}")
    with own_pg_database(pg, "sapool_tenants") as name:
        yield name


def run_tenants(
    pg: PgServer,
    dbname: str,
    driver: str,
    limit_set_calls: bool,
    scenario: str = "serve",
    lend: str = "request",
) -> dict[str, Any]:
    pytest.importorskip(driver)
    app_name = f"sapool-tenants-{uuid.uuid4().hex[:10]}"
    db = pg.settings(
        dbname,
        app_name,
        ENGINE="django_sapool.backends.pooled",
        POOL_OPTIONS={
            "BACKEND": "django_tenants.postgresql_backend",
            "POOL_SIZE": 2,
            "MAX_OVERFLOW": 0,
            "LEND": lend,
        },
    )
    return run_child(
        {
            "driver": driver,
            "limit_set_calls": limit_set_calls,
            "databases": {"default": db},
            "app_name": app_name,
            "dbname": dbname,
            "admin_conninfo": pg.conninfo(pg.admin_db),
            "tenants": TENANTS,
            "threads": THREADS,
            "requests": REQUESTS,
            "job_cycles": JOB_CYCLES,
            "scenario": scenario,
        },
        timeout=120,
        module="tests.integration.tenants_child",
        env_var="SAPOOL_TENANTS_CHILD",
    )


def wrong(facts: dict[str, Any]) -> list[Any]:
    """Every request or job that saw anything but its own tenant's rows and schema."""
    bad: list[Any] = []
    for r in facts["served"]:
        body = r["body"]
        if r["code"] != 200 or body["tenant"] != r["want"]:
            bad.append(r)
            continue
        for step in ("first", "after_close"):
            got = body.get(step)
            if got is not None and (got["names"], got["schema"]) != (TENANTS[r["want"]], r["want"]):
                bad.append({"want": r["want"], step: got})
    for j in facts["jobs"]:
        if (j.get("names"), j.get("schema")) != (TENANTS[j["want"]], j["want"]):
            bad.append(j)
    return bad


@pytest.mark.parametrize("limit_set_calls", [False, True], ids=["limit-off", "limit-on"])
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_tenants_never_see_each_other(
    pg: PgServer, tenants_db: str, driver: str, limit_set_calls: bool
) -> None:
    facts = run_tenants(pg, tenants_db, driver, limit_set_calls)
    assert facts["driver"] == driver
    assert facts["limit_set_calls"] is limit_set_calls
    assert facts["wrapper"].startswith("django_sapool.wrapping.")

    served, jobs = facts["served"], facts["jobs"]
    assert len(served) == REQUESTS and len(jobs) == THREADS * JOB_CYCLES
    assert Counter(r["want"] for r in served) == {"tenant_a": 500, "tenant_b": 500}
    bad = wrong(facts)
    assert not bad, f"{len(bad)} saw another tenant's data, e.g. {bad[:3]}"

    # Two server sessions carried both tenants, each reused across many requests.
    pids = Counter(
        step["pid"]
        for r in served
        for step in (r["body"]["first"], r["body"].get("after_close"))
        if step is not None
    )
    assert 1 <= len(pids) <= 2, pids
    assert facts["peak_sessions"] <= 2
    (pool,) = facts["pools"]
    assert pool["connections_opened"] <= 2
    assert (pool["checked_out"], pool["timeouts"]) == (0, 0)
    # Both tenants' requests ran on each session, and sessions changed threads
    # (wrappers): the cases a stale search_path would break.
    by_pid = {pid: {r["want"] for r in served if r["body"]["first"]["pid"] == pid} for pid in pids}
    assert all(tenants == set(TENANTS) for tenants in by_pid.values()), by_pid
    by_thread = Counter(
        len({r["body"]["first"]["pid"] for r in served if r["thread"] == i}) for i in range(THREADS)
    )
    assert by_thread[len(pids)] >= THREADS // 2, by_thread

    # The setting really changed what django-tenants sends: without the limit,
    # SET search_path precedes every cursor (the middleware's domain lookup,
    # then 3 per seen()); with it, once per tenant switch and per checkout (the
    # middleware switches to public and back at every request).
    sets_per_request = facts["search_path_sets_requests"] / REQUESTS
    closes = sum(1 for r in served if "after_close" in r["body"])
    if limit_set_calls:
        assert sets_per_request <= 2 + closes / REQUESTS + 0.01, sets_per_request
    else:
        assert sets_per_request >= 4 + 3 * closes / REQUESTS - 0.01, sets_per_request


@pytest.mark.parametrize("limit_set_calls", [False, True], ids=["limit-off", "limit-on"])
def test_tenants_never_see_each_other_with_lend_transaction(
    pg: PgServer, tenants_db: str, limit_set_calls: bool
) -> None:
    """POOL_OPTIONS["LEND"] = "transaction" (docs/lend.md): a new session per statement.

    django-tenants' ``close()`` runs at every return, so its ``SET search_path``
    comes again on the next checkout, run on the cursor before it is handed out:
    no LendWarning for it.
    """
    facts = run_tenants(pg, tenants_db, "psycopg", limit_set_calls, lend="transaction")
    served = facts["served"]
    assert len(served) == REQUESTS
    bad = wrong(facts)
    assert not bad, f"{len(bad)} saw another tenant's data, e.g. {bad[:3]}"
    assert facts["peak_sessions"] <= 2
    (pool,) = facts["pools"]
    assert (pool["checked_out"], pool["timeouts"]) == (0, 0)
    assert "LendWarning" not in facts["stderr"], facts["stderr"][-2000:]


@pytest.mark.parametrize("limit_set_calls", [False, True], ids=["limit-off", "limit-on"])
def test_forked_worker_forgets_the_parents_search_path(
    pg: PgServer, tenants_db: str, limit_set_calls: bool
) -> None:
    """A child's inherited wrapper gets a session another tenant used: it sets its own path.

    Without the pool running django-tenants' close() when the fork hook drops
    the inherited connection, TENANT_LIMIT_SET_CALLS=True showed tenant B's
    rows to the child's tenant A (found by this test).
    """
    facts = run_tenants(pg, tenants_db, "psycopg", limit_set_calls, scenario="fork")
    assert facts["limit_set_calls"] is limit_set_calls
    a, b = sorted(TENANTS)
    assert (facts["thread"]["names"], facts["thread"]["schema"]) == (TENANTS[b], b)
    assert (facts["main"].get("names"), facts["main"].get("schema")) == (TENANTS[a], a), facts
    # The child's main thread really got the session tenant B had just used.
    assert facts["main"]["pid"] == facts["thread"]["pid"]
    # The parent's session was never touched by the child, and still serves tenant A.
    before, after = facts["parent_before"], facts["parent_after"]
    assert after == before and before["names"] == TENANTS[a]
    assert before["pid"] != facts["main"]["pid"]
