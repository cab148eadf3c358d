"""Datagram loops (UDP4, UDP6, Unix datagram), each test run against both twins.

What is checked: datagrams arrive intact (``verify``, and a plain reader that
checks the contract's pattern); counts are right (Unix datagram sockets do
not lose: exact counts; UDP may: delivered <= sent); an empty datagram ends
``dgram_recv``/``dgram_echo`` and is echoed; ``count`` is never over-read;
ping-pong against an echo completes every round with RTT samples, drops
stale replies, and against a dead peer counts lost rounds within a bound;
the largest datagram of each transport goes through; an idle wait returns.
"""

from __future__ import annotations

import socket
import threading
import time
from array import array

import pytest
from support import TIMEOUT, Elapsed, one_line

from fastsock import _common

PERIOD = _common.PATTERN_PERIOD
# How long a receiver waits for the next datagram before it stops (s): on
# UDP the empty "end" datagram may be lost, and this bounds that case.
IDLE = 1.0


def dgram_pattern(first: int, n: int) -> bytes:
    """The contract's datagram pattern: byte j is (first + j) % PERIOD."""
    return bytes((first + j) % PERIOD for j in range(n))


def lossless(transport: str) -> bool:
    return transport == "unix_dgram"


def max_size(transport: str) -> int:
    return {"udp4": _common.UDP4_MAX, "udp6": _common.UDP6_MAX}[transport]


SEND_RECV_CASES = [
    pytest.param(1, 200, id="1"),
    pytest.param(64, 200, id="64"),
    pytest.param(1472, 200, id="1472"),
    pytest.param(8192, 100, id="8192"),
    pytest.param(32768, 20, id="32768"),
]


def send_then_end(loops, sock, count, size, mode):
    sent = loops.dgram_send(sock, count, size, mode, timeout=TIMEOUT, pattern=True)
    sock.setblocking(True)
    sock.send(b"")  # "end"
    return sent


@pytest.mark.parametrize("size, count", SEND_RECV_CASES)
def test_send_recv(loops, net, dgram_pair, mode, size, count):
    pair = dgram_pair
    sender = net.peer(send_then_end, loops, pair.b, count, size, mode,
                      process=mode == "spin")
    got = loops.dgram_recv(pair.a, count, size, mode, timeout=IDLE, verify=True)
    assert sender.join() == count
    if lossless(pair.transport):
        assert got == count
    else:
        assert 1 <= got <= count


@pytest.mark.parametrize("transport", ("udp4", "udp6"))
def test_largest_datagram(loops, net, transport, mode):
    pair = net.pair(transport)
    # room for every datagram: a lost one would cost an idle wait
    pair.a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    size = max_size(transport)
    count = 3
    assert loops.dgram_send(pair.b, count, size, mode, timeout=TIMEOUT,
                            pattern=True) == count
    got = loops.dgram_recv(pair.a, count, size, mode, timeout=IDLE, verify=True)
    assert 1 <= got <= count


@pytest.mark.parametrize("transport", ("udp4", "unix_dgram"))
def test_send_pattern_is_the_contracts(loops, net, transport, mode):
    """A plain reader finds each datagram to be (first + j) % PERIOD, with
    ``first`` a valid pattern byte."""
    pair = net.pair(transport)
    count, size = 8, 300  # 8: under net.unix.max_dgram_qlen (10)
    assert loops.dgram_send(pair.a, count, size, mode, timeout=TIMEOUT,
                            pattern=True) == count
    pair.b.settimeout(TIMEOUT)
    for _ in range(count):
        d = pair.b.recv(size + 1)
        assert len(d) == size
        assert d[0] < PERIOD
        assert d == dgram_pattern(d[0], size)


