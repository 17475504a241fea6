"""A network namespace of the test's own, for real partitions on loopback.

:class:`Namespace` creates a fresh network namespace held by a small holder
process (``unshare --net`` running Python) that brings its ``lo`` up and then
waits for its stdin to close. The test process holds the other end of that
pipe, so when the test run ends, however it ends (even SIGKILL), the holder
exits (healing the namespace first) and the namespace goes away with the last
process inside it (servers left there are stopped by
:func:`tests.faults.servers.cleanup_stale`).

Commands run inside with :meth:`Namespace.prefix` (``nsenter --net=...``);
servers, application children and drivers there use 127.0.0.1 as usual, while
the test process outside reaches the servers over their UNIX sockets (path
sockets are not bound to a network namespace).

:meth:`Namespace.partition` takes the namespace's ``lo`` down. Measured on
Linux 6.x: with ``lo`` down, packets between two already-connected 127.0.0.1
sockets are dropped silently. ``send()`` succeeds into the buffer, a blocked
``recv()`` keeps waiting (until the socket's own timeout, ``TCP_USER_TIMEOUT``
(ETIMEDOUT), or the kernel's retransmission limit of about 15 minutes), and a
new ``connect()`` gets no answer to its SYN (a timeout, not "refused").
:meth:`Namespace.heal` brings ``lo`` up again; queued segments are delivered at
the next retransmission, i.e. after up to the current backoff (seconds after a
long partition). ``tc ... netem`` is not an alternative here: that kernel has no
netem qdisc.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from collections.abc import Sequence
from functools import cache

#: Runs in the new namespace: lo up, say so, then live exactly as long as stdin is
#: open. On the way out it heals the namespace: whatever still runs inside after
#: a killed test run (a server until cleanup_stale, a client) then sees the
#: server go away instead of waiting on a dead network for the kernel's ~15 min.
HOLDER = (
    "import subprocess, sys\n"
    "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
    "subprocess.run(['ip', 'link', 'set', 'lo', 'up'])\n"
)
#: Bound on every namespace command (they take milliseconds).
TIMEOUT = 10.0


class NamespaceError(RuntimeError):
    """The namespace could not be created, or a command inside it failed."""


@cache
def available() -> tuple[bool, str]:
    """Say whether network namespaces can be made here, and if not, why."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return False, f"{tool} is not installed"
    try:
        # Containers may forbid unshare even to root: try it once.
        proc = subprocess.run(
            ["unshare", "--net", "--", "ip", "link", "set", "lo", "up"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"unshare --net failed: {exc}"
    if proc.returncode != 0:
        return False, f"unshare --net failed (exit {proc.returncode}): {proc.stderr.strip()}"
    return True, ""


class Namespace:
    """A network namespace with ``lo`` up, alive from ``__enter__`` to ``__exit__``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.partitioned = False

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"<Namespace holder {pid}{' partitioned' if self.partitioned else ''}>"

    def __enter__(self) -> Namespace:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Start the holder process; return once ``lo`` is up inside."""
        assert self.proc is None, "already open"
        try:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "--", sys.executable, "-c", HOLDER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                # Not in the terminal's process group: a Ctrl-C must not end the
                # namespace before the test's cleanup has stopped what runs in it.
                start_new_session=True,
            )
        except OSError as exc:
            raise NamespaceError(f"cannot run unshare: {exc}") from exc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""  # "" also when it exited
        if line.strip() != "ready":
            self.proc.kill()
            code = self.proc.wait(TIMEOUT)
            why = self.proc.stderr.read().strip()
            self.close()
            raise NamespaceError(
                f"namespace holder did not start within {TIMEOUT:g} s (exit {code}): {why}"
            )

    @property
    def pid(self) -> int:
        """The holder's pid (its /proc entry names the namespace)."""
        if self.proc is None or self.proc.poll() is not None:
            raise NamespaceError(f"{self} is not running")
        return self.proc.pid

    def prefix(self) -> list[str]:
        """Return the command prefix that runs a command inside the namespace."""
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--"]

    def run(self, cmd: Sequence[str], timeout: float = TIMEOUT) -> str:
        """Run a command inside the namespace; return its stdout (raise if it fails)."""
        try:
            proc = subprocess.run(
                [*self.prefix(), *cmd],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NamespaceError(f"{' '.join(cmd)} in {self}: {exc}") from exc
        if proc.returncode != 0:
            raise NamespaceError(
                f"{' '.join(cmd)} in {self} failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout

    def partition(self) -> None:
        """Drop every packet inside the namespace silently (``lo`` down)."""
        self.run(["ip", "link", "set", "lo", "down"])
        self.partitioned = True

    def heal(self) -> None:
        """Deliver packets again (``lo`` up); connections that survived carry on."""
        self.run(["ip", "link", "set", "lo", "up"])
        self.partitioned = False

    def close(self) -> None:
        """End the holder (closing its stdin); the namespace goes with its last process."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)
