"""Batched datagram loops: ``dgram_send``/``dgram_recv`` with ``batch``.

What is checked, over udp4, udp6 and Unix datagram sockets in every mode:
batch 1 (both twins) and 8 and 32 (compiled: sendmmsg/recvmmsg) deliver
intact datagrams (``verify`` and a plain reader that checks datagram i
starts the pattern at i, so a short last batch or a continued partial
``sendmmsg`` that skipped or repeated one shows); an empty datagram inside
a batch ends the receive with the datagrams before it counted; ``count``
is never over-read; idle and stalled waits end within their bound; SIGINT
raises KeyboardInterrupt promptly while a batch call blocks or spins, and
a storm of signals neither loses nor duplicates a datagram.  The Python
twin refuses batch > 1 with one line, before any I/O; both twins refuse a
bad batch alike.  How many syscalls a batch makes is in test_parity.py.
"""

from __future__ import annotations

import os
import socket

import pytest
from support import TIMEOUT, Elapsed, nothing_to_read, one_line
from test_signals import SIGINT_BOUND, Storm, _interrupt

import fastsock
from fastsock import _common

PURE = os.environ.get("FASTSOCK_PUREPYTHON", "") not in ("", "0")
PERIOD = _common.PATTERN_PERIOD
# (twin, batch) pairs: batch 1 in both twins, more in the compiled one only.
RUNS = [("python", 1)] if PURE else [("cython", 1), ("python", 1), ("cython", 8),
                                     ("cython", 32)]
BATCHED = (8, 32)
# How long an idle receiver waits (s); the slack allowed past a bound (s).
IDLE = 1.0
SHORT = 0.1
SLACK = 1.0


def dgram_pattern(first: int, n: int) -> bytes:
    """The contract's datagram pattern: byte j is (first + j) % PERIOD."""
    return bytes((first + j) % PERIOD for j in range(n))


def batched():
    """The compiled twin, which batches; skips (clearly) where it cannot."""
    if PURE:
        pytest.skip("FASTSOCK_PUREPYTHON=1: batch > 1 is the compiled twin's")
    from conftest import twin

    loops = twin("cython")
    if not loops.HAVE_MMSG:
        pytest.skip("not Linux: no sendmmsg/recvmmsg, so no batch > 1")
    return loops


def loops_for(impl: str, batch: int):
    if batch > 1:
        return batched()
    from conftest import twin

    return twin(impl)


run_ids = [f"{impl}-batch{b}" for impl, b in RUNS]


# ------------------------------------------------------------ delivery


def send_then_end(loops, sock, count, size, mode, batch):
    sent = loops.dgram_send(sock, count, size, mode, timeout=TIMEOUT, pattern=True,
                            batch=batch)
    sock.setblocking(True)
    sock.send(b"")  # "end"
    return sent


@pytest.mark.parametrize("impl, batch", RUNS, ids=run_ids)
@pytest.mark.parametrize("size", (1, 64, 1472))
def test_send_recv(net, dgram_pair, mode, impl, batch, size):
    """Sender and receiver at the same batch; 203 is a multiple of no
    batch, so the last call of each side is smaller."""
    loops = loops_for(impl, batch)
    pair = dgram_pair
    count = 203
    sender = net.peer(send_then_end, loops, pair.b, count, size, mode, batch,
                      process=mode == "spin")
    got = loops.dgram_recv(pair.a, count, size, mode, timeout=IDLE, verify=True, batch=batch)
    assert sender.join() == count
    if pair.transport == "unix_dgram":  # lossless
        assert got == count
    else:
        assert 1 <= got <= count


@pytest.mark.parametrize("batch", BATCHED)
def test_batched_sender_plain_reader_sees_every_datagram_in_order(net, unix_dgram,
                                                                  mode, batch):
    """A plain reader finds datagram i to start the pattern at i % PERIOD:
    past the pattern's period, with a smaller last batch, and with partial
    sendmmsg calls continued (a slow reader fills the queue)."""
    loops = batched()
    count, size = 300, 100
    pair = unix_dgram

    def plain_reader():
        pair.b.settimeout(TIMEOUT)
        return [pair.b.recv(size + 1) for _ in range(count)]

    reader = net.peer(plain_reader)
    assert loops.dgram_send(pair.a, count, size, mode, timeout=TIMEOUT, pattern=True,
                            batch=batch) == count
    got = reader.join()
    for i, d in enumerate(got):
        assert d == dgram_pattern(i % PERIOD, size), f"datagram {i}"
    assert nothing_to_read(pair.b), "more datagrams than count"


@pytest.mark.parametrize("batch", BATCHED)
@pytest.mark.parametrize("transport", ("udp4", "udp6"))
def test_batched_largest_datagram(net, transport, mode, batch):
    loops = batched()
    pair = net.pair(transport)
    pair.a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    size = _common.UDP4_MAX if transport == "udp4" else _common.UDP6_MAX
    count = 3
    assert loops.dgram_send(pair.b, count, size, mode, timeout=TIMEOUT, pattern=True,
                            batch=batch) == count
    got = loops.dgram_recv(pair.a, count, size, mode, timeout=IDLE, verify=True,
                           batch=batch)
    assert 1 <= got <= count


