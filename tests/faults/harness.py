"""The test side of the fault tests: drive a child Django process, read its records, report.

- :class:`Child` runs ``tests.faults.child`` (optionally under a command prefix,
  e.g. inside a :class:`tests.faults.netns.Namespace`) and sends it commands (one
  JSON line each), with a bound on every answer; :meth:`Child.close` always ends it.
- :class:`Rec` is one request the child served; :func:`timeline` sorts records
  around the moments the server went down and came back.
- :func:`report` prints a ``FAULT-REPORT {json}`` line, appends it to the file
  named by ``SAPOOL_FAULT_REPORT`` if set, and keeps it for the end-of-session
  summary (see ``conftest.py``). Tests report before they assert, so a failing
  run still shows its counts.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT

#: Every FAULT-REPORT of this session, for the terminal summary.
REPORTS: list[dict[str, Any]] = []

#: Words of the drivers' and servers' messages for a lost or refused connection.
CONNECTION_PROBLEM = (
    "connection refused",
    "connection to server",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "consuming input failed",
    "connection is lost",
    "connection already closed",
    "the connection is closed",
    "ssl syscall error",
    "timeout expired",
    "can't connect",
    "lost connection",
    "gone away",
    "server shutdown in progress",
    "connection was killed",
)


def names_connection_problem(message: str) -> bool:
    text = message.lower()
    return any(words in text for words in CONNECTION_PROBLEM)


@dataclass(frozen=True)
class Rec:
    """One request as the child saw it (monotonic times, shared by all processes)."""

    thread: int
    start: float
    end: float
    ok: bool
    pid: Any
    classes: tuple[str, ...]
    message: str
    phase: str | None

    @classmethod
    def parse(cls, raw: Sequence[Any]) -> Rec:
        thread, start, end, ok, pid, classes, message, phase = raw
        return cls(thread, start, end, ok, pid, tuple(classes), message, phase)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def error(self) -> str:
        return self.classes[0] if self.classes else ""

    def brief(self) -> str:
        return (
            f"thread {self.thread} [{self.start:.3f}, {self.end:.3f}] {self.error}: {self.message}"
        )


def records(raw: Iterable[Sequence[Any]]) -> list[Rec]:
    return sorted((Rec.parse(r) for r in raw), key=lambda r: r.start)


@dataclass
class Timeline:
    """Requests sorted by where they fall relative to an outage [down, up)."""

    before: list[Rec]  # finished before the stop was issued
    in_flight: list[Rec]  # started before it, finished after
    while_down: list[Rec]  # started while the server was stopping, stopped or starting
    after: list[Rec]  # started once the server accepted connections again

    @staticmethod
    def failed(recs: Iterable[Rec]) -> list[Rec]:
        return [r for r in recs if not r.ok]


def timeline(recs: Sequence[Rec], down: float, up: float) -> Timeline:
    return Timeline(
        before=[r for r in recs if r.end < down],
        in_flight=[r for r in recs if r.start < down <= r.end],
        while_down=[r for r in recs if down <= r.start < up],
        after=[r for r in recs if r.start >= up],
    )


def assert_connection_errors(recs: Iterable[Rec]) -> None:
    """Every failed request is Django's OperationalError naming the connection problem."""
    for rec in Timeline.failed(recs):
        assert "django.db.utils.OperationalError" in rec.classes, rec.brief()
        assert names_connection_problem(rec.message), rec.brief()


def assert_resumed(line: Timeline, threads: int) -> None:
    """Every request started once the server was back succeeded, in each of ``threads``."""
    failed_after = Timeline.failed(line.after)
    assert failed_after == [], [r.brief() for r in failed_after]
    assert {r.thread for r in line.after if r.ok} == set(range(threads))


def error_counts(recs: Iterable[Rec]) -> dict[str, int]:
    return dict(Counter(r.error for r in recs if not r.ok))


