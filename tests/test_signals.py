"""Signals during the loops, for both twins (PEP 475 semantics).

What is checked: a storm of SIGALRM (an interval timer, a no-op handler)
while the loops block neither loses nor duplicates a byte or a datagram, in
every mode, through buffers small enough that sends are cut short; and
SIGINT with the default handler raises KeyboardInterrupt within 0.5 s in
every mode, spin included, while the loop waits on a peer that sends
nothing (or reads nothing).

A KeyboardInterrupt that escaped a test would end the whole pytest session,
so each SIGINT test catches it itself, and lets any late one run inside its
own guard.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from support import TIMEOUT, TINY_BUFFER

# The storm's first signal and interval (s): soon and often enough to land
# inside many syscalls of a transfer that takes a few milliseconds.
STORM_FIRST = 0.0001
STORM_INTERVAL = 0.001
# After a storm, how long its last signal may take to reach a handler (s).
DRAIN = 0.02
# How soon Ctrl-C must take effect (s).
SIGINT_BOUND = 0.5
# When the SIGINT is sent, after the loop started waiting (s).
SIGINT_AFTER = 0.1


class Storm:
    """SIGALRM every STORM_INTERVAL seconds, counted by a no-op handler."""

    def __enter__(self) -> Storm:
        self.count = 0

        def handler(signum, frame):
            self.count += 1

        self.old = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, STORM_FIRST, STORM_INTERVAL)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        # The timer's signal is the process's: one that fired just before
        # it stopped can land in another thread (a peer's, xdist's) later,
        # and its handler then runs in this one at its next check.  Let it
        # run here, with the counting handler still in place; restored at
        # once, the old handler (SIG_DFL) would meet it ("Signal 14 ignored
        # due to race condition").
        time.sleep(DRAIN)
        signal.signal(signal.SIGALRM, self.old)


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_storm_loses_and_duplicates_no_byte(loops, net, transport, mode):
    pair = net.pair(transport, bufsize=TINY_BUFFER)
    count, size = 64, 32768  # 2 MiB through ~8 KiB buffers
    total = count * size
    with Storm() as storm:
        sender = net.peer(loops.stream_send, pair.b, count, size, mode,
                          timeout=TIMEOUT, pattern=True)
        got = loops.stream_recv(pair.a, total, size, mode, timeout=TIMEOUT, verify=True)
    sent = sender.join()
    assert storm.count > 0, "no signal arrived during the transfer"
    assert (sent, got) == (total, total)
    pair.b.shutdown(socket.SHUT_WR)
    pair.a.settimeout(TIMEOUT)
    assert pair.a.recv(1) == b"", "bytes beyond the total: duplicated"


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_storm_on_the_sending_side(loops, net, transport, mode):
    """The same with the twin's sender in the main thread, where SIGALRM
    lands, and a plain reader in a thread."""
    pair = net.pair(transport, bufsize=TINY_BUFFER)
    count, size = 64, 32768
    total = count * size

    def plain_reader():  # small reads: the sender blocks often
        pair.b.settimeout(TIMEOUT)
        data = bytearray()
        while True:
            chunk = pair.b.recv(4096)
            if not chunk:
                return bytes(data)
            data += chunk

    reader = net.peer(plain_reader)
    with Storm() as storm:
        sent = loops.stream_send(pair.a, count, size, mode, timeout=TIMEOUT, pattern=True)
    pair.a.shutdown(socket.SHUT_WR)
    data = reader.join()
    assert storm.count > 0
    assert sent == total
    assert len(data) == total
    period = 251
    assert data == (bytes(range(period)) * (total // period + 1))[:total]


def test_storm_datagrams(loops, net, unix_dgram, mode):
    """Unix datagram sockets do not lose: every datagram arrives once."""
    count, size = 2000, 512
    with Storm() as storm:
        sender = net.peer(loops.dgram_send, unix_dgram.b, count, size, mode,
                          timeout=TIMEOUT, pattern=True)
        got = loops.dgram_recv(unix_dgram.a, count, size, mode, timeout=TIMEOUT,
                               verify=True)
    sent = sender.join()
    assert storm.count > 0
    assert (sent, got) == (count, count)
    unix_dgram.a.settimeout(0.05)
    with pytest.raises(TimeoutError):
        unix_dgram.a.recv(size)  # nothing more: no duplicate


def test_storm_pingpong(loops, net, tcp4, mode):
    count = 300
    echo = net.peer(loops.stream_echo, tcp4.b, 100, mode, timeout=TIMEOUT,
                    process=mode == "spin")
    with Storm() as storm:
        done = loops.stream_pingpong(tcp4.a, count, 100, mode, timeout=TIMEOUT,
                                     pattern=True)
    tcp4.a.shutdown(socket.SHUT_WR)
    assert storm.count > 0
    assert done == count
    assert echo.join() == count * 100


# ------------------------------------------------------------ Ctrl-C


def _interrupt(call) -> tuple[str, float]:
    """Run ``call`` while a timer thread sends SIGINT (default handler) after
    SIGINT_AFTER s; returns (what happened, seconds from the kill to it)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    sent_at: list[float] = []

    def kill():
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(SIGINT_AFTER, kill)
    outcome = "returned"
    try:
        try:
            timer.start()
            call()
        except KeyboardInterrupt:
            outcome = "KeyboardInterrupt"
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        done = time.monotonic()
        timer.join(TIMEOUT)
        try:  # a late SIGINT runs here, in the guard
            time.sleep(0.05)
        except KeyboardInterrupt:
            outcome += " (then a late KeyboardInterrupt)"
    finally:
        signal.signal(signal.SIGINT, old)
    return outcome, done - sent_at[0] if sent_at else float("nan")


@pytest.mark.parametrize("what", ["stream_recv", "stream_send", "stream_pingpong",
                                  "dgram_recv", "dgram_pingpong"])
def test_sigint_raises_keyboard_interrupt_promptly(loops, net, mode, what):
    pair = net.pair("tcp4", bufsize=TINY_BUFFER) if what.startswith("stream") else net.pair("udp4")
    calls = {
        # the peer sends nothing
        "stream_recv": lambda: loops.stream_recv(pair.a, 100, 64, mode, timeout=TIMEOUT),
        # the peer reads nothing: the buffers fill, then the send waits
        "stream_send": lambda: loops.stream_send(pair.a, 10_000, 65536, mode,
                                                 timeout=TIMEOUT),
        "stream_pingpong": lambda: loops.stream_pingpong(pair.a, 5, 64, mode,
                                                         timeout=TIMEOUT),
        "dgram_recv": lambda: loops.dgram_recv(pair.a, 10, 64, mode, timeout=TIMEOUT),
        "dgram_pingpong": lambda: loops.dgram_pingpong(pair.a, 5, 64, mode,
                                                       timeout=TIMEOUT),
    }
    outcome, after = _interrupt(calls[what])
    assert outcome == "KeyboardInterrupt"
    assert after <= SIGINT_BOUND, f"KeyboardInterrupt came {after:.3f} s after SIGINT"
