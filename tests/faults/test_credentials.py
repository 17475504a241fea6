"""Fresh credentials for every new server connection, under a real password rotation.

The throwaway PostgreSQL requires scram-sha-256 from the test's role on
127.0.0.1 (a line of our own at the top of its pg_hba.conf; trust auth would
take any password, and the test could not fail). For 30 s the test rotates the
role's password every 2 s (``ALTER ROLE ... PASSWORD``) while two Django
children serve requests from several threads, with RECYCLE = 1 s so that new
server connections keep being opened:

- ``iam``: ENGINE ``django_sapool.backends.pooled`` wrapping a backend of the
  test's own whose ``get_connection_params()`` returns the current password
  (``tests/faults/iam_backend``, as an IAM authentication backend does);
- ``provider``: ENGINE ``django_sapool.backends.postgresql`` with
  ``POOL_OPTIONS["PASSWORD_PROVIDER"]`` (``tests.faults.credentials``).

Neither has a PASSWORD in its settings. Rule: 0 failed requests; one pool per
child (the settings never change, so no pool per password); each pool opened
far more connections than there were rotations; the server logged a
scram-sha-256 login of the role for every connection the pools and the test
opened; the provider was asked exactly once per new connection; the previous
password is refused by the server after a rotation; no password in any log.
Before this change, Django's connect parameters were worked out once per
settings, and the first connection after a rotation failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from .conftest import ensure_up
from .harness import Child, Timeline, error_counts, records, report
from .servers import HOST, PgInstance

pytestmark = pytest.mark.postgresql

SECONDS = 30.0
ROTATE_EVERY = 2.0
THREADS = 4
POOL_OPTIONS = {"POOL_SIZE": 2, "MAX_OVERFLOW": 1, "RECYCLE": 1, "RECYCLE_JITTER": 0}
#: How long the rotation may wait for logins in progress (the lock is held for one login).
LOCK_WAIT = 1.5


def new_password() -> str:
    return f"cred-{secrets.token_hex(12)}"


class Rotation:
    """The role, its password on the server and in the children's file, and the lock."""

    def __init__(self, server: PgInstance, dbname: str, directory: Path) -> None:
        self.server = server
        self.dbname = dbname
        self.dir = directory
        self.role = f"cred_{secrets.token_hex(4)}"
        self.passwords: list[str] = []
        self.skipped = 0  # rotations that found the lock busy for LOCK_WAIT
        (directory / "lock").touch()

    @property
    def current(self) -> str:
        return self.passwords[-1]

    def create(self) -> None:
        password = new_password()
        self.server.execute(f"CREATE ROLE \"{self.role}\" LOGIN PASSWORD '{password}'")
        self.server.execute(f'GRANT CONNECT ON DATABASE "{self.dbname}" TO "{self.role}"')
        self.server.execute(
            f'GRANT USAGE, CREATE ON SCHEMA public TO "{self.role}"', dbname=self.dbname
        )
        self._publish(password)

    def rotate(self) -> bool:
        """New password on the server and in the file, while no login is in progress."""
        with open(self.dir / "lock") as lock:
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        self.skipped += 1
                        return False
                    time.sleep(0.002)
            try:
                password = new_password()
                self.server.execute(f"ALTER ROLE \"{self.role}\" PASSWORD '{password}'")
                self._publish(password)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return True

    def _publish(self, password: str) -> None:
        self.passwords.append(password)
        tmp = self.dir / "password.tmp"
        tmp.write_text(password)
        os.replace(tmp, self.dir / "password")

    def login(self, password: str | None) -> str | None:
        """Connect as the role; return None if the server let us in, else its error."""
        import psycopg

        try:
            psycopg.connect(
                host=HOST,
                port=self.server.port,
                user=self.role,
                password=password,
                dbname=self.dbname,
                connect_timeout=5,
            ).close()
        except psycopg.OperationalError as exc:
            return str(exc)
        return None

    def drop(self) -> None:
        if self.server.scalar("SELECT count(*) FROM pg_roles WHERE rolname = %s", [self.role]):
            self.server.execute(f'DROP OWNED BY "{self.role}"', dbname=self.dbname)
            self.server.execute(f'DROP ROLE "{self.role}"')