@pytest.mark.parametrize("batch", BATCHED)
def test_batched_recv_of_a_plain_sender(net, dgram_pair, mode, batch):
    """Every datagram already queued: each recvmmsg takes a full batch,
    then a smaller last one; verify checks each datagram of a batch."""
    loops = batched()
    pair = dgram_pair
    count = 45
    for i in range(count):
        pair.b.send(dgram_pattern(i % PERIOD, 200 + i))
    assert loops.dgram_recv(pair.a, count, 300, mode, timeout=IDLE, verify=True,
                            batch=batch) == count


@pytest.mark.parametrize("where", (0, 3, 7))
def test_batched_verify_rejects_a_wrong_datagram_inside_a_batch(net, unix_dgram, mode, where):
    loops = batched()
    pair = unix_dgram
    for i in range(8):
        d = bytearray(dgram_pattern(i, 64))
        if i == where:
            d[10] = (d[10] + 1) % PERIOD
        pair.b.send(bytes(d))
    with pytest.raises(ValueError) as info:
        loops.dgram_recv(pair.a, 8, 64, mode, timeout=IDLE, verify=True, batch=8)
    assert "byte 10" in one_line(info.value)


# ------------------------------------------------------------ the end, count


@pytest.mark.parametrize("batch", BATCHED)
def test_empty_datagram_inside_a_batch_ends_the_receive(dgram_pair, mode, batch):
    """Five datagrams, the end, two more, all queued: one recvmmsg takes
    them all (8 <= batch); the five before the end count, the rest of the
    batch is dropped (the contract), and it returns at once."""
    loops = batched()
    pair = dgram_pair
    for i in range(5):
        pair.b.send(dgram_pattern(i, 64))
    pair.b.send(b"")
    for _ in range(2):
        pair.b.send(b"after")
    with Elapsed() as t:
        got = loops.dgram_recv(pair.a, 100, 64, mode, timeout=TIMEOUT, verify=True,
                               batch=batch)
    assert got == 5
    assert t.s < TIMEOUT / 2, "did not stop at the empty datagram"
    assert nothing_to_read(pair.a), "the rest of the batch is consumed"


@pytest.mark.parametrize("batch", BATCHED)
def test_empty_datagram_first_in_a_later_batch(dgram_pair, mode, batch):
    loops = batched()
    pair = dgram_pair
    for i in range(batch):
        pair.b.send(dgram_pattern(i, 32))
    pair.b.send(b"")
    assert loops.dgram_recv(pair.a, 1000, 64, mode, timeout=TIMEOUT, verify=True,
                            batch=batch) == batch


@pytest.mark.parametrize("batch", BATCHED)
def test_batched_recv_never_reads_past_count(dgram_pair, mode, batch):
    loops = batched()
    pair = dgram_pair
    for i in range(batch + 5):
        pair.b.send(bytes([i]) * 10)
    count = batch + 2  # a full batch, then a call of 2
    assert loops.dgram_recv(pair.a, count, 64, mode, timeout=TIMEOUT, batch=batch) == count
    pair.a.settimeout(TIMEOUT)
    assert pair.a.recv(64) == bytes([count]) * 10


def test_batch_larger_than_count(unix_dgram, mode):
    loops = batched()
    pair = unix_dgram
    assert loops.dgram_send(pair.a, 3, 64, mode, timeout=TIMEOUT, pattern=True,
                            batch=32) == 3
    assert loops.dgram_recv(pair.b, 3, 64, mode, timeout=TIMEOUT, verify=True,
                            batch=32) == 3
    assert nothing_to_read(pair.b)


# ------------------------------------------------------------ waits


@pytest.mark.parametrize("batch", BATCHED)
def test_batched_idle_recv_returns(dgram_pair, mode, batch):
    loops = batched()
    with Elapsed() as t:
        assert loops.dgram_recv(dgram_pair.a, 100, 64, mode, timeout=SHORT, batch=batch) == 0
    assert SHORT * 0.9 <= t.s <= SHORT + SLACK


@pytest.mark.parametrize("batch", BATCHED)
def test_batched_recv_counts_until_idle(unix_dgram, mode, batch):
    """Fewer datagrams than a batch, then silence: MSG_WAITFORONE takes what
    is there, never waits for a full batch; the next call waits one timeout."""
    loops = batched()
    for i in range(4):
        unix_dgram.b.send(dgram_pattern(i, 32))
    with Elapsed() as t:
        got = loops.dgram_recv(unix_dgram.a, 100, 64, mode, timeout=SHORT, verify=True,
                               batch=batch)
    assert got == 4
    assert SHORT * 0.9 <= t.s <= SHORT + SLACK


