"""Errors, for both twins: bad arguments and peers that go away.

Bad arguments raise ValueError/TypeError with a one-line message before any
I/O: the peer receives nothing, waiting input is not consumed, and the
socket is left as it was (its timeout and SO_RCVTIMEO).  A datagram larger
than a Unix socket can carry is the kernel's to refuse (OSError EMSGSIZE).
A peer that resets or closes gives ConnectionResetError/BrokenPipeError
with ``errno`` set.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from array import array

import pytest
from support import MODES, TIMEOUT, nothing_to_read, one_line, recv_exactly

from fastsock import _common

GOOD = {
    "stream_send": dict(count=1, size=64),
    "stream_recv": dict(total=64, size=64),
    "stream_echo": dict(size=64),
    "stream_pingpong": dict(count=1, size=64),
    "dgram_send": dict(count=1, size=64),
    "dgram_recv": dict(count=1, size=64),
    "dgram_echo": dict(size=64),
    "dgram_pingpong": dict(count=1, size=64),
}
STREAM_FNS = [f for f in GOOD if f.startswith("stream")]
DGRAM_FNS = [f for f in GOOD if f.startswith("dgram")]
NAN = float("nan")


def _cases():
    """(id, function, transport, overrides, exception, message fragment)."""
    out = []
    for fn in GOOD:
        transport = "tcp4" if fn.startswith("stream") else "udp4"
        common = [
            ("size0", dict(size=0), ValueError, "size"),
            ("size-1", dict(size=-1), ValueError, "size"),
            ("size1.5", dict(size=1.5), TypeError, "size"),
            ("size-str", dict(size="64"), TypeError, "size"),
            ("size-bool", dict(size=True), TypeError, "size"),
            ("mode-unknown", dict(mode="fast"), ValueError, "mode"),
            ("mode-None", dict(mode=None), TypeError, "mode"),
            ("timeout0", dict(timeout=0), ValueError, "timeout"),
            ("timeout-1", dict(timeout=-1.0), ValueError, "timeout"),
            ("timeout-nan", dict(timeout=NAN), ValueError, "timeout"),
            ("timeout-str", dict(timeout="1"), TypeError, "timeout"),
        ]
        if "count" in GOOD[fn]:
            common += [
                ("count0", dict(count=0), ValueError, "count"),
                ("count-3", dict(count=-3), ValueError, "count"),
                ("count2.0", dict(count=2.0), TypeError, "count"),
                ("count-None", dict(count=None), TypeError, "count"),
            ]
        if fn.endswith("pingpong"):
            common += [
                ("samples-short", dict(count=3, samples=array("q", [0, 0])),
                 ValueError, "samples"),
                ("samples-int32", dict(samples=array("i", [0, 0])), TypeError, "samples"),
                ("samples-readonly", dict(samples=bytes(8)), TypeError, "samples"),
                ("samples-list", dict(samples=[0]), TypeError, "samples"),
            ]
        if fn == "stream_recv":
            common += [
                ("total-1", dict(total=-1), ValueError, "total"),
                ("total1.5", dict(total=1.5), TypeError, "total"),
            ]
        if fn == "stream_send":
            common += [("size-huge", dict(size=_common.STREAM_MAX + 1), ValueError, "size")]
        if fn.startswith("dgram"):
            common += [("udp4-65508", dict(size=65508), ValueError, "65508")]
            out.append((f"{fn}-udp6-65528", fn, "udp6", dict(size=65528),
                        ValueError, "65528"))
        for cid, over, exc, frag in common:
            out.append((f"{fn}-{cid}", fn, transport, over, exc, frag))
    for fn in STREAM_FNS:
        for transport in ("udp4", "unix_dgram"):
            out.append((f"{fn}-on-{transport}", fn, transport, {}, ValueError, "stream"))
    for fn in DGRAM_FNS:
        for transport in ("tcp4", "unix"):
            out.append((f"{fn}-on-{transport}", fn, transport, {}, ValueError, "datagram"))
    return out


CASES = _cases()


def _params():
    """Argument checks come before the mode matters: each case runs in one
    mode, in turn, so that every mode is seen by every function."""
    for i, (cid, fn, transport, over, exc, frag) in enumerate(CASES):
        m = MODES[i % len(MODES)]
        yield pytest.param(fn, transport, over, exc, frag, m, id=f"{cid}-{m}")


@pytest.mark.parametrize("fn, transport, over, exc, frag, mode", list(_params()))
def test_bad_argument_raises_before_any_io(loops, net, fn, transport, over, exc, frag, mode):
    pair = net.pair(transport)
    pair.b.send(b"m")  # input waiting at a: must still be there afterwards
    pair.a.settimeout(7.0)
    rcvtimeo = pair.a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
    kwargs = dict(GOOD[fn], mode=mode, timeout=TIMEOUT)
    kwargs.update(over)
    with pytest.raises(exc) as info:
        getattr(loops, fn)(pair.a, **kwargs)
    assert frag in one_line(info.value)
    assert nothing_to_read(pair.b), "the peer received something"
    assert pair.a.gettimeout() == 7.0, "the socket's mode was changed"
    assert pair.a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) == rcvtimeo
    pair.a.settimeout(TIMEOUT)
    assert pair.a.recv(16) == b"m", "waiting input was consumed"


@pytest.mark.parametrize("fn", list(GOOD))
def test_closed_socket(loops, net, fn):
    pair = net.pair("tcp4" if fn.startswith("stream") else "udp4")
    pair.a.close()
    with pytest.raises(ValueError) as info:
        getattr(loops, fn)(pair.a, **GOOD[fn], mode="blocking", timeout=TIMEOUT)
    assert "closed" in one_line(info.value)
    if pair.transport == "tcp4":
        assert recv_exactly(pair.b, 1) == b"", "the peer got data, not just EOF"
    else:
        assert nothing_to_read(pair.b)


@pytest.mark.parametrize("fn", list(GOOD))
def test_not_a_socket(loops, net, fn):
    pair = net.pair("tcp4" if fn.startswith("stream") else "udp4")
    with pytest.raises(TypeError) as info:
        getattr(loops, fn)(pair.a.fileno(), **GOOD[fn], mode="blocking", timeout=TIMEOUT)
    one_line(info.value)
    assert nothing_to_read(pair.b)


@pytest.mark.parametrize("fn", ["dgram_send", "dgram_pingpong"])
def test_unix_datagram_too_large_for_the_kernel(loops, unix_dgram, mode, fn):
    size = 1 << 20  # above the default send buffer (212992 bytes)
    with pytest.raises(OSError) as info:
        getattr(loops, fn)(unix_dgram.a, 1, size, mode, timeout=TIMEOUT)
    assert info.value.errno == errno.EMSGSIZE
    one_line(info.value)
    assert nothing_to_read(unix_dgram.b)


# ------------------------------------------------------------ peers that go away


def _reset(pair) -> None:
    """Abort the connection from b's side: TCP sends RST (SO_LINGER 0); a
    Unix stream socket closed with unread input gives its peer ECONNRESET."""
    if pair.transport != "unix":
        pair.b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair.b.close()


@pytest.mark.parametrize("when", ["before", "during"])
def test_reset_gives_connection_reset(loops, net, stream_pair, mode, when):
    pair = stream_pair
    pair.a.sendall(b"unread")  # never read: closing b is an abort on Unix too
    if when == "before":
        _reset(pair)
    else:
        timer = threading.Timer(0.1, _reset, (pair,))
        timer.start()
    try:
        with pytest.raises(ConnectionResetError) as info:
            loops.stream_recv(pair.a, 100, 64, mode, timeout=TIMEOUT)
    finally:
        if when == "during":
            timer.join(TIMEOUT)
    assert info.value.errno == errno.ECONNRESET
    one_line(info.value)


def test_echo_reset_gives_connection_reset(loops, net, tcp4, mode):
    tcp4.a.sendall(b"unread")
    _reset(tcp4)
    with pytest.raises(ConnectionResetError) as info:
        loops.stream_echo(tcp4.a, 64, mode, timeout=TIMEOUT)
    assert info.value.errno == errno.ECONNRESET


def test_send_to_a_closed_peer(loops, stream_pair, mode):
    pair = stream_pair
    pair.b.close()
    with pytest.raises((BrokenPipeError, ConnectionResetError)) as info:
        loops.stream_send(pair.a, 1000, 65536, mode, timeout=TIMEOUT)
    assert info.value.errno in (errno.EPIPE, errno.ECONNRESET)
    one_line(info.value)


def test_pingpong_peer_closes_midway(loops, net, stream_pair, mode):
    """EOF in the middle of a round trip is ConnectionResetError (ECONNRESET)."""
    pair = stream_pair

    def echo_once_then_close():
        pair.b.sendall(recv_exactly(pair.b, 64))
        assert len(recv_exactly(pair.b, 64)) == 64  # read it all: a clean FIN
        pair.b.shutdown(socket.SHUT_WR)

    peer = net.peer(echo_once_then_close)
    with pytest.raises(ConnectionResetError) as info:
        loops.stream_pingpong(pair.a, 5, 64, mode, timeout=TIMEOUT)
    assert info.value.errno == errno.ECONNRESET
    one_line(info.value)
    peer.join()


def test_echo_until_eof_returns_the_count(loops, net, tcp4, mode):
    """The clean end of an echo: the peer's FIN after its data."""
    tcp4.b.sendall(b"x" * 1000)
    tcp4.b.shutdown(socket.SHUT_WR)
    t0 = time.monotonic()
    assert loops.stream_echo(tcp4.a, 64, mode, timeout=TIMEOUT) == 1000
    assert time.monotonic() - t0 < TIMEOUT
    assert recv_exactly(tcp4.b, 1000) == b"x" * 1000
    assert nothing_to_read(tcp4.b)