@contextlib.contextmanager
def scram_required(server: PgInstance, role: str) -> Iterator[None]:
    """Make the server ask ``role`` for its password over TCP; log every login."""
    hba = server.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} {HOST}/32 scram-sha-256\n{original}")
    server.execute("ALTER SYSTEM SET log_connections = on")
    server.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        hba.write_text(original)
        server.execute("ALTER SYSTEM RESET log_connections")
        server.execute("SELECT pg_reload_conf()")


def wait_refused(rotation: Rotation, password: str, timeout: float = 10.0) -> str | None:
    """Wait until the reloaded configuration refuses ``password``; return the refusal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        error = rotation.login(password)
        if error is not None:
            return error
        time.sleep(0.1)
    return None


@pytest.fixture
def rotation(
    pg_instance: PgInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rotation]:
    ensure_up(pg_instance)
    dbname = f"fault_{uuid.uuid4().hex[:10]}"
    pg_instance.create_database(dbname)
    directory = tmp_path / "cred"
    directory.mkdir()
    monkeypatch.setenv("SAPOOL_CRED_DIR", str(directory))
    rotation = Rotation(pg_instance, dbname, directory)
    try:
        rotation.create()
        with scram_required(pg_instance, rotation.role):
            yield rotation
    finally:
        rotation.drop()
        pg_instance.drop_database(dbname)


def start_child(rotation: Rotation, engine: str, options: dict[str, Any], log: Path) -> Child:
    db = rotation.server.settings(
        rotation.dbname,
        ENGINE=engine,
        USER=rotation.role,
        PASSWORD="",  # never in the settings: read for each new connection
        POOL_OPTIONS={**POOL_OPTIONS, **options},
    )
    child = Child({"driver": "psycopg", "databases": {"default": db}}, log)
    facts = child.call("setup")
    assert facts["driver"] == "psycopg", facts
    return child


def authenticated_logins(server: PgInstance, role: str, since: int) -> int:
    """Count the server's scram-sha-256 logins of ``role`` logged after byte ``since``."""
    text = server.log.read_bytes()[since:].decode(errors="replace")
    pattern = rf'connection authenticated: identity="{re.escape(role)}" method=scram-sha-256'
    return len(re.findall(pattern, text))


