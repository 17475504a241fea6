"""The fault proxy (tests/faults/proxy.py), each mode against a tiny echo server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faults.proxy import FaultProxy

HOST = "127.0.0.1"
#: How long "nothing arrives" is watched for.
QUIET = 0.3
#: Bound on every socket operation that should succeed.
IO_TIMEOUT = 1.0


class EchoServer:
    """Echo every chunk back with a tag; record what it received and how connections ended."""

    def __init__(self, tag: bytes = b"") -> None:
        self.tag = tag
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.received = bytearray()
        self.ended: list[str] = []  # "eof" or "reset", one per connection that ended
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.conns)

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.05)
            with self.lock:
                self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        while not self.stopping:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                self._end("reset")
                return
            except OSError:
                return
            if not data:
                self._end("eof")
                conn.close()
                return
            with self.lock:
                self.received += data
            with contextlib.suppress(OSError):
                conn.sendall(self.tag + data)

    def _end(self, how: str) -> None:
        with self.lock:
            self.ended.append(how)

    def push(self, data: bytes, seconds: float) -> bool:
        """Send data on every connection unasked; return whether it all went within seconds."""
        deadline = time.monotonic() + seconds
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            rest = memoryview(data)
            while rest:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [conn], [], left)[1]:
                    return False
                rest = rest[conn.send(rest[:65536]) :]
        return True

    def close(self) -> None:
        self.stopping = True
        self.listener.close()
        for thread in self.threads:
            thread.join(1.0)
        with self.lock:
            for conn in self.conns:
                conn.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(HOST, echo.port) as p:
        yield p


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """Every test here must take under 3 s."""
    start = time.monotonic()
    yield
    assert time.monotonic() - start < 3.0


def wait_for(cond: Callable[[], bool], seconds: float = IO_TIMEOUT) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=IO_TIMEOUT)
    return sock


def assert_reset(proxy: FaultProxy) -> None:
    """Connect and see the connection reset.

    On loopback the RST can come so soon that connect() itself reports it
    (Python's connect with a timeout reads SO_ERROR after the handshake).
    """
    with pytest.raises(ConnectionResetError):
        sock = connect(proxy)
        try:
            sock.recv(10)
        finally:
            sock.close()


def roundtrip(sock: socket.socket, data: bytes = b"ping", expect: bytes | None = None) -> bytes:
    """Send data and read until the expected reply (data itself by default) has arrived."""
    expect = data if expect is None else expect
    sock.settimeout(IO_TIMEOUT)
    sock.sendall(data)
    got = b""
    while len(got) < len(expect):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def silent(sock: socket.socket, seconds: float = QUIET) -> bool:
    """Return whether nothing at all (no byte, no FIN, no RST) arrives for seconds."""
    sock.settimeout(seconds)
    try:
        sock.recv(65536)
    except TimeoutError:
        return True
    except OSError:
        return False
    return False


def fill(sock: socket.socket, limit: int = 96 << 20) -> int | None:
    """Send until the peer stops taking bytes; return how many went, None if limit went."""
    sock.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    try:
        while sent < limit:
            if not select.select([], [sock], [], 0.2)[1]:
                return sent
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                continue
        return None
    finally:
        sock.settimeout(IO_TIMEOUT)


def relayed_then(proxy: FaultProxy, mode: str, *args: Any) -> socket.socket:
    """A flow that relayed a ping; then the proxy switched to ``mode`` (its method of
    that name, called with ``args``), which it reports."""
    old = connect(proxy)
    assert roundtrip(old) == b"ping"
    getattr(proxy, mode)(*args)
    assert proxy.mode == mode
    return old


def test_forward_relays_both_ways_and_counts_flows(proxy: FaultProxy, echo: EchoServer) -> None:
    assert proxy.mode == "forward"
    assert proxy.host == HOST and proxy.port > 0
    a, b = connect(proxy), connect(proxy)
    assert roundtrip(a, b"hello") == b"hello"
    assert roundtrip(b, b"world") == b"world"
    assert wait_for(lambda: proxy.flows() == 2)
    big = bytes(range(256)) * 4096  # 1 MiB: partial sends and backpressure
    assert roundtrip(a, big) == big
    assert echo.accepted == 2
    a.close()
    # The client's FIN reaches the upstream, whose close comes back and ends the flow.
    assert wait_for(lambda: echo.ended == ["eof"])
    assert wait_for(lambda: proxy.flows() == 1)
    b.close()


def test_blackhole_keeps_flows_open_and_silent(proxy: FaultProxy, echo: EchoServer) -> None:
    old = relayed_then(proxy, "blackhole")
    old.sendall(b"lost")
    assert silent(old)
    # Accepted and open, but never answered, and the upstream never hears of it.
    new = connect(proxy)
    new.sendall(b"lost too")
    assert silent(new)
    assert wait_for(lambda: proxy.flows() == 2)
    assert echo.accepted == 1
    assert bytes(echo.received) == b"ping"
    # Whatever the client sends is read and thrown away: it never blocks.
    assert fill(old) is None
    # The upstream's bytes are read and discarded too; its socket stays open.
    assert echo.push(b"y" * (8 << 20), seconds=1.5)
    assert silent(old, 0.1)
    assert echo.ended == []
    # Forward again: new flows work, the black-holed ones stay dead.
    proxy.forward()
    assert proxy.mode == "forward"
    fresh = connect(proxy)
    assert roundtrip(fresh, b"again") == b"again"
    assert silent(old, 0.1) and silent(new, 0.1)
    assert proxy.flows() == 3
    for s in (old, new, fresh):
        s.close()


def test_stall_stops_reading(proxy: FaultProxy, echo: EchoServer) -> None:
    old = relayed_then(proxy, "stall")
    # Nothing is read any more: the kernel buffers fill and the sender blocks.
    sent = fill(old)
    assert sent is not None
    assert silent(old, 0.1)
    # The upstream blocks too.
    assert not echo.push(b"y" * (64 << 20), seconds=0.5)
    # New connections are accepted (the flow is counted), never read.
    new = connect(proxy)
    assert wait_for(lambda: proxy.flows() == 2)
    assert fill(new) is not None
    assert echo.accepted == 1 and echo.ended == []
    # Stalled flows stay dead after forward(); new ones work.
    proxy.forward()
    assert roundtrip(connect(proxy), b"new") == b"new"
    assert silent(new, 0.1)
    old.close()
    new.close()


def test_delay_slows_every_chunk_both_ways(proxy: FaultProxy) -> None:
    old = relayed_then(proxy, "delay", 0.15)
    for sock in (old, connect(proxy)):
        start = time.monotonic()
        assert roundtrip(sock, b"slow") == b"slow"
        elapsed = time.monotonic() - start
        # 0.15 s to the upstream and 0.15 s back.
        assert 0.3 <= elapsed < 0.6, elapsed
    # Order is kept even when a shorter delay follows a longer one.
    proxy.delay(0.2)
    old.sendall(b"a")
    proxy.delay(0.0)
    old.sendall(b"b")
    got = b""
    while len(got) < 2:
        got += old.recv(10)
    assert got == b"ab"
    proxy.forward()
    start = time.monotonic()
    assert roundtrip(old, b"fast") == b"fast"
    assert time.monotonic() - start < 0.1
    old.close()


def test_reset_resets_current_and_new_flows(proxy: FaultProxy, echo: EchoServer) -> None:
    old = relayed_then(proxy, "reset")
    with pytest.raises(ConnectionResetError):
        old.recv(10)
    assert wait_for(lambda: echo.ended == ["reset"])
    # The kernel completes the handshake; the connection is reset as soon as it is accepted.
    assert_reset(proxy)
    assert proxy.flows() == 0
    assert echo.accepted == 1
    proxy.forward()
    assert roundtrip(connect(proxy), b"back") == b"back"


def test_garbage_answers_each_chunk(proxy: FaultProxy, echo: EchoServer) -> None:
    old = relayed_then(proxy, "garbage", b"\xde\xad")
    assert roundtrip(old, b"SELECT 1", expect=b"\xde\xad") == b"\xde\xad"
    assert silent(old, 0.1)  # once per chunk, nothing more
    assert roundtrip(old, b"again", expect=b"\xde\xad") == b"\xde\xad"
    new = connect(proxy)
    assert roundtrip(new, b"hi", expect=b"\xde\xad") == b"\xde\xad"
    # The upstream never saw the client's bytes.
    assert bytes(echo.received) == b"ping"
    # forward() turns the garbage flows back into relaying ones.
    proxy.forward()
    assert roundtrip(old, b"ok") == b"ok"
    assert roundtrip(new, b"ok2") == b"ok2"
    old.close()
    new.close()


def test_retarget_keeps_or_closes_old_flows(proxy: FaultProxy, echo: EchoServer) -> None:
    second = EchoServer(tag=b"B:")
    try:
        old = connect(proxy)
        assert roundtrip(old, b"1") == b"1"
        proxy.retarget(HOST, second.port)
        assert proxy.upstream == (HOST, second.port)
        assert proxy.mode == "forward"
        new = connect(proxy)
        assert roundtrip(new, b"2", expect=b"B:2") == b"B:2"
        # The old flow still relays to the old upstream.
        assert roundtrip(old, b"3") == b"3"
        proxy.retarget(HOST, echo.port, keep_old_flows=False)
        # Both old flows are closed with a FIN, their upstreams see an EOF.
        for sock in (old, new):
            sock.settimeout(IO_TIMEOUT)
            assert sock.recv(10) == b""
        assert wait_for(lambda: echo.ended == ["eof"] and second.ended == ["eof"])
        assert proxy.flows() == 0
        assert roundtrip(connect(proxy), b"4") == b"4"
    finally:
        second.close()


def test_refused_upstream_resets_the_client() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]  # nobody listens on it
    with FaultProxy(HOST, port) as proxy:
        assert_reset(proxy)
        assert proxy.flows() == 0


def test_mode_changes_apply_promptly(proxy: FaultProxy) -> None:
    sock = connect(proxy)
    assert roundtrip(sock) == b"ping"
    for change in (proxy.blackhole, proxy.stall, proxy.forward, lambda: proxy.delay(0.01)):
        start = time.monotonic()
        change()
        assert time.monotonic() - start < 0.05
    sock.close()


def test_close_ends_every_flow_and_the_thread(echo: EchoServer) -> None:
    proxy = FaultProxy(HOST, echo.port).start()
    sock = connect(proxy)
    assert roundtrip(sock) == b"ping"
    proxy.blackhole()
    held = connect(proxy)
    assert wait_for(lambda: proxy.flows() == 2)
    start = time.monotonic()
    proxy.close()
    assert time.monotonic() - start < 1.0
    assert not proxy._thread.is_alive()
    for s in (sock, held):
        s.settimeout(IO_TIMEOUT)
        assert s.recv(10) == b""
    with pytest.raises(OSError):
        connect(proxy)
    with pytest.raises(RuntimeError):
        proxy.forward()
    proxy.close()  # idempotent