@pytest.mark.parametrize("transport", ("udp4", "unix_dgram"))
def test_verify_accepts_a_plain_sender(loops, net, transport, mode):
    pair = net.pair(transport)
    for first in (0, 100, PERIOD - 1):
        pair.b.send(dgram_pattern(first, 500))
    assert loops.dgram_recv(pair.a, 3, 1000, mode, timeout=IDLE, verify=True) == 3


@pytest.mark.parametrize("where", (0, 1, 499))
@pytest.mark.parametrize("transport", ("udp4", "unix_dgram"))
def test_verify_rejects_a_wrong_byte(loops, net, transport, mode, where):
    pair = net.pair(transport)
    bad = bytearray(dgram_pattern(7, 500))
    bad[where] = (bad[where] + 100) % PERIOD if where else PERIOD + 2
    pair.b.send(dgram_pattern(0, 500))
    pair.b.send(bytes(bad))
    with pytest.raises(ValueError) as info:
        loops.dgram_recv(pair.a, 5, 1000, mode, timeout=IDLE, verify=True)
    one_line(info.value)


def test_recv_stops_on_an_empty_datagram(loops, dgram_pair, mode):
    pair = dgram_pair
    for i in range(3):
        pair.b.send(dgram_pattern(i, 64))
    pair.b.send(b"")
    pair.b.send(b"after")
    with Elapsed() as t:
        got = loops.dgram_recv(pair.a, 10, 64, mode, timeout=TIMEOUT, verify=True)
    assert got == 3
    assert t.s < TIMEOUT / 2, "did not stop at the empty datagram"
    pair.a.settimeout(TIMEOUT)
    assert pair.a.recv(64) == b"after"


def test_recv_stops_at_count(loops, dgram_pair, mode):
    pair = dgram_pair
    for i in range(5):
        pair.b.send(bytes([i]) * 10)
    assert loops.dgram_recv(pair.a, 3, 64, mode, timeout=TIMEOUT) == 3
    pair.a.settimeout(TIMEOUT)
    assert pair.a.recv(64) == bytes([3]) * 10


def test_echo_sends_back_each_datagram_and_the_end(loops, net, dgram_pair, mode):
    pair = dgram_pair
    sent = [dgram_pattern(i, 10 + i) for i in range(8)]
    echo = net.peer(loops.dgram_echo, pair.b, 100, mode, timeout=TIMEOUT)
    pair.a.settimeout(TIMEOUT)
    back = []
    for d in sent:
        pair.a.send(d)
        back.append(pair.a.recv(200))
    pair.a.send(b"")
    assert pair.a.recv(200) == b"", "the empty datagram was not echoed"
    assert echo.join() == len(sent)
    assert back == sent


@pytest.mark.parametrize("size", (1, 64, 1400))
def test_pingpong_against_echo(loops, net, dgram_pair, mode, size):
    pair = dgram_pair
    count = 100
    echo = net.peer(loops.dgram_echo, pair.b, size, mode, timeout=TIMEOUT,
                    process=mode == "spin")
    samples = array("q", [-1]) * (count + 2)
    completed, lost = loops.dgram_pingpong(pair.a, count, size, mode,
                                           timeout=TIMEOUT, samples=samples,
                                           pattern=True)
    assert completed + lost == count
    assert completed >= 1
    if lossless(pair.transport):
        assert lost == 0
    assert all(s > 0 for s in samples[:completed]), samples
    assert all(s == -1 for s in samples[completed:]), "wrote past completed"
    pair.a.setblocking(True)
    pair.a.send(b"")
    echoed = echo.join()
    assert completed <= echoed <= count
    if lossless(pair.transport):
        assert echoed == count


def test_pingpong_rounds_carry_the_round_number(loops, net, unix_dgram, mode):
    """Byte 0 of round i is i % 256, as a plain echo sees it; more than 256
    rounds, so it wraps."""
    pair = unix_dgram
    count = 300
    firsts = []

    def recording_echo():
        pair.b.settimeout(TIMEOUT)
        for _ in range(count):
            d = pair.b.recv(64)
            firsts.append(d[0])
            pair.b.send(d)

    peer = net.peer(recording_echo)
    assert loops.dgram_pingpong(pair.a, count, 16, mode, timeout=TIMEOUT) == (count, 0)
    peer.join()
    assert firsts == [i % 256 for i in range(count)]