@pytest.mark.parametrize("batch", BATCHED)
def test_batched_send_to_a_stalled_receiver_times_out(unix_dgram, mode, batch):
    """Nobody reads: the send buffer fills, the wait expires: TimeoutError.
    A blocking sendmmsg that expired after part of its batch returns that
    part, and the next call waits again: two timeouts at most (the contract)."""
    loops = batched()
    bound = 2 * SHORT if mode == "blocking" else SHORT
    with Elapsed() as t, pytest.raises(TimeoutError):
        loops.dgram_send(unix_dgram.a, 100_000, 64, mode, timeout=SHORT, batch=batch)
    assert SHORT * 0.9 <= t.s <= bound + SLACK


# ------------------------------------------------------------ signals


@pytest.mark.parametrize("batch", BATCHED)
@pytest.mark.parametrize("what", ("recv", "send"))
def test_sigint_during_a_batch_call(net, mode, batch, what):
    """Ctrl-C while recvmmsg waits for a first datagram (udp4, nothing
    comes) or sendmmsg waits for room (Unix datagram, nobody reads)."""
    loops = batched()
    if what == "recv":
        pair = net.pair("udp4")
        def call():
            return loops.dgram_recv(pair.a, 100, 64, mode, timeout=TIMEOUT, batch=batch)
    else:
        pair = net.pair("unix_dgram")
        def call():
            return loops.dgram_send(pair.a, 10_000_000, 64, mode, timeout=TIMEOUT,
                                                batch=batch)
    outcome, after = _interrupt(call)
    assert outcome == "KeyboardInterrupt"
    assert after <= SIGINT_BOUND, f"KeyboardInterrupt came {after:.3f} s after SIGINT"


@pytest.mark.parametrize("batch", BATCHED)
def test_storm_batched_receiver(net, unix_dgram, mode, batch):
    """SIGALRM storm on the batched receiver's thread: every datagram once."""
    loops = batched()
    count, size = 2000, 512
    with Storm() as storm:
        sender = net.peer(loops.dgram_send, unix_dgram.b, count, size, mode,
                          timeout=TIMEOUT, pattern=True, batch=batch)
        got = loops.dgram_recv(unix_dgram.a, count, size, mode, timeout=TIMEOUT,
                               verify=True, batch=batch)
    assert sender.join() == count
    assert storm.count > 0
    assert got == count
    assert nothing_to_read(unix_dgram.a), "a duplicate"


@pytest.mark.parametrize("batch", BATCHED)
def test_storm_batched_sender(net, unix_dgram, mode, batch):
    """SIGALRM storm on the batched sender's thread (signals cut blocking
    sendmmsg calls short): a plain reader gets each datagram once, in order."""
    loops = batched()
    count, size = 2000, 512
    pair = unix_dgram

    def plain_reader():
        pair.b.settimeout(TIMEOUT)
        return [pair.b.recv(size + 1)[0] for _ in range(count)]

    reader = net.peer(plain_reader)
    with Storm() as storm:
        sent = loops.dgram_send(pair.a, count, size, mode, timeout=TIMEOUT, pattern=True,
                                batch=batch)
    firsts = reader.join()
    assert storm.count > 0
    assert sent == count
    assert firsts == [i % PERIOD for i in range(count)]
    assert nothing_to_read(pair.b), "a duplicate"


# ------------------------------------------------------------ refusals


@pytest.mark.parametrize("fn", ("dgram_send", "dgram_recv"))
@pytest.mark.parametrize("batch", (2, 8, 32, _common.MAX_BATCH))
def test_python_twin_refuses_batch_before_any_io(net, fn, batch):
    from conftest import twin

    loops = twin("python")
    pair = net.pair("udp4")
    pair.a.settimeout(3.0)  # configure() would change it: refused before that
    with pytest.raises(ValueError) as info:
        getattr(loops, fn)(pair.a, 10, 64, "blocking", timeout=TIMEOUT, batch=batch)
    msg = one_line(info.value)
    assert "sendmmsg" in msg and "Python" in msg, msg
    assert pair.a.gettimeout() == 3.0, "the socket was configured"
    assert nothing_to_read(pair.b), "something was sent"


@pytest.mark.parametrize("fn", ("dgram_send", "dgram_recv"))
@pytest.mark.parametrize("bad, error", [
    (0, ValueError), (-1, ValueError), (_common.MAX_BATCH + 1, ValueError),
    (2.0, TypeError), (True, TypeError), ("8", TypeError), (None, TypeError),
])
def test_bad_batch_is_refused_alike(net, fn, bad, error):
    from conftest import twin

    pair = net.pair("udp4")
    seen = {}
    for impl in ("python",) if PURE else ("cython", "python"):
        with pytest.raises(error) as info:
            getattr(twin(impl), fn)(pair.a, 10, 64, "spin", timeout=TIMEOUT, batch=bad)
        seen[impl] = one_line(info.value)
    assert len(set(seen.values())) == 1, seen
    assert "batch" in seen["python"]


def test_have_mmsg_says_who_batches():
    from fastsock import _pyloops

    assert _pyloops.HAVE_MMSG is False
    assert fastsock.HAVE_MMSG == fastsock.implementations()[fastsock.IMPLEMENTATION].HAVE_MMSG
    compiled = fastsock.implementations().get("cython")
    if compiled is not None:
        import sys

        assert compiled.HAVE_MMSG is sys.platform.startswith("linux")