def test_rotated_password_every_new_connection_logs_in_with_the_current_one(
    rotation: Rotation, tmp_path: Path
) -> None:
    # The server really checks the password now (no password, a wrong one).
    refusal = wait_refused(rotation, "not-the-password")
    assert refusal is not None and "password authentication failed" in refusal, refusal
    log_start = rotation.server.log.stat().st_size
    probes = 0
    assert rotation.login(rotation.current) is None
    probes += 1

    children = {
        "iam": start_child(
            rotation,
            "django_sapool.backends.pooled",
            {"BACKEND": "tests.faults.iam_backend"},
            tmp_path / "iam.log",
        ),
        "provider": start_child(
            rotation,
            "django_sapool.backends.postgresql",
            {"PASSWORD_PROVIDER": "tests.faults.credentials.current_password"},
            tmp_path / "provider.log",
        ),
    }
    try:
        for child in children.values():
            child.call("start_load", threads=THREADS, plan="query", sleep=0.002, think=0.01)
        started = time.monotonic()
        rotations = 0
        stale_refusal: str | None = None
        while time.monotonic() - started < SECONDS:
            time.sleep(ROTATE_EVERY)
            previous = rotation.current
            if rotation.rotate():
                rotations += 1
                if stale_refusal is None:
                    stale_refusal = rotation.login(previous)  # void at once
        results = {name: child.call("stop_load") for name, child in children.items()}
        seconds = time.monotonic() - started
        # After the load: the last previous password is refused, the current one works.
        last_previous = rotation.passwords[-2]
        last_refusal = rotation.login(last_previous)
        assert rotation.login(rotation.current) is None
        probes += 1
    finally:
        for child in children.values():
            child.close()
    logins = authenticated_logins(rotation.server, rotation.role, log_start)
    logs = "".join(child.log.read_text(errors="replace") for child in children.values())
    logs += rotation.server.log.read_text(errors="replace")
    leaked = [p for p in rotation.passwords if p in logs]
    reads = {path.name: len(path.read_text()) for path in rotation.dir.glob("reads-*")}

    facts: dict[str, Any] = {}
    for name, result in results.items():
        recs = records(result["records"])
        pools = result["pools"]
        facts[name] = {
            "requests": len(recs),
            "failed": len(Timeline.failed(recs)),
            "errors": error_counts(recs),
            "alive": result["alive"],
            "pools": len(pools),
            "connections_opened": [p["connections_opened"] for p in pools],
            "password_reads": reads.get(f"reads-{children[name].pid}", 0),
            "failures": [r.brief() for r in Timeline.failed(recs)[:5]],
        }
    opened = sum(sum(f["connections_opened"]) for f in facts.values())
    report(
        "credentials_rotation",
        SimpleNamespace(vendor="postgresql", driver="psycopg"),
        seconds=round(seconds, 1),
        rotations=rotations,
        rotations_skipped=rotation.skipped,
        threads_per_child=THREADS,
        pool_options=POOL_OPTIONS,
        children=facts,
        server_scram_logins=logins,
        connections_opened_total=opened,
        probes=probes,
        stale_password_refused=stale_refusal,
        last_stale_password_refused=last_refusal,
        passwords_in_logs=len(leaked),
    )
    assert rotations >= SECONDS / ROTATE_EVERY - 2, (rotations, rotation.skipped)
    for name, fact in facts.items():
        assert fact["alive"] == [], (name, fact)
        assert fact["requests"] > 100, (name, fact)
        assert fact["failed"] == 0, (name, fact)
        assert fact["pools"] == 1, (name, fact)  # no pool per password
        assert fact["connections_opened"][0] > 3 * rotations, (name, fact)
    # Once per new connection (no more: checkouts of pooled ones read nothing).
    assert facts["provider"]["password_reads"] == facts["provider"]["connections_opened"][0]
    # The IAM backend's get_connection_params() too: once per new connection, not
    # once more per thread (it was: Django's PostgreSQL one sets nothing on the
    # wrapper that would need it), and never reuses a password for a new connection.
    iam = facts["iam"]
    assert iam["password_reads"] == iam["connections_opened"][0]
    # Every connection really logged in with a password the server accepted then.
    assert logins == opened + probes, (logins, opened, probes)
    for refusal in (stale_refusal, last_refusal):
        assert refusal is not None and "password authentication failed" in refusal, refusal
    assert leaked == []


def test_test_database_is_created_and_destroyed_with_the_provider_password(
    rotation: Rotation,
) -> None:
    """Django's _nodb_cursor() (no pool: test databases) logs in with the provider's password.

    The child is tests/integration/test_credentials_nodb.py's (MariaDB there); no
    rotation here, the server just requires the role's password.
    """
    from tests.integration.conftest import run_child

    refusal = wait_refused(rotation, "not-the-password")
    assert refusal is not None and "password authentication failed" in refusal, refusal
    rotation.server.execute(f'ALTER ROLE "{rotation.role}" CREATEDB')
    test_name = f"test_{rotation.dbname}"
    db = rotation.server.settings(
        rotation.dbname,
        USER=rotation.role,
        PASSWORD="",  # the provider gives it
        POOL_OPTIONS={"PASSWORD_PROVIDER": "tests.faults.credentials.current_password"},
    )
    log_start = rotation.server.log.stat().st_size
    try:
        facts = run_child(
            {"scenario": "nodb", "driver": "psycopg", "db": db},
            timeout=120,
            module="tests.integration.test_credentials_nodb",
            env_var="SAPOOL_NODB_CHILD",
        )
    finally:
        rotation.server.execute(f'DROP DATABASE IF EXISTS "{test_name}"')
    assert facts["pooled_user"] == facts["nodb_user"] == rotation.role
    assert facts["nodb_database"] == "postgres"  # Django's _nodb_cursor() database
    assert facts["test_name"] == facts["test_database"] == test_name
    assert facts["pools"] == [], facts["pools"]  # test database's pool disposed on destroy
    left = "SELECT count(*) FROM pg_database WHERE datname = %s"
    assert rotation.server.scalar(left, [test_name]) == 0
    # The pooled one, _nodb_cursor()'s, create, the pooled one on the test database, drop.
    assert authenticated_logins(rotation.server, rotation.role, log_start) >= 5
    assert rotation.current not in facts["stderr"]