def test_pingpong_drops_stale_replies(loops, net, unix_dgram, mode):
    """Each reply comes twice: the duplicate is stale in the next round."""
    pair = unix_dgram
    count = 20

    def double_echo():
        pair.b.settimeout(TIMEOUT)
        for _ in range(count):
            d = pair.b.recv(64)
            pair.b.send(d)
            pair.b.send(d)

    peer = net.peer(double_echo)
    samples = array("q", [0]) * count
    assert loops.dgram_pingpong(pair.a, count, 16, mode, timeout=TIMEOUT,
                                samples=samples) == (count, 0)
    peer.join()
    assert all(s > 0 for s in samples)


# ------------------------------------------------------------ waits

# The loop's bound in these tests (s), and the slack allowed past it (s).
SHORT = 0.1
SLACK = 1.0


def test_pingpong_against_a_dead_peer_counts_lost_rounds(loops, dgram_pair, mode):
    """The peer's socket is open but nobody answers."""
    count = 2
    samples = array("q", [-1]) * count
    with Elapsed() as t:
        result = loops.dgram_pingpong(dgram_pair.a, count, 32, mode,
                                      timeout=SHORT, samples=samples)
    assert result == (0, count)
    assert list(samples) == [-1] * count
    assert count * SHORT * 0.9 <= t.s <= count * SHORT + SLACK


def test_idle_recv_returns(loops, dgram_pair, mode):
    with Elapsed() as t:
        assert loops.dgram_recv(dgram_pair.a, 10, 64, mode, timeout=SHORT) == 0
    assert SHORT * 0.9 <= t.s <= SHORT + SLACK


def test_idle_echo_returns(loops, dgram_pair, mode):
    with Elapsed() as t:
        assert loops.dgram_echo(dgram_pair.a, 64, mode, timeout=SHORT) == 0
    assert SHORT * 0.9 <= t.s <= SHORT + SLACK


def test_recv_counts_until_idle(loops, net, unix_dgram, mode):
    """Datagrams then silence: returns what came, after about one timeout."""
    for i in range(4):
        unix_dgram.b.send(dgram_pattern(i, 32))
    with Elapsed() as t:
        got = loops.dgram_recv(unix_dgram.a, 10, 64, mode, timeout=SHORT, verify=True)
    assert got == 4
    assert SHORT * 0.9 <= t.s <= SHORT + SLACK


def test_blocked_recv_lets_other_threads_run(loops, udp4, mode):
    """As for streams: while dgram_recv waits, another Python thread runs."""
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
        assert loops.dgram_recv(udp4.a, 10, 64, mode, timeout=0.3) == 0
        end = time.monotonic()
    finally:
        stop.set()
        t.join(TIMEOUT)
    inside = [x for x in ticks if start + 0.05 <= x <= end - 0.05]
    assert len(inside) >= 5, (
        f"the other thread ran {len(inside)} times during a "
        f"{end - start:.2f} s wait in recv"
    )


def test_unix_dgram_send_blocks_rather_than_loses(loops, net, unix_dgram, mode):
    """More datagrams than the receive queue holds: the sender waits for the
    slow reader; nothing is lost."""
    count = 200

    def slow_reader():
        unix_dgram.b.settimeout(TIMEOUT)
        got = 0
        while got < count:
            if got % 50 == 0:
                time.sleep(0.01)  # let the queue fill up
            unix_dgram.b.recv(100)
            got += 1
        return got

    reader = net.peer(slow_reader)
    assert loops.dgram_send(unix_dgram.a, count, 64, mode, timeout=TIMEOUT) == count
    assert reader.join() == count
