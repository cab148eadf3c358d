"""The event-loop comparators (fastsock._asyncloops), over TCP4, TCP6 and
Unix streams, each test run for both APIs on both event loops.

What is checked: every byte arrives intact and once (the peer, a twin's
``stream_recv`` with ``verify``, reads the contract's pattern), through
tiny socket buffers too; a round trip checks its echo and records RTT
samples; EOF, a reset and a silent peer end in the contract's errors within
their bound; bad arguments fail before any I/O; a failed callback or an
abort ends the running call in one line; nothing is left behind (tasks,
loops, file descriptors: the ``net`` fixture counts them).  The peers are
threads running the loaded twin (the compiled one releases the GIL).
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import os
import socket
import struct
import sys
import threading
from array import array
from types import SimpleNamespace
from typing import Any

import pytest
from support import TIMEOUT, TINY_BUFFER, Elapsed, nothing_to_read, one_line, recv_exactly

import fastsock
from fastsock import _asyncloops as A

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning")

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
# The tree whose fastsock these tests imported: a subprocess runs the same.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastsock.__file__)))
KINDS = [(loop, api) for loop in A.EVENT_LOOPS for api in A.APIS]
MODE = "nonblocking"
# A stall must be noticed within this bound (s) for the short timeout below.
SHORT = 0.3
STALL_BOUND = SHORT * (1 + 1 / A.WATCH_TICKS) + 1.0


@pytest.fixture(scope="module", autouse=True)
def libuv_global_state() -> None:
    """libuv opens a process-wide signal pipe with its first loop, kept until
    the process exits: made here, before ``net`` counts file descriptors."""
    if HAVE_UVLOOP:
        A.new_event_loop("uvloop").close()


@pytest.fixture(params=KINDS, ids=[f"{loop}-{api}" for loop, api in KINDS])
def kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    loop, _api = request.param
    if loop == "uvloop" and not HAVE_UVLOOP:
        pytest.skip("uvloop is not installed (pip install 'fastsock[uvloop]'; "
                    "the test extra installs it)")
    return request.param


@pytest.fixture
def conn(net: Any, kind: tuple[str, str]) -> Any:
    """``conn(pair)``: an AsyncConn of this kind on the pair's measured end,
    closed at the end of the test (before ``net`` counts what is left),
    also when the test failed."""
    made: list[A.AsyncConn] = []

    def make(pair: Any, **kw: Any) -> A.AsyncConn:
        c = A.AsyncConn(pair.a, *kind, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def idle(c: A.AsyncConn) -> bool:
    """No task of the connection's loop is left unfinished."""
    return not [t for t in asyncio.all_tasks(c.loop) if not t.done()]