def pool_counters(pool: dict[str, Any]) -> dict[str, Any]:
    """The pool_status() fields a fault report shows."""
    keys = (
        "size",
        "checked_out",
        "idle",
        "connections_opened",
        "connections_closed",
        "connections_invalidated",
        "connections_recycled",
        "pings",
        "pings_failed",
        "timeouts",
        "checkouts",
    )
    return {k: pool[k] for k in keys}


def report(scenario: str, target: Any, **facts: Any) -> dict[str, Any]:
    entry = {"scenario": scenario, "server": target.vendor, "driver": target.driver, **facts}
    line = json.dumps(entry, default=str)
    print(f"FAULT-REPORT {line}")
    REPORTS.append(entry)
    path = os.environ.get("SAPOOL_FAULT_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return entry


class ChildFailed(AssertionError):
    pass


class Child:
    """A ``tests.faults.child`` process and its command channel."""

    def __init__(
        self,
        config: dict[str, Any],
        log: Path,
        start_timeout: float = 60.0,
        prefix: Sequence[str] = (),
    ) -> None:
        """Start the child; ``prefix`` runs it inside something, e.g. ``Namespace.prefix()``."""
        self.log = log
        self._log_file = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tests.faults.child"],
            cwd=ROOT,
            env={**os.environ, "SAPOOL_FAULT_CHILD": json.dumps(config)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            bufsize=1,
        )
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._other: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        hello = self._next(start_timeout, "start")
        self.pid = hello["pid"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("SAPOOL-REPLY "):
                self._replies.put(json.loads(line.removeprefix("SAPOOL-REPLY ")))
            else:
                self._other.append(line)
        self._replies.put(None)  # end of output: the child exited

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            answer = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise ChildFailed(
                f"child gave no answer to {what} within {timeout:g} s{self.tail()}"
            ) from None
        if answer is None:
            raise ChildFailed(f"child exited during {what} (exit {self.proc.wait()}){self.tail()}")
        if "error" in answer:
            raise ChildFailed(f"child failed on {what}:\n{answer['error']}{self.tail()}")
        return answer

    def call(self, op: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        """Send one command; return its result (raise if it failed or took too long)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = self._next(timeout, op)["ok"]
        return result

    def tail(self, lines: int = 40) -> str:
        self._log_file.flush()
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        other = "".join(self._other[-10:])
        return f"\n--- child stderr ({self.log}) ---\n" + "\n".join(text) + other

    def close(self, timeout: float = 20.0) -> None:
        """Ask the child to exit; kill it if it does not within ``timeout``."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.flush()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log_file.close()


@dataclass
class Load:
    """What a child's load threads did (``start_load``): its requests, its one pool."""

    recs: list[Rec]  # by start time
    pool: dict[str, Any]  # the pool's status once the threads ended
    alive: list[Any]  # threads that did not end within the join timeout


def stop_load(child: Child) -> Load:
    """End the child's load threads; a hung one shows in ``alive`` after 30 s."""
    result = child.call("stop_load", timeout=90, join_timeout=30)
    (pool,) = result["pools"]
    return Load(records(result["records"]), pool, result["alive"])


def time_bound(seconds: float) -> Any:
    """An autouse fixture for a test module: each test, fixtures included, ends in ``seconds``.

    A bound on a hang, not on a slow machine: ``seconds`` is well above the usual time.
    Assign it to a module-level name (``bounded = time_bound(...)``).
    """

    @pytest.fixture(autouse=True)
    def bounded() -> Iterator[None]:
        start = time.monotonic()
        yield
        took = time.monotonic() - start
        assert took < seconds, f"the test took {took:.1f} s"

    return bounded


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Sampler:
    """Poll the server's session count for a database in the background; keep the peak.

    Samples that fail (the server is down) are skipped.
    """

    def __init__(self, server: Any, dbname: str, interval: float = 0.05) -> None:
        self.server = server
        self.dbname = dbname
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                count = len(self.server.sessions(self.dbname))
            except Exception:
                count = None
            if count is not None:
                self.peak = max(self.peak, count)
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
