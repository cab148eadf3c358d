"""Stream loops (TCP4, TCP6, Unix stream), each test run against both twins.

What is checked: every byte arrives intact, in order and once, at every size
and in every mode, also through tiny socket buffers (partial sends, short
reads); the sender's pattern is the contract's (read by a plain-Python
reader, not by the twin itself); ``verify`` catches a wrong byte; ``total``
is never over-read; echo and ping-pong round trips with RTT samples; a
silent peer ends in TimeoutError; a blocked recv lets other threads run.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from array import array

import pytest
from support import (
    STREAM_TRANSPORTS,
    TIMEOUT,
    TINY_BUFFER,
    Elapsed,
    one_line,
    pattern,
    recv_exactly,
)

SIZES = (1, 7, 64, 4096, 65536, 1 << 20, 4 << 20)
# Total bytes moved per transfer test (bytes), and the message count bound:
# enough to cross every buffer many times, small enough to stay fast.
TRANSFER_BYTES = 1 << 20
MAX_COUNT = 1000


def count_for(size: int) -> int:
    return max(1, min(MAX_COUNT, TRANSFER_BYTES // size))


def assert_no_more_data(pair) -> None:
    """After the sender's EOF, the receiver finds nothing beyond what it
    counted: no byte was duplicated."""
    pair.b.shutdown(socket.SHUT_WR)
    pair.a.settimeout(TIMEOUT)
    assert pair.a.recv(1) == b""


# ------------------------------------------------------------ transfers


@pytest.mark.parametrize("bufsize", [None, TINY_BUFFER], ids=["defaultbuf", "tinybuf"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
def test_transfer_intact(loops, net, transport, mode, size, bufsize):
    pair = net.pair(transport, bufsize=bufsize)
    count = count_for(size)
    total = count * size
    # two spinning Python loops in one process would take turns at the GIL
    sender = net.peer(loops.stream_send, pair.b, count, size, mode,
                      timeout=TIMEOUT, pattern=True, process=mode == "spin")
    got = loops.stream_recv(pair.a, total, size, mode, timeout=TIMEOUT, verify=True)
    assert sender.join() == total
    assert got == total
    assert_no_more_data(pair)


@pytest.mark.parametrize("size", (7, 4096, 65536 + 3))
@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_send_pattern_is_the_contracts(loops, net, transport, mode, size):
    """A plain reader sees byte i == i % PATTERN_PERIOD across messages."""
    pair = net.pair(transport)
    count = 5
    reader = net.peer(recv_exactly, pair.b, count * size + 1)
    assert loops.stream_send(pair.a, count, size, mode, timeout=TIMEOUT,
                             pattern=True) == count * size
    pair.a.shutdown(socket.SHUT_WR)
    data = reader.join()
    assert len(data) == count * size
    assert data == pattern(0, count * size)


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_verify_accepts_a_plain_sender(loops, net, transport, mode):
    pair = net.pair(transport)
    data = pattern(0, 100_000)
    writer = net.peer(pair.b.sendall, data)
    assert loops.stream_recv(pair.a, len(data), 4096, mode, timeout=TIMEOUT,
                             verify=True) == len(data)
    writer.join()


@pytest.mark.parametrize("bad_at", (0, 1000, 99_999))
def test_verify_rejects_a_wrong_byte(loops, net, mode, bad_at):
    pair = net.pair("tcp4")
    data = bytearray(pattern(0, 100_000))
    data[bad_at] ^= 0xFF
    writer = net.peer(pair.b.sendall, bytes(data))
    with pytest.raises(ValueError) as info:
        loops.stream_recv(pair.a, len(data), 4096, mode, timeout=TIMEOUT, verify=True)
    msg = one_line(info.value)
    assert f"byte {bad_at}:" in msg, msg
    writer.join()


def test_recv_stops_at_total(loops, stream_pair, mode):
    """Bytes after ``total`` are left in the socket for the next reader."""
    pair = stream_pair
    pair.b.sendall(pattern(0, 3000))
    assert loops.stream_recv(pair.a, 1000, 4096, mode, timeout=TIMEOUT,
                             verify=True) == 1000
    assert recv_exactly(pair.a, 2000) == pattern(1000, 2000)


def test_recv_total_zero_reads_nothing(loops, stream_pair, mode):
    pair = stream_pair
    pair.b.sendall(b"x")
    assert loops.stream_recv(pair.a, 0, 4096, mode, timeout=TIMEOUT) == 0
    assert recv_exactly(pair.a, 1) == b"x"


def test_recv_until_eof(loops, stream_pair, mode):
    pair = stream_pair
    pair.b.sendall(pattern(0, 10_000))
    pair.b.shutdown(socket.SHUT_WR)
    assert loops.stream_recv(pair.a, None, 4096, mode, timeout=TIMEOUT,
                             verify=True) == 10_000


def test_recv_eof_before_total(loops, stream_pair, mode):
    pair = stream_pair
    pair.b.sendall(pattern(0, 500))
    pair.b.close()
    assert loops.stream_recv(pair.a, 1000, 64, mode, timeout=TIMEOUT,
                             verify=True) == 500


# ------------------------------------------------------------ round trips


# A ping-pong needs the message to fit in the buffers on the way: with a
# 64 KiB ping through 4 KiB buffers both ends block in send, by design.
PINGPONG_CASES = [
    pytest.param(1, None, id="1-defaultbuf"),
    pytest.param(64, None, id="64-defaultbuf"),
    pytest.param(65536, None, id="65536-defaultbuf"),
    pytest.param(1, TINY_BUFFER, id="1-tinybuf"),
    pytest.param(4096, TINY_BUFFER, id="4096-tinybuf"),
]


@pytest.mark.parametrize("size, bufsize", PINGPONG_CASES)
@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
def test_pingpong_against_echo(loops, net, transport, mode, size, bufsize):
    pair = net.pair(transport, bufsize=bufsize)
    if transport != "unix":
        pair.a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair.b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    count = 50 if size < 65536 else 10
    echo = net.peer(loops.stream_echo, pair.b, size, mode, timeout=TIMEOUT,
                    process=mode == "spin")
    samples = array("q", [-1]) * (count + 2)
    assert loops.stream_pingpong(pair.a, count, size, mode, timeout=TIMEOUT,
                                 samples=samples, pattern=True) == count
    assert all(s > 0 for s in samples[:count]), samples
    assert list(samples[count:]) == [-1, -1], "wrote past count"
    pair.a.shutdown(socket.SHUT_WR)
    assert echo.join() == count * size


def test_pingpong_against_a_plain_echo(loops, tcp4, net, mode):
    """Without samples, against an echo that is not a twin."""
    count, size = 20, 100

    def plain_echo():
        tcp4.b.settimeout(TIMEOUT)
        n = 0
        while True:
            chunk = tcp4.b.recv(size)
            if not chunk:
                return n
            tcp4.b.sendall(chunk)
            n += len(chunk)

    echo = net.peer(plain_echo)
    assert loops.stream_pingpong(tcp4.a, count, size, mode, timeout=TIMEOUT) == count
    tcp4.a.shutdown(socket.SHUT_WR)
    assert echo.join() == count * size


def test_pingpong_pattern_is_the_contracts(loops, net, mode):
    """With pattern=True the ping-pong's bytes, as a plain echo peer
    receives them, follow the contract: stream byte i is i % PATTERN_PERIOD."""
    pair = net.pair("tcp4")
    count, size = 5, 100
    seen = bytearray()

    def recording_echo():
        pair.b.settimeout(TIMEOUT)
        while len(seen) < count * size:
            chunk = pair.b.recv(size)
            if not chunk:
                break
            seen.extend(chunk)
            pair.b.sendall(chunk)

    peer = net.peer(recording_echo)
    assert loops.stream_pingpong(pair.a, count, size, mode, timeout=TIMEOUT,
                                 pattern=True) == count
    peer.join()
    assert bytes(seen) == pattern(0, count * size)


def test_pingpong_pattern_detects_a_wrong_reply(loops, tcp4, net, mode):
    def corrupting_echo():
        data = bytearray(recv_exactly(tcp4.b, 64))
        data[10] ^= 0xFF
        tcp4.b.sendall(bytes(data))

    echo = net.peer(corrupting_echo)
    with pytest.raises(ValueError) as info:
        loops.stream_pingpong(tcp4.a, 3, 64, mode, timeout=TIMEOUT, pattern=True)
    one_line(info.value)
    echo.join()


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_echo_returns_the_same_bytes(loops, net, transport, mode):
    pair = net.pair(transport, bufsize=TINY_BUFFER)
    data = pattern(0, 300_000)
    echo = net.peer(loops.stream_echo, pair.b, 1000, mode, timeout=TIMEOUT,
                    process=mode == "spin")
    writer = net.peer(pair.a.sendall, data)
    back = recv_exactly(pair.a, len(data))
    writer.join()
    pair.a.shutdown(socket.SHUT_WR)
    assert echo.join() == len(data)
    assert back == data


# ------------------------------------------------------------ timeouts

# The loop's bound in these tests (s), and the slack allowed past it (s).
SHORT = 0.2
SLACK = 1.0


@pytest.mark.parametrize("transport", STREAM_TRANSPORTS)
def test_silent_peer_recv_times_out(loops, net, transport, mode):
    pair = net.pair(transport)
    with Elapsed() as t, pytest.raises(TimeoutError) as info:
        loops.stream_recv(pair.a, 100, 64, mode, timeout=SHORT)
    assert info.value.errno == errno.ETIMEDOUT
    one_line(info.value)
    assert SHORT * 0.9 <= t.s <= SHORT + SLACK


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_silent_peer_pingpong_times_out(loops, net, transport, mode):
    pair = net.pair(transport)
    with Elapsed() as t, pytest.raises(TimeoutError) as info:
        loops.stream_pingpong(pair.a, 10, 64, mode, timeout=SHORT)
    assert info.value.errno == errno.ETIMEDOUT
    assert SHORT * 0.9 <= t.s <= SHORT + SLACK
    assert recv_exactly(pair.b, 64) == bytes(64), "the first ping was not sent"


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_silent_peer_echo_times_out(loops, net, transport, mode):
    pair = net.pair(transport)
    with Elapsed() as t, pytest.raises(TimeoutError) as info:
        loops.stream_echo(pair.a, 64, mode, timeout=SHORT)
    assert info.value.errno == errno.ETIMEDOUT
    assert SHORT * 0.9 <= t.s <= SHORT + SLACK


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_peer_that_never_reads_send_times_out(loops, net, transport, mode):
    pair = net.pair(transport, bufsize=TINY_BUFFER)
    with Elapsed() as t, pytest.raises(TimeoutError) as info:
        loops.stream_send(pair.a, 1000, 65536, mode, timeout=SHORT)
    assert info.value.errno == errno.ETIMEDOUT
    # blocking mode may wait once in the partial send and once after it
    assert SHORT * 0.9 <= t.s <= 2 * SHORT + SLACK


# ------------------------------------------------------------ threads


def test_blocked_recv_lets_other_threads_run(loops, tcp4, mode):
    """While the loop waits on a silent peer, another Python thread runs.

    The compiled twin's claim is that it releases the GIL around the
    syscalls; for the Python twin this is CPython's socket module doing so.
    Without it the other thread could not run a single bytecode while the
    loop waits, so it would log nothing inside the window.
    """
    ticks: list[float] = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=ticker, daemon=True)
    t.start()
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            loops.stream_recv(tcp4.a, 100, 64, mode, timeout=0.3)
        end = time.monotonic()
    finally:
        stop.set()
        t.join(TIMEOUT)
    inside = [x for x in ticks if start + 0.05 <= x <= end - 0.05]
    assert len(inside) >= 5, (
        f"the other thread ran {len(inside)} times during a "
        f"{end - start:.2f} s block in recv"
    )