def count_for(size: int) -> int:
    return max(1, min(1000, (1 << 20) // size))


# ------------------------------------------------------------ send


@pytest.mark.parametrize("size", (1, 64, 65536 + 3, 1 << 20))
@pytest.mark.parametrize("transport", ("tcp4", "tcp6", "unix"))
def test_send_intact(net, conn, transport, size):
    pair = net.pair(transport)
    count = count_for(size)
    total = count * size
    receiver = net.peer(fastsock.stream_recv, pair.b, None, 65536, "blocking",
                        timeout=TIMEOUT, verify=True)
    c = conn(pair)
    assert c.stream_send(pair.a, count, size, MODE, timeout=TIMEOUT, pattern=True) == total
    assert idle(c)
    c.close()  # the receiver's EOF: it counts every byte once, no more
    assert receiver.join() == total


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_send_through_tiny_buffers_flushes_everything(net, conn, transport):
    """Partial sends and waits on every message; when stream_send returns,
    nothing is left in the transport's buffer (streams) and the socket
    keeps its options."""
    pair = net.pair(transport, bufsize=TINY_BUFFER)
    size, count = 65536 + 3, 40
    reader = net.peer(fastsock.stream_recv, pair.b, count * size, 4096, "blocking",
                      timeout=TIMEOUT, verify=True)
    c = conn(pair)
    if c.writer is not None:
        limits = c.writer.transport.get_write_buffer_limits()
    assert c.stream_send(pair.a, count, size, MODE, timeout=TIMEOUT, pattern=True) == count * size
    if c.writer is not None:
        assert c.writer.transport.get_write_buffer_size() == 0
        assert c.writer.transport.get_write_buffer_limits() == limits
    assert reader.join() == count * size
    assert nothing_to_read(pair.b)
    c.close()


def test_repeated_calls_continue_the_pattern_on_one_loop(net, conn):
    pair = net.pair("unix")
    c = conn(pair)
    loop = c.loop
    reader = net.peer(recv_exactly, pair.b, 3 * 1000)
    for _ in range(3):  # each call starts the pattern at 0, as the twins' do
        assert c.stream_send(pair.a, 10, 100, MODE, timeout=TIMEOUT, pattern=True) == 1000
    assert c.loop is loop and idle(c)
    c.close()
    data = reader.join()
    assert data == 3 * bytes(i % 251 for i in range(1000))


@pytest.mark.parametrize("transport", ("tcp4", "tcp6"))
@pytest.mark.parametrize("nodelay", (0, 1))
def test_the_socket_keeps_its_tcp_nodelay(net, conn, transport, nodelay):
    """asyncio and uvloop turn TCP_NODELAY on for their transports; the case
    decides it, the same for every impl."""
    pair = net.pair(transport)
    pair.a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, nodelay)
    c = conn(pair)
    assert pair.a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == nodelay
    c.close()


def test_tcp_nodelay_kept_on_a_socket_with_its_protocol_number(net, conn):
    """asyncio sets TCP_NODELAY only on a socket whose proto is IPPROTO_TCP
    (as ``create_connection`` makes them; the suite's pairs say 0)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        b, _ = listener.accept()
    with a, b:
        assert a.proto == socket.IPPROTO_TCP
        a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        c = conn(SimpleNamespace(a=a))
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        c.close()


# ------------------------------------------------------------ pingpong


@pytest.mark.parametrize("size", (1, 64, 65536))
@pytest.mark.parametrize("transport", ("tcp4", "tcp6", "unix"))
def test_pingpong_intact_with_samples(net, conn, transport, size):
    pair = net.pair(transport)
    count = 200
    echo = net.peer(fastsock.stream_echo, pair.b, size, "blocking", timeout=TIMEOUT)
    samples = array("q", [-1] * (count + 1))
    c = conn(pair)
    assert c.stream_pingpong(pair.a, count, size, MODE, timeout=TIMEOUT,
                             samples=samples, pattern=True) == count
    assert all(s > 0 for s in samples[:count]) and samples[count] == -1
    assert idle(c)
    c.close()  # EOF ends the echo
    assert echo.join() == count * size


def test_a_wrong_echo_fails_the_round_trip(net, conn):
    pair = net.pair("tcp4")
    size = 100

    def bad_echo() -> None:
        for i in range(3):
            data = bytearray(recv_exactly(pair.b, size))
            if i == 2:
                data[37] ^= 0xFF
            pair.b.sendall(data)

    peer = net.peer(bad_echo)
    c = conn(pair)
    with pytest.raises(ValueError) as info:
        c.stream_pingpong(pair.a, 5, size, MODE, timeout=TIMEOUT, pattern=True)
    assert f"byte {2 * size + 37}:" in one_line(info.value)
    peer.join()
    c.close()


# ------------------------------------------------------------ errors


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_eof_in_a_round_trip_is_a_reset(net, conn, transport):
    pair = net.pair(transport)

    def half_echo() -> None:  # answers half of the second round trip, then EOF
        pair.b.sendall(recv_exactly(pair.b, 64))
        pair.b.sendall(recv_exactly(pair.b, 64)[:32])
        pair.b.shutdown(socket.SHUT_WR)

    peer = net.peer(half_echo)
    c = conn(pair)
    with Elapsed() as t, pytest.raises(ConnectionResetError) as info:
        c.stream_pingpong(pair.a, 5, 64, MODE, timeout=TIMEOUT)
    assert info.value.errno == errno.ECONNRESET
    one_line(info.value)
    assert t.s < TIMEOUT
    peer.join()
    assert idle(c)
    c.close()


def _reset(sock: socket.socket) -> None:
    """Close with a reset (RST) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("scenario", ("stream", "pingpong"))
def test_a_reset_peer_is_an_oserror(net, conn, scenario):
    pair = net.pair("tcp4")
    c = conn(pair)
    _reset(pair.b)
    with Elapsed() as t, pytest.raises(OSError) as info:
        if scenario == "stream":
            c.stream_send(pair.a, 10_000, 65536, MODE, timeout=TIMEOUT)
        else:
            c.stream_pingpong(pair.a, 5, 64, MODE, timeout=TIMEOUT)
    assert isinstance(info.value, (ConnectionResetError, BrokenPipeError)), repr(info.value)
    one_line(info.value)
    assert t.s < TIMEOUT
    c.close()


def test_a_silent_peer_times_out(net, conn):
    """The peer reads nothing (stream) or never answers (pingpong): the
    contract's TimeoutError, within the timeout and one watchdog tick."""
    pair = net.pair("tcp4", bufsize=TINY_BUFFER)
    c = conn(pair)
    with Elapsed() as t, pytest.raises(TimeoutError) as info:
        c.stream_pingpong(pair.a, 5, 64, MODE, timeout=SHORT)
    assert SHORT <= t.s < STALL_BOUND, t.s
    assert info.value.errno == errno.ETIMEDOUT
    with Elapsed() as t, pytest.raises(TimeoutError):
        c.stream_send(pair.a, 1000, 1 << 20, MODE, timeout=SHORT)
    assert SHORT <= t.s < STALL_BOUND, t.s
    assert idle(c)
    c.close()  # bounded although the transport still holds bytes the peer never reads


def test_a_slow_peer_is_not_a_stall(net, conn):
    """The timeout bounds each wait, not the call: a call longer than the
    timeout, making progress, succeeds."""
    pair = net.pair("unix")
    count = 12

    def slow_echo() -> None:
        for _ in range(count):
            data = recv_exactly(pair.b, 64)
            threading.Event().wait(SHORT / 3)
            pair.b.sendall(data)

    peer = net.peer(slow_echo)
    c = conn(pair)
    with Elapsed() as t:
        assert c.stream_pingpong(pair.a, count, 64, MODE, timeout=SHORT) == count
    assert t.s > SHORT * 2
    peer.join()
    c.close()


def test_abort_ends_the_running_call(net, conn):
    pair = net.pair("tcp4")
    c = conn(pair)
    why = RuntimeError("the peer died")
    c.loop.call_later(0.05, c.abort, why)
    with Elapsed() as t, pytest.raises(RuntimeError) as info:
        c.stream_pingpong(pair.a, 5, 64, MODE, timeout=TIMEOUT)
    assert info.value is why
    assert t.s < 1.0
    c.abort(RuntimeError("no call is running: nothing to end"))
    c.close()


def test_a_failed_callback_ends_the_call_in_one_line(net, conn):
    pair = net.pair("tcp4")
    c = conn(pair)

    def broken() -> None:
        raise KeyError("inside a callback\nof the loop")

    c.loop.call_later(0.05, broken)
    with Elapsed() as t, pytest.raises(A.EventLoopError) as info:
        c.stream_pingpong(pair.a, 5, 64, MODE, timeout=TIMEOUT)
    assert "KeyError" in one_line(info.value)
    assert t.s < 1.0
    c.close()


# ------------------------------------------------------------ arguments


@pytest.mark.parametrize("call, exc, says", [
    (lambda c, s: c.stream_send(s, 0, 64, MODE), ValueError, "count must be > 0"),
    (lambda c, s: c.stream_send(s, 1, 0, MODE), ValueError, "size must be > 0"),
    (lambda c, s: c.stream_send(s, 1, 64.0, MODE), TypeError, "size must be an int"),
    (lambda c, s: c.stream_send(s, 1, 64, "blocking"), ValueError, "mode must be 'nonblocking'"),
    (lambda c, s: c.stream_send(s, 1, 64, "spin"), ValueError, "mode must be 'nonblocking'"),
    (lambda c, s: c.stream_send(s, 1, 64, "fast"), ValueError, "unknown mode"),
    (lambda c, s: c.stream_send(s, 1, 64, MODE, timeout=0), ValueError, "timeout"),
    (lambda c, s: c.stream_send(s, 1, 64, MODE, timeout=float("nan")), ValueError, "timeout"),
    (lambda c, s: c.stream_send(None, 1, 64, MODE), TypeError, "socket.socket"),
    (lambda c, s: c.stream_pingpong(s, 4, 64, MODE, samples=array("q", [0] * 3)),
     ValueError, "needs 4"),
    (lambda c, s: c.stream_pingpong(s, 4, 64, MODE, samples=array("i", [0] * 4)),
     TypeError, "int64"),
    (lambda c, s: c.stream_pingpong(s, 4, 64, MODE, samples=bytes(32)), TypeError, "writable"),
])
def test_bad_arguments_fail_before_any_io(net, conn, call, exc, says):
    pair = net.pair("tcp4")
    c = conn(pair)
    with pytest.raises(exc) as info:
        call(c, pair.a)
    assert says in one_line(info.value)
    assert nothing_to_read(pair.b)
    c.close()


def test_another_socket_is_refused(net, conn):
    pair, other = net.pair("tcp4"), net.pair("tcp4")
    c = conn(pair)
    with pytest.raises(ValueError) as info:
        c.stream_send(other.a, 1, 64, MODE)
    assert "not the socket" in one_line(info.value)
    assert nothing_to_read(other.b) and nothing_to_read(pair.b)
    c.close()


@pytest.mark.parametrize("bad, exc", [("udp4", ValueError), ("closed", ValueError),
                                      ("notsock", TypeError)])
def test_a_connection_needs_an_open_stream_socket(net, bad, exc):
    if bad == "udp4":
        sock: Any = net.pair("udp4").a
    elif bad == "closed":
        sock = net.pair("tcp4").a
        sock.close()
    else:
        sock = 3
    with pytest.raises(exc) as info:
        A.AsyncConn(sock, "asyncio", "streams")
    one_line(info.value)


@pytest.mark.parametrize("event_loop, api, says", [
    ("trio", "streams", "unknown event loop 'trio'"),
    ("asyncio", "protocols", "unknown API 'protocols'"),
])
def test_unknown_event_loop_or_api(net, event_loop, api, says):
    pair = net.pair("tcp4")
    with pytest.raises(ValueError) as info:
        A.AsyncConn(pair.a, event_loop, api)
    assert says in one_line(info.value)
    assert pair.a.fileno() >= 0  # not taken: still the caller's to close


# ------------------------------------------------------------ the loops themselves


def test_close_closes_the_socket_and_the_loop_once(net, conn):
    pair = net.pair("tcp4")
    c = conn(pair)
    c.close()
    assert c.closed and c.loop.is_closed()
    assert pair.a.fileno() == -1
    assert recv_exactly(pair.b, 1) == b""  # the peer's EOF
    c.close()  # idempotent
    with pytest.raises(ValueError) as info:
        c.stream_send(pair.a, 1, 64, MODE)
    assert "closed" in one_line(info.value)


def test_describe_names_the_event_loop(net, kind, conn):
    pair = net.pair("unix")
    with conn(pair) as c:
        if kind[0] == "asyncio":
            assert c.event_loop.startswith("asyncio ") and "SelectorEventLoop" in c.event_loop
        else:
            import uvloop

            assert c.event_loop == f"uvloop {uvloop.__version__}"
        assert "\n" not in c.event_loop


def test_asyncio_is_asyncio_whatever_the_policy(net):
    if not HAVE_UVLOOP:
        pytest.skip("needs uvloop's policy (pip install 'fastsock[uvloop]')")
    import uvloop

    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        loop = A.new_event_loop("asyncio")
    finally:
        asyncio.set_event_loop_policy(old)
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert A.describe(loop).startswith("asyncio ")
    finally:
        loop.close()


def test_missing_uvloop_is_an_import_error_with_the_hint(net, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    pair = net.pair("tcp4")
    with pytest.raises(ImportError) as info:
        A.AsyncConn(pair.a, "uvloop", "sock")
    assert "pip install 'fastsock[uvloop]'" in one_line(info.value)
    assert pair.a.fileno() >= 0


# ------------------------------------------------------------ Ctrl-C

CTRL_C = """
import os, signal, socket, sys, threading, time
from fastsock._asyncloops import AsyncConn
a, b = socket.socketpair()
c = AsyncConn(a, sys.argv[1], sys.argv[2])
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = time.monotonic()
try:
    c.stream_pingpong(a, 5, 64, "nonblocking", 30.0)  # a silent peer
except KeyboardInterrupt:
    print(time.monotonic() - t0)
c.close()
b.close()
print(c.closed)
"""


def test_ctrl_c_ends_a_call_promptly(kind):
    """In its own process (a SIGINT to the test process would end pytest):
    KeyboardInterrupt well before the call's timeout, then a clean close
    (``-W error``: an unclosed loop or transport would fail it)."""
    import subprocess

    res = subprocess.run([sys.executable, "-W", "error", "-c", CTRL_C, *kind],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert res.returncode == 0, res.stderr
    took, closed = res.stdout.split()
    assert float(took) < 2.0 and closed == "True"
    assert res.stderr == ""
