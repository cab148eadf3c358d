"""socket-sendall: ``sock.sendall(msg)`` per message.

Design note
-----------
The Python twin sends a message with ``send`` and continues a partial send
itself (``while n < size``); this impl hands each message to ``sendall``,
which continues in C.  While the kernel takes whole messages the syscalls
are the same (one ``send`` per message); what differs is the Python-level
work per message.  The round trip's receive is the twin's (``recv_into``).

Modes: ``blocking`` and ``timeout``.  On a non-blocking socket CPython's
``sendall`` raises ``BlockingIOError`` when the buffer fills, after sending
an unknown part of the message, so ``nonblocking`` and ``spin`` have no
meaning here and are refused (ValueError, before any I/O).  In
``blocking`` mode SO_SNDTIMEO bounds each ``send`` inside ``sendall`` (an
expired one is EAGAIN, raised as ``BlockingIOError``); in ``timeout`` mode
the socket's timeout bounds the whole ``sendall`` (CPython >= 3.5); both
become the contract's ``TimeoutError``.
"""

from __future__ import annotations

import socket
from typing import Any

from fastsock._common import (
    DEFAULT_TIMEOUT,
    PATTERN_PERIOD,
    check_mode_of,
    check_samples,
    check_stream,
    check_timeout,
    configure,
    pattern_buffer,
    peer_closed,
    timed_out,
)
from fastsock._pyloops import _first_mismatch, _now_ns

FASTSOCK_CONTRACT = 1
IMPLEMENTATION = "socket-sendall"
MODES = ("blocking", "timeout")
_WHY = "CPython's sendall raises midway on a non-blocking socket"


def stream_send(
    sock: socket.socket, count: int, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, pattern: bool = False,
) -> int:
    check_stream(sock, size, count)
    check_mode_of(mode, MODES, IMPLEMENTATION, _WHY)
    timeout = check_timeout(timeout)
    configure(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    sendall = sock.sendall
    off = 0
    try:
        for _ in range(count):
            if pat is not None:
                msg = pat[off:off + size]
                off = (off + size) % PATTERN_PERIOD
            sendall(msg)
    except (BlockingIOError, TimeoutError):  # SO_SNDTIMEO, or the socket's timeout
        raise timed_out() from None
    return count * size


def stream_pingpong(
    sock: socket.socket, count: int, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, samples: Any = None, pattern: bool = False,
) -> int:
    check_stream(sock, size, count)
    out = check_samples(samples, count)
    check_mode_of(mode, MODES, IMPLEMENTATION, _WHY)
    timeout = check_timeout(timeout)
    configure(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    off = 0
    rbuf = memoryview(bytearray(size))
    sendall = sock.sendall
    recv_into = sock.recv_into
    now = _now_ns
    t0 = 0
    try:
        for i in range(count):
            if pat is not None:
                msg = pat[off:off + size]
                off = (off + size) % PATTERN_PERIOD
            if out is not None:
                t0 = now()
            sendall(msg)
            got = 0
            while got < size:
                n = recv_into(rbuf[got:] if got else rbuf, size - got)
                if n == 0:
                    raise peer_closed()
                got += n
            if out is not None:
                out[i] = now() - t0
            if pat is not None and rbuf != msg:
                raise _first_mismatch(rbuf, msg, i * size)
    except (BlockingIOError, TimeoutError):
        raise timed_out() from None
    return count
