"""The watchdog (deadline.py): a round trip past its deadline gets its socket shut down."""

from __future__ import annotations

import socket
import time

import django_sapool
from django_sapool.deadline import WATCHDOG


def test_a_deadline_shuts_its_socket_down() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        deadline = WATCHDOG.arm(ours.fileno(), 0.1)
        ours.settimeout(5)
        started = time.monotonic()
        assert ours.recv(1) == b""  # shut down: the end of the stream, no data waited for
        assert time.monotonic() - started < 2
        assert WATCHDOG.disarm(deadline) is True  # it had fired


def test_a_disarmed_deadline_leaves_its_socket_alone() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert WATCHDOG.disarm(WATCHDOG.arm(ours.fileno(), 0.1)) is False
        time.sleep(0.3)
        theirs.send(b"x")
        ours.settimeout(5)
        assert ours.recv(1) == b"x"


def test_after_fork_in_the_process_that_runs_the_watchdog_keeps_its_deadlines() -> None:
    # gunicorn's post_fork without a fork of ours, a test, the docs: after_fork()
    # where nothing was inherited. A deadline armed before must still fire, by
    # the same thread (it used to die on "cannot wait on un-acquired lock").
    ours, theirs = socket.socketpair()
    with ours, theirs:
        deadline = WATCHDOG.arm(ours.fileno(), 0.3)
        assert WATCHDOG.threads_started == 1
        django_sapool.after_fork()
        ours.settimeout(5)
        assert ours.recv(1) == b""
        assert deadline.fired
        # The same thread fires the next one: none was started for it.
        assert WATCHDOG.disarm(WATCHDOG.arm(ours.fileno(), 0.05)) is False
        assert WATCHDOG.threads_started == 1



def test_a_deadline_never_shuts_down_another_socket_given_its_number() -> None:
    # A connect moving on to another host closes its first socket; the number
    # may be another connection's by the deadline, which must keep working.
    first, peer = socket.socketpair()
    fd = first.fileno()
    deadline = WATCHDOG.arm(fd, 0.2)
    first.close()
    peer.close()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert fd in (ours.fileno(), theirs.fileno())  # the lowest free number, reused
        time.sleep(0.5)
        assert deadline.fired  # its time came, and went by
        theirs.send(b"x")
        ours.send(b"y")
        ours.settimeout(5)
        theirs.settimeout(5)
        assert (ours.recv(1), theirs.recv(1)) == (b"x", b"y")
