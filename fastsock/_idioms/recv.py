"""socket-recv: ``sock.recv(n)``, a new bytes object per call.

Design note
-----------
The Python twin receives into one preallocated buffer (``recv_into``);
this impl calls ``recv``, which allocates a bytes object per call, and
joins the pieces when a reply comes in more than one (``b"".join``, the
idiom's way to reassemble; a reply that comes whole, the usual case, is
used as it is).  The sends, the waits of the four modes, the samples and
the checks are the twin's, so the difference is the allocation and the
join.  ``recv`` applies wherever the measured side receives: the round
trips, over stream and datagram sockets, in every mode (the stream
scenario's measured side only sends).

A datagram reply is one ``recv(size)``: its first byte is the round
number, as in the twin (stale replies dropped, a round unanswered within
the timeout lost).
"""

from __future__ import annotations

import select
import socket
from typing import Any

from fastsock._common import (
    DEFAULT_TIMEOUT,
    PATTERN_PERIOD,
    SPIN_CHECK,
    check_dgram,
    check_samples,
    check_stream,
    pattern_buffer,
    peer_closed,
    timed_out,
)
from fastsock._common import MODES as ALL_MODES
from fastsock._pyloops import _first_mismatch, _monotonic, _now_ns, _poller, _setup

FASTSOCK_CONTRACT = 1
IMPLEMENTATION = "socket-recv"
MODES = ALL_MODES  # every mode: recv waits as recv_into does

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


def stream_pingpong(
    sock: socket.socket, count: int, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, samples: Any = None, pattern: bool = False,
) -> int:
    check_stream(sock, size, count)
    out = check_samples(samples, count)
    mode, timeout, tms = _setup(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    off = 0
    send = sock.send
    recv = sock.recv
    now = _now_ns
    t0 = 0
    parts: list[bytes] | None = None  # a reply that came in pieces
    if mode in ("blocking", "timeout"):
        try:
            for i in range(count):
                if pat is not None:
                    msg = pat[off:off + size]
                    off = (off + size) % PATTERN_PERIOD
                if out is not None:
                    t0 = now()
                n = send(msg)
                while n < size:
                    n += send(msg[n:])
                data = recv(size)
                if len(data) < size:
                    if not data:
                        raise peer_closed()
                    parts = [data]
                    got = len(data)
                    while got < size:
                        chunk = recv(size - got)
                        if not chunk:
                            raise peer_closed()
                        parts.append(chunk)
                        got += len(chunk)
                    data = b"".join(parts)
                if out is not None:
                    out[i] = now() - t0
                if pat is not None and data != msg:
                    raise _first_mismatch(memoryview(data), msg, i * size)
        except (BlockingIOError, TimeoutError):
            raise timed_out() from None
        return count
    spin = mode == "spin"
    rwait = _poller(sock, _POLLIN)
    wwait = _poller(sock, _POLLOUT)
    spins = 0
    start = 0.0
    for i in range(count):
        if pat is not None:
            msg = pat[off:off + size]
            off = (off + size) % PATTERN_PERIOD
        if out is not None:
            t0 = now()
        n = 0
        while n < size:
            try:
                n += send(msg[n:] if n else msg)
                spins = 0
            except BlockingIOError:
                if spin:
                    if spins == 0:
                        start = _monotonic()
                    spins += 1
                    if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                        raise timed_out() from None
                elif not wwait(tms):
                    raise timed_out() from None
        data = b""
        parts = None
        got = 0
        while got < size:
            try:
                chunk = recv(size - got)
                spins = 0
            except BlockingIOError:
                if spin:
                    if spins == 0:
                        start = _monotonic()
                    spins += 1
                    if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                        raise timed_out() from None
                elif not rwait(tms):
                    raise timed_out() from None
                continue
            if not chunk:
                raise peer_closed()
            if got:
                if parts is None:
                    parts = [data]
                parts.append(chunk)
            else:
                data = chunk
            got += len(chunk)
        if parts is not None:
            data = b"".join(parts)
        if out is not None:
            out[i] = now() - t0
        if pat is not None and data != msg:
            raise _first_mismatch(memoryview(data), msg, i * size)
    return count


def dgram_pingpong(
    sock: socket.socket, count: int, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, samples: Any = None, pattern: bool = False,
) -> tuple[int, int]:
    check_dgram(sock, size, count)
    out = check_samples(samples, count)
    mode, timeout, tms = _setup(sock, mode, timeout)
    sbuf = bytearray(pattern_buffer(size)[:size] if pattern else bytearray(size))
    msg = memoryview(sbuf)
    send = sock.send
    recv = sock.recv
    now = _now_ns
    completed = 0
    lost = 0
    t0 = 0
    kernel_waits = mode in ("blocking", "timeout")
    spin = mode == "spin"
    rwait = None if kernel_waits else _poller(sock, _POLLIN)
    wwait = None if kernel_waits else _poller(sock, _POLLOUT)
    spins = 0
    start = 0.0
    data = b""
    for i in range(count):
        seq = i & 0xFF
        sbuf[0] = seq
        if out is not None:
            t0 = now()
        if kernel_waits:
            try:
                send(msg)
            except (BlockingIOError, TimeoutError):
                raise timed_out() from None
        else:
            while True:
                try:
                    send(msg)
                    spins = 0
                    break
                except BlockingIOError:
                    if spin:
                        if spins == 0:
                            start = _monotonic()
                        spins += 1
                        if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                            raise timed_out() from None
                    elif not wwait(tms):  # type: ignore[misc]
                        raise timed_out() from None
        # wait for this round's reply; drop stale ones; none in time = lost
        while True:
            if kernel_waits:
                try:
                    data = recv(size)
                    n = len(data)
                except (BlockingIOError, TimeoutError):
                    n = -1
            else:
                try:
                    data = recv(size)
                    n = len(data)
                    spins = 0
                except BlockingIOError:
                    if spin:
                        if spins == 0:
                            start = _monotonic()
                        spins += 1
                        if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                            n = -1
                        else:
                            continue
                    elif not rwait(tms):  # type: ignore[misc]
                        n = -1
                    else:
                        continue
            if n < 0:
                lost += 1
                spins = 0
                break
            if n > 0 and data[0] == seq:
                if out is not None:
                    out[completed] = now() - t0
                completed += 1
                if pattern and data != msg:
                    raise _first_mismatch(memoryview(data), msg[:n], i * size)
                break
    return completed, lost
