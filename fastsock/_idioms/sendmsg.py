"""socket-sendmsg: ``sock.sendmsg([msg])`` and ``sock.recvmsg_into([buf])`` for datagrams.

Design note
-----------
The scatter/gather calls, one datagram each: ``sendmsg`` takes a list of
buffers (one here, made per call as code using the idiom makes it) and
``recvmsg_into`` returns a tuple ``(nbytes, ancdata, flags, address)``
per call.  Against the Python twin's ``send``/``recv_into`` the syscall
per datagram is the same family (``sendmsg``/``recvmsg`` instead of
``sendto``/``recvfrom``) and the waits, checks and results are the
twin's: what differs is the argument and result handling in Python.  They
are the datagram calls (ancillary data, addresses), so this impl runs over
datagram sockets, in every mode; over a stream they would be ``send`` with
extra steps.

``dgram_send`` takes ``batch=1`` only: the socket module has no
``sendmmsg``.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from fastsock._common import (
    DEFAULT_TIMEOUT,
    PATTERN_PERIOD,
    SPIN_CHECK,
    check_batch,
    check_dgram,
    check_samples,
    pattern_buffer,
    timed_out,
)
from fastsock._common import MODES as ALL_MODES
from fastsock._pyloops import _first_mismatch, _monotonic, _now_ns, _poller, _setup

FASTSOCK_CONTRACT = 1
IMPLEMENTATION = "socket-sendmsg"
MODES = ALL_MODES  # every mode: sendmsg/recvmsg_into wait as send/recv_into do
HAVE_MMSG = False

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


def dgram_send(
    sock: socket.socket, count: int, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, pattern: bool = False, batch: int = 1,
) -> int:
    check_dgram(sock, size, count)
    check_batch(batch, HAVE_MMSG, IMPLEMENTATION)
    mode, timeout, tms = _setup(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    sendmsg = sock.sendmsg
    if mode in ("blocking", "timeout"):
        try:
            for i in range(count):
                if pat is not None:
                    o = i % PATTERN_PERIOD
                    msg = pat[o:o + size]
                sendmsg([msg])
        except (BlockingIOError, TimeoutError):
            raise timed_out() from None
        return count
    spin = mode == "spin"
    wait = _poller(sock, _POLLOUT)
    spins = 0
    start = 0.0
    i = 0
    while i < count:
        if pat is not None:
            o = i % PATTERN_PERIOD
            msg = pat[o:o + size]
        try:
            sendmsg([msg])
            spins = 0
        except BlockingIOError:
            if spin:
                if spins == 0:
                    start = _monotonic()
                spins += 1
                if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                    raise timed_out() from None
            elif not wait(tms):
                raise timed_out() from None
            continue
        i += 1
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
    rbuf = memoryview(bytearray(size))
    sendmsg = sock.sendmsg
    recvmsg_into = sock.recvmsg_into
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
    for i in range(count):
        seq = i & 0xFF
        sbuf[0] = seq
        if out is not None:
            t0 = now()
        if kernel_waits:
            try:
                sendmsg([msg])
            except (BlockingIOError, TimeoutError):
                raise timed_out() from None
        else:
            while True:
                try:
                    sendmsg([msg])
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
                    n = recvmsg_into([rbuf])[0]
                except (BlockingIOError, TimeoutError):
                    n = -1
            else:
                try:
                    n = recvmsg_into([rbuf])[0]
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
            if n > 0 and rbuf[0] == seq:
                if out is not None:
                    out[completed] = now() - t0
                completed += 1
                if pattern and rbuf[:n] != msg:
                    raise _first_mismatch(rbuf[:n], msg[:n], i * size)
                break
    return completed, lost
