"""A TCP fault proxy of our own: silent network faults between the pool and a server.

Stopping or freezing a server (``servers.py``) is loud or half-loud: the kernel
still answers for it. Real networks also fail silently, and only a proxy in the
path can do that on one machine. :class:`FaultProxy` listens on 127.0.0.1 on a
free port, relays each accepted client connection (a *flow*) to the upstream,
and switches all flows, old and new, between these modes:

- ``forward()``: relay bytes both ways. Flows black-holed or stalled before stay
  dead: a NAT/conntrack entry or a load balancer's flow table that dropped the
  old flows (after a reboot, an idle timeout) while new connections work.
- ``blackhole()``: a network partition, or a firewall that drops packets
  without answering. Connections are still accepted (here the kernel completes
  the handshake, as a SYN proxy or load balancer would), whatever either side
  sends is read and thrown away, nothing is ever sent and nothing is closed:
  the client waits for a reply that never comes and the server never sees it go.
- ``stall()``: a hung server or a frozen host. Like a black hole, but nothing
  is read at all, so the kernel buffers fill up and the sender blocks too; new
  connections are accepted and never read.
- ``delay(seconds)``: a slow or congested link (a cross-region hop, a
  saturated VPN): every chunk is relayed ``seconds`` late, in both directions.
- ``reset()``: a firewall or load balancer that kills the flows with a TCP RST
  (a stateful firewall that lost its state, a VIP moved): every flow is reset
  on both sides, and new connections are reset at once.
- ``forward_first(chunks)``: a server that hangs right after the login (a frozen
  host whose kernel still acknowledges, a stalled pooler): new flows relay their
  client's first ``chunks`` chunks (the handshake) and are black-holed from the
  next one on. ``forward()`` ends it for flows accepted later.
- ``garbage(data)``: a corrupted or foreign reply (a middlebox answering, a
  wrong service on the port, a desynchronised protocol): the client's bytes are
  not forwarded and each chunk it sends is answered with ``data`` instead.
- ``retarget(host, port, keep_old_flows=True)``: a failover (a DNS or VIP move
  to a new primary). New flows go to the new upstream; old flows keep relaying
  to the old one (the old primary is alive, e.g. demoted read-only) or, with
  ``keep_old_flows=False``, are closed with a FIN. The mode is not changed.

``flows()`` counts the client connections still open. A client that closes a
black-holed flow only closes its own side: the upstream socket stays open (the
server never hears of it, as behind a real partition) until ``close()``. A
stalled flow reads nothing, so it does not even notice the client leaving.
An upstream that refuses the connection makes the proxy reset the client's.

One daemon thread runs a :mod:`selectors` loop over non-blocking sockets. Mode
changes are queued under a lock, the loop is woken through a socketpair, and the
calling method returns once the proxy thread has applied the change (well within
50 ms), so a test never races its own fault.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
CHUNK = 65536
#: Stop reading a side while this much is queued for the other (backpressure, as TCP would).
BUFFER_LIMIT = 1 << 20
#: How long a mode change may take to be applied before the caller is told.
APPLY_TIMEOUT = 2.0
#: Bound on the join in close().
JOIN_TIMEOUT = 5.0

#: Per-flow states. "delay" is a forwarding flow with a non-zero delay.
FORWARD, BLACKHOLE, STALL, GARBAGE = "forward", "blackhole", "stall", "garbage"
#: What a mode change does to flows in these states; black-holed and stalled flows stay dead.
RELAYING = (FORWARD, GARBAGE)


def _rst(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on with a zero timeout)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass(eq=False)
class _Flow:
    """One accepted client connection and, while it relays, its upstream connection."""

    client: socket.socket | None
    state: str
    upstream: socket.socket | None = None
    connecting: bool = False
    delay: float = 0.0
    garbage: bytes = b""
    #: Client chunks still to relay before the flow is black-holed (None: no limit).
    budget: int | None = None
    # (due time, bytes) chunks waiting to be written to each side.
    to_upstream: deque[tuple[float, bytes]] = field(default_factory=deque)
    to_client: deque[tuple[float, bytes]] = field(default_factory=deque)
    client_eof: bool = False
    upstream_eof: bool = False

    def queued(self, q: deque[tuple[float, bytes]]) -> int:
        return sum(len(chunk) for _, chunk in q)

    def enqueue(self, q: deque[tuple[float, bytes]], data: bytes, now: float) -> None:
        # A shorter delay set later must not overtake chunks already queued.
        due = max(now + self.delay, q[-1][0] if q else 0.0)
        q.append((due, data))


class FaultProxy:
    """Relay TCP connections to an upstream, and inject silent network faults on demand."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream: tuple[str, int] = (upstream_host, upstream_port)
        self._mode = FORWARD
        self._delay = 0.0
        self._garbage = b""
        self._budget: int | None = None
        self._lock = threading.Lock()
        self._commands: deque[tuple[Callable[[], Any], threading.Event]] = deque()
        self._flows: dict[_Flow, None] = {}  # insertion-ordered set, owned by the proxy thread
        self._open_flows = 0  # published under the lock for flows()
        self._stopping = False
        self._closed = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.host: str = HOST
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._registered: dict[socket.socket, int] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"fault-proxy-{self.port}", daemon=True
        )

    # -- the test thread's side -------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start the proxy thread and return self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Close every socket and end the proxy thread (a bounded join)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with self._lock:
                self._stopping = True
            self._wake()
            self._thread.join(JOIN_TIMEOUT)
        if not self._thread.is_alive():
            self._close_all()

    def __enter__(self) -> FaultProxy:
        if self._thread.ident is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def mode(self) -> str:
        """The current mode: forward, blackhole, stall, delay, reset or garbage."""
        with self._lock:
            return self._mode

    @property
    def upstream(self) -> tuple[str, int]:
        """Where new flows are relayed to."""
        with self._lock:
            return self._upstream

    def flows(self) -> int:
        """Return the number of open client connections (flows)."""
        with self._lock:
            return self._open_flows

    def forward(self) -> None:
        """Relay new flows (and relaying ones, undelayed); dead flows stay dead."""
        self._apply(lambda: self._set_relaying(FORWARD, FORWARD, 0.0))

    def delay(self, seconds: float) -> None:
        """Relay every chunk ``seconds`` late, both ways, on relaying and new flows."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, got {seconds!r}")
        self._apply(lambda: self._set_relaying("delay", FORWARD, float(seconds)))

    def forward_first(self, chunks: int) -> None:
        """Relay each new flow's first ``chunks`` client chunks, then black-hole the flow."""
        if chunks < 0:
            raise ValueError(f"chunks must be >= 0, got {chunks!r}")
        self._apply(lambda: self._set_budget(chunks))

    def garbage(self, data: bytes) -> None:
        """Answer each chunk a client sends with ``data`` instead of forwarding it."""
        if not data:
            raise ValueError("garbage data must not be empty")
        self._apply(lambda: self._set_garbage(bytes(data)))

    def blackhole(self) -> None:
        """Accept, read and discard; never send, never close (on every flow, old and new)."""
        self._apply(lambda: self._set_dead(BLACKHOLE))

    def stall(self) -> None:
        """Accept and never read or send again (on every flow, old and new)."""
        self._apply(lambda: self._set_dead(STALL))

    def reset(self) -> None:
        """Reset every flow on both sides; reset new connections at once."""
        self._apply(self._set_reset)

    def retarget(self, host: str, port: int, keep_old_flows: bool = True) -> None:
        """Send new flows to host:port; keep the old ones relaying, or close them (FIN)."""
        self._apply(lambda: self._set_upstream((host, port), keep_old_flows))

    def _apply(self, change: Callable[[], Any]) -> None:
        """Have the proxy thread run ``change`` and wait until it has."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        if not self._thread.is_alive():
            # Not started yet (or dead): nothing races us, apply it here.
            change()
            return
        done = threading.Event()
        with self._lock:
            self._commands.append((change, done))
        self._wake()
        if not done.wait(APPLY_TIMEOUT):
            raise RuntimeError(f"the proxy thread did not apply the change in {APPLY_TIMEOUT} s")

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    # -- mode changes (run on the proxy thread) --------------------------------------------

    def _set_budget(self, chunks: int) -> None:
        with self._lock:
            self._mode, self._budget, self._delay = FORWARD, chunks, 0.0

    def _set_relaying(self, mode: str, state: str, delay: float) -> None:
        with self._lock:
            self._mode, self._delay, self._budget = mode, delay, None
        for flow in self._flows:
            if flow.state in RELAYING:
                flow.state, flow.delay = state, delay

    def _set_garbage(self, data: bytes) -> None:
        with self._lock:
            self._mode, self._garbage, self._delay = GARBAGE, data, 0.0
        for flow in self._flows:
            if flow.state in RELAYING:
                flow.state, flow.garbage, flow.delay = GARBAGE, data, 0.0

    def _set_dead(self, state: str) -> None:
        with self._lock:
            self._mode = state
        for flow in self._flows:
            flow.state = state
            # Whatever was in flight is lost with the path.
            flow.to_client.clear()
            flow.to_upstream.clear()

    def _set_reset(self) -> None:
        with self._lock:
            self._mode = "reset"
        for flow in list(self._flows):
            self._drop(flow, rst=True)

    def _set_upstream(self, address: tuple[str, int], keep_old_flows: bool) -> None:
        with self._lock:
            self._upstream = address
        if not keep_old_flows:
            for flow in list(self._flows):
                self._drop(flow, rst=False)

    # -- the proxy thread ---------------------------------------------------------------------

    def _run(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        return
                    commands = list(self._commands)
                    self._commands.clear()
                for change, done in commands:
                    try:
                        change()
                    finally:
                        # Published before the caller returns, so flows() is never stale.
                        self._publish()
                        done.set()
                timeout = self._refresh_interest()
                for key, events in self._selector.select(timeout):
                    sock = key.fileobj
                    if sock is self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(4096)
                    elif sock is self._listener:
                        self._accept()
                    else:
                        flow, side = key.data
                        if flow in self._flows:
                            self._service(flow, side, events)
                self._publish()
        finally:
            self._close_all()

    def _publish(self) -> None:
        count = sum(1 for flow in self._flows if flow.client is not None)
        with self._lock:
            self._open_flows = count

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            client.setblocking(False)
            with self._lock:
                mode, upstream = self._mode, self._upstream
                delay, garbage, budget = self._delay, self._garbage, self._budget
            if mode == "reset":
                _rst(client)
                continue
            if mode in (BLACKHOLE, STALL):
                self._flows[_Flow(client, mode)] = None
                continue
            flow = _Flow(client, GARBAGE if mode == GARBAGE else FORWARD)
            flow.delay, flow.garbage, flow.budget = delay, garbage, budget
            self._flows[flow] = None
            self._connect_upstream(flow, upstream)

    def _connect_upstream(self, flow: _Flow, address: tuple[str, int]) -> None:
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        up.setblocking(False)
        flow.upstream = up
        flow.connecting = True
        try:
            up.connect(address)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # Refused or unreachable: the client sees its connection reset, as a NAT would.
            self._drop(flow, rst=True)
            return
        flow.connecting = False

    def _refresh_interest(self) -> float | None:
        """Register each socket for what its flow needs now; return the select timeout."""
        now = time.monotonic()
        next_due: float | None = None
        wanted: dict[socket.socket, tuple[int, Any]] = {}
        for flow in self._flows:
            for side in ("client", "upstream"):
                sock: socket.socket | None = getattr(flow, side)
                if sock is None:
                    continue
                mask = 0
                if self._wants_read(flow, side):
                    mask |= selectors.EVENT_READ
                if side == "upstream" and flow.connecting and flow.state != STALL:
                    mask |= selectors.EVENT_WRITE
                queue = flow.to_client if side == "client" else flow.to_upstream
                if queue and self._may_write(flow, side):
                    if queue[0][0] <= now:
                        mask |= selectors.EVENT_WRITE
                    elif next_due is None or queue[0][0] < next_due:
                        next_due = queue[0][0]
                if mask:
                    wanted[sock] = (mask, (flow, side))
        for sock in list(self._registered):
            if sock not in wanted:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(sock)
                del self._registered[sock]
        for sock, (mask, data) in wanted.items():
            if sock not in self._registered:
                self._selector.register(sock, mask, data)
            elif self._registered[sock] != mask:
                self._selector.modify(sock, mask, data)
            self._registered[sock] = mask
        if next_due is None:
            return None
        return max(0.0, next_due - now)

    def _wants_read(self, flow: _Flow, side: str) -> bool:
        if flow.state == STALL:
            return False
        if side == "client":
            if flow.client_eof:
                return False
            if flow.state == FORWARD:
                return flow.queued(flow.to_upstream) < BUFFER_LIMIT
            if flow.state == GARBAGE:
                return flow.queued(flow.to_client) < BUFFER_LIMIT
            return True  # black hole: read and discard
        if flow.connecting or flow.upstream_eof:
            return False
        if flow.state == FORWARD:
            return flow.queued(flow.to_client) < BUFFER_LIMIT
        return True  # black hole and garbage: the upstream's bytes are discarded

    def _may_write(self, flow: _Flow, side: str) -> bool:
        if side == "client":
            return flow.state in RELAYING
        return flow.state == FORWARD and not flow.connecting

    def _service(self, flow: _Flow, side: str, events: int) -> None:
        if side == "upstream" and flow.connecting:
            if events & selectors.EVENT_WRITE:
                assert flow.upstream is not None
                err = flow.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    if flow.state in RELAYING:
                        self._drop(flow, rst=True)
                    else:
                        self._close_side(flow, "upstream")
                    return
                flow.connecting = False
            return
        if events & selectors.EVENT_READ:
            self._read(flow, side)
        if flow in self._flows and events & selectors.EVENT_WRITE:
            self._write(flow, side)
        if flow in self._flows:
            self._finish_half_closes(flow)

    def _read(self, flow: _Flow, side: str) -> None:
        sock = flow.client if side == "client" else flow.upstream
        assert sock is not None
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost(flow, side, rst=True)
            return
        now = time.monotonic()
        if not data:
            self._lost(flow, side, rst=False)
            return
        if flow.state == FORWARD:
            if side == "client":
                if flow.budget == 0:  # forward_first(): the handshake is over
                    flow.state = BLACKHOLE
                    flow.to_client.clear()
                    return
                if flow.budget is not None:
                    flow.budget -= 1
                flow.enqueue(flow.to_upstream, data, now)
            else:
                flow.enqueue(flow.to_client, data, now)
        elif flow.state == GARBAGE and side == "client":
            flow.enqueue(flow.to_client, flow.garbage, now)
        # Black hole (and the upstream's bytes in garbage mode): discarded.

    def _write(self, flow: _Flow, side: str) -> None:
        sock = flow.client if side == "client" else flow.upstream
        queue = flow.to_client if side == "client" else flow.to_upstream
        assert sock is not None
        now = time.monotonic()
        while queue and queue[0][0] <= now and self._may_write(flow, side):
            due, chunk = queue[0]
            try:
                sent = sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lost(flow, side, rst=True)
                return
            if sent < len(chunk):
                queue[0] = (due, chunk[sent:])
                return
            queue.popleft()

    def _lost(self, flow: _Flow, side: str, rst: bool) -> None:
        """React to EOF (rst=False) or an error (rst=True) on one side of a flow."""
        if flow.state in (BLACKHOLE, STALL):
            # The other side must not learn anything: close only the side that went away.
            self._close_side(flow, side)
            return
        if rst:
            self._drop(flow, rst=True)
            return
        if flow.state == GARBAGE:
            self._drop(flow, rst=False)
            return
        if side == "client":
            flow.client_eof = True
        else:
            flow.upstream_eof = True

    def _finish_half_closes(self, flow: _Flow) -> None:
        """Pass a FIN on once everything before it was written; end a flow closed both ways."""
        if flow.state != FORWARD:
            return
        if flow.client_eof and not flow.to_upstream and not flow.connecting and flow.upstream:
            with contextlib.suppress(OSError):
                flow.upstream.shutdown(socket.SHUT_WR)
        if flow.upstream_eof and not flow.to_client and flow.client:
            with contextlib.suppress(OSError):
                flow.client.shutdown(socket.SHUT_WR)
        if flow.client_eof and flow.upstream_eof and not flow.to_client and not flow.to_upstream:
            self._drop(flow, rst=False)

    def _close_side(self, flow: _Flow, side: str) -> None:
        sock = getattr(flow, side)
        setattr(flow, side, None)
        if flow.client is None and flow.upstream is None:
            self._flows.pop(flow, None)
        # Counted before the peer can see the close, so flows() is right once it does.
        self._publish()
        if sock is not None:
            self._forget(sock)
            sock.close()

    def _drop(self, flow: _Flow, rst: bool) -> None:
        """Close both sides of a flow, with RSTs or FINs."""
        socks = (flow.client, flow.upstream)
        flow.client = flow.upstream = None
        self._flows.pop(flow, None)
        # Counted before the peer can see the close, so flows() is right once it does.
        self._publish()
        for sock in socks:
            if sock is not None:
                self._forget(sock)
                if rst:
                    _rst(sock)
                else:
                    sock.close()

    def _forget(self, sock: socket.socket) -> None:
        if sock in self._registered:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)
            del self._registered[sock]

    def _close_all(self) -> None:
        for flow in list(self._flows):
            self._drop(flow, rst=False)
        with self._lock:
            self._open_flows = 0
            commands = list(self._commands)
            self._commands.clear()
        for _, done in commands:
            done.set()
        with contextlib.suppress(Exception):
            self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
