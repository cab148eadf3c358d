"""The pure-Python twins of fastsock's compiled loops.

Design note
-----------
Same names, signatures, results and syscalls per message as
``fastsock._loops`` (the contract is in ``fastsock._common``), written the
way careful Python socket code is written: a preallocated ``bytearray`` and
``memoryview``, ``recv_into``, ``send`` continued on partial sends, bound
methods in locals.  The difference from the compiled twin is then the
interpreter, not the algorithm.

Two shapes of loop cover the four modes:

* ``blocking`` and ``timeout``: the socket module waits.  In ``timeout``
  mode CPython polls before every call (what ``settimeout`` does), so that
  mode needs no code here; ``configure`` set it up.
* ``nonblocking`` and ``spin``: the loop waits itself on EAGAIN
  (``BlockingIOError``): ``poll`` with the timeout, or an immediate retry
  that reads the clock every ``SPIN_CHECK`` tries to stay bounded.

Signals: CPython retries EINTR itself after running handlers (PEP 475), and
the eval loop runs them between bytecodes, so Ctrl-C interrupts a spin loop.

``connect_accept`` plays both ends of each connection with the socket
module's own calls: ``socket.socket()``, ``connect`` (``connect_ex`` and a
``poll`` in ``nonblocking`` mode), ``listener.accept()`` and ``close()``,
the accepted socket first; the socket objects are what a Python program
pays for, so they are made here too.  Every socket is closed on every way
out, except one window that is CPython's: ``socket.accept()`` runs signal
handlers when ``_accept()`` returns, before the new fd has an owner, so a
Ctrl-C landing there loses that fd (the compiled loop has no such window).

Limits: no batching (``sendmmsg``/``recvmmsg``): the standard library has
no such call, so ``dgram_send``/``dgram_recv`` take ``batch=1`` only and
refuse more with a ``ValueError`` before any I/O (``check_batch``).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Any

from fastsock._common import (
    DEFAULT_TIMEOUT,
    PATTERN_PERIOD,
    SPIN_CHECK,
    _timeval,
    check_batch,
    check_connect_mode,
    check_dgram,
    check_listener,
    check_mode,
    check_samples,
    check_stream,
    check_timeout,
    check_total,
    configure,
    not_accepted,
    pattern_buffer,
    pattern_error,
    peer_closed,
    timed_out,
)

IMPLEMENTATION = "python"
# The contract version this module keeps (fastsock._common.CONTRACT_VERSION).
FASTSOCK_CONTRACT = 1
# No sendmmsg/recvmmsg in the socket module: batch=1 only.
HAVE_MMSG = False

_monotonic = time.monotonic
_now_ns = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux, as the compiled loops
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


def _setup(sock: socket.socket, mode: Any, timeout: Any) -> tuple[str, float, int]:
    check_mode(mode)
    timeout = check_timeout(timeout)
    configure(sock, mode, timeout)
    # poll() takes milliseconds; round up so a tiny timeout is not 0 (= no wait)
    return mode, timeout, max(1, int(timeout * 1000 + 0.999))


def _poller(sock: socket.socket, events: int) -> Any:
    p = select.poll()
    p.register(sock.fileno(), events)
    return p.poll


def _first_mismatch(got: memoryview, want: memoryview, base: int) -> ValueError:
    for j in range(len(got)):
        if got[j] != want[j]:
            return pattern_error(base + j, got[j], want[j])
    return pattern_error(base, -1, -1)  # unreachable when called on a mismatch


# ---------------------------------------------------------------- stream


def stream_send(
    sock: socket.socket, count: int, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, pattern: bool = False,
) -> int:
    check_stream(sock, size, count)
    mode, timeout, tms = _setup(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    send = sock.send
    off = 0
    if mode in ("blocking", "timeout"):
        try:
            for _ in range(count):
                if pat is not None:
                    msg = pat[off:off + size]
                    off = (off + size) % PATTERN_PERIOD
                n = send(msg)
                while n < size:
                    n += send(msg[n:])
        except BlockingIOError:  # SO_SNDTIMEO expired (blocking mode)
            raise timed_out() from None
        except TimeoutError:
            raise timed_out() from None
        return count * size
    spin = mode == "spin"
    wait = _poller(sock, _POLLOUT)
    spins = 0
    start = 0.0
    for _ in range(count):
        if pat is not None:
            msg = pat[off:off + size]
            off = (off + size) % PATTERN_PERIOD
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
                elif not wait(tms):
                    raise timed_out() from None
    return count * size


def stream_recv(
    sock: socket.socket, total: int | None, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, verify: bool = False,
) -> int:
    check_stream(sock, size)
    limit = check_total(total)
    mode, timeout, tms = _setup(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if verify else None
    buf = memoryview(bytearray(size))
    recv_into = sock.recv_into
    got = 0
    kernel_waits = mode in ("blocking", "timeout")
    spin = mode == "spin"
    wait = None if kernel_waits else _poller(sock, _POLLIN)
    spins = 0
    start = 0.0
    while limit < 0 or got < limit:
        want = size if limit < 0 or limit - got >= size else limit - got
        if kernel_waits:
            try:
                n = recv_into(buf, want)
            except (BlockingIOError, TimeoutError):
                raise timed_out() from None
        else:
            try:
                n = recv_into(buf, want)
                spins = 0
            except BlockingIOError:
                if spin:
                    if spins == 0:
                        start = _monotonic()
                    spins += 1
                    if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                        raise timed_out() from None
                elif not wait(tms):  # type: ignore[misc]
                    raise timed_out() from None
                continue
        if n == 0:
            break
        if pat is not None:
            o = got % PATTERN_PERIOD
            if buf[:n] != pat[o:o + n]:
                raise _first_mismatch(buf[:n], pat[o:o + n], got)
        got += n
    return got


def stream_echo(
    sock: socket.socket, size: int, mode: str, timeout: float = DEFAULT_TIMEOUT,
) -> int:
    check_stream(sock, size)
    mode, timeout, tms = _setup(sock, mode, timeout)
    buf = memoryview(bytearray(size))
    recv_into = sock.recv_into
    send = sock.send
    echoed = 0
    if mode in ("blocking", "timeout"):
        try:
            while True:
                n = recv_into(buf, size)
                if n == 0:
                    return echoed
                s = send(buf[:n])
                while s < n:
                    s += send(buf[s:n])
                echoed += n
        except (BlockingIOError, TimeoutError):
            raise timed_out() from None
    spin = mode == "spin"
    rwait = _poller(sock, _POLLIN)
    wwait = _poller(sock, _POLLOUT)
    spins = 0
    start = 0.0
    while True:
        try:
            n = recv_into(buf, size)
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
        if n == 0:
            return echoed
        s = 0
        while s < n:
            try:
                s += send(buf[s:n])
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
        echoed += n


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
    rbuf = memoryview(bytearray(size))
    send = sock.send
    recv_into = sock.recv_into
    now = _now_ns
    t0 = 0
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
        got = 0
        while got < size:
            try:
                n = recv_into(rbuf[got:] if got else rbuf, size - got)
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
            if n == 0:
                raise peer_closed()
            got += n
        if out is not None:
            out[i] = now() - t0
        if pat is not None and rbuf != msg:
            raise _first_mismatch(rbuf, msg, i * size)
    return count


# -------------------------------------------------------------- datagram


def dgram_send(
    sock: socket.socket, count: int, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, pattern: bool = False, batch: int = 1,
) -> int:
    check_dgram(sock, size, count)
    check_batch(batch, HAVE_MMSG, IMPLEMENTATION)
    mode, timeout, tms = _setup(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    send = sock.send
    if mode in ("blocking", "timeout"):
        try:
            for i in range(count):
                if pat is not None:
                    o = i % PATTERN_PERIOD
                    msg = pat[o:o + size]
                send(msg)
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
            send(msg)
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


def _check_datagram(buf: memoryview, n: int, pat: memoryview, index: int) -> None:
    first = buf[0]
    if first >= PATTERN_PERIOD or buf[:n] != pat[first:first + n]:
        want = pat[first % PATTERN_PERIOD:first % PATTERN_PERIOD + n]
        if first >= PATTERN_PERIOD:
            raise pattern_error(0, first, 0)
        raise _first_mismatch(buf[:n], want, 0)


def dgram_recv(
    sock: socket.socket, count: int, size: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, verify: bool = False, batch: int = 1,
) -> int:
    check_dgram(sock, size, count)
    check_batch(batch, HAVE_MMSG, IMPLEMENTATION)
    mode, timeout, tms = _setup(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if verify else None
    buf = memoryview(bytearray(size))
    recv_into = sock.recv_into
    got = 0
    if mode in ("blocking", "timeout"):
        while got < count:
            try:
                n = recv_into(buf, size)
            except (BlockingIOError, TimeoutError):
                break  # idle for `timeout`: UDP loses, this ends the wait
            if n == 0:
                break
            if pat is not None:
                _check_datagram(buf, n, pat, got)
            got += 1
        return got
    spin = mode == "spin"
    wait = _poller(sock, _POLLIN)
    spins = 0
    start = 0.0
    while got < count:
        try:
            n = recv_into(buf, size)
            spins = 0
        except BlockingIOError:
            if spin:
                if spins == 0:
                    start = _monotonic()
                spins += 1
                if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                    break
            elif not wait(tms):
                break
            continue
        if n == 0:
            break
        if pat is not None:
            _check_datagram(buf, n, pat, got)
        got += 1
    return got


def dgram_echo(
    sock: socket.socket, size: int, mode: str, timeout: float = DEFAULT_TIMEOUT,
) -> int:
    check_dgram(sock, size)
    mode, timeout, tms = _setup(sock, mode, timeout)
    buf = memoryview(bytearray(size))
    recv_into = sock.recv_into
    send = sock.send
    echoed = 0
    if mode in ("blocking", "timeout"):
        while True:
            try:
                n = recv_into(buf, size)
            except (BlockingIOError, TimeoutError):
                return echoed
            try:
                send(buf[:n])
            except (BlockingIOError, TimeoutError):
                raise timed_out() from None
            if n == 0:
                return echoed
            echoed += 1
    spin = mode == "spin"
    rwait = _poller(sock, _POLLIN)
    wwait = _poller(sock, _POLLOUT)
    spins = 0
    start = 0.0
    while True:
        try:
            n = recv_into(buf, size)
            spins = 0
        except BlockingIOError:
            if spin:
                if spins == 0:
                    start = _monotonic()
                spins += 1
                if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                    return echoed
            elif not rwait(tms):
                return echoed
            continue
        while True:
            try:
                send(buf[:n])
                spins = 0
                break
            except BlockingIOError:
                if spin:
                    if spins == 0:
                        start = _monotonic()
                    spins += 1
                    if spins % SPIN_CHECK == 0 and _monotonic() - start > timeout:
                        raise timed_out() from None
                elif not wwait(tms):
                    raise timed_out() from None
        if n == 0:
            return echoed
        echoed += 1


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
    send = sock.send
    recv_into = sock.recv_into
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
                    n = recv_into(rbuf, size)
                except (BlockingIOError, TimeoutError):
                    n = -1
            else:
                try:
                    n = recv_into(rbuf, size)
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


# ----------------------------------------------------------- connections


def _verify_pair(client: socket.socket, accepted: socket.socket, i: int, tms: int) -> None:
    want = i & 0xFF
    client.send(bytes((want,)))
    if not _poller(accepted, _POLLIN)(tms):
        raise timed_out()
    got = accepted.recv(1)
    if got != bytes((want,)):
        raise not_accepted(i, got[0] if got else -1, want)


def connect_accept(
    listener: socket.socket, count: int, mode: str,
    timeout: float = DEFAULT_TIMEOUT, verify: bool = False,
) -> int:
    check_listener(listener, count)
    check_connect_mode(mode)
    mode, timeout, tms = _setup(listener, mode, timeout)
    addr = listener.getsockname()
    family, kind = listener.family, int(listener.type)
    new_socket = socket.socket
    accept = listener.accept
    if mode == "blocking":
        sol, sndtimeo, tv = socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout)
        try:
            for i in range(count):
                client = new_socket(family, kind)
                try:
                    client.setsockopt(sol, sndtimeo, tv)  # bounds connect
                    client.connect(addr)
                    conn, _ = accept()
                    try:
                        if verify:
                            _verify_pair(client, conn, i, tms)
                    finally:
                        conn.close()
                finally:
                    client.close()
        # SO_SNDTIMEO passed in connect (EINPROGRESS) or SO_RCVTIMEO in accept
        except (BlockingIOError, TimeoutError):
            raise timed_out() from None
        return count
    if mode == "timeout":
        try:
            for i in range(count):
                client = new_socket(family, kind)
                try:
                    client.settimeout(timeout)
                    client.connect(addr)
                    conn, _ = accept()
                    try:
                        if verify:
                            _verify_pair(client, conn, i, tms)
                    finally:
                        conn.close()
                finally:
                    client.close()
        except TimeoutError:
            raise timed_out() from None
        return count
    # nonblocking
    kind |= socket.SOCK_NONBLOCK
    sol, soerror = socket.SOL_SOCKET, socket.SO_ERROR
    poll, einprogress = select.poll, errno.EINPROGRESS
    lwait = _poller(listener, _POLLIN)
    for i in range(count):
        client = new_socket(family, kind)
        try:
            err = client.connect_ex(addr)
            if err:
                if err != einprogress:
                    raise OSError(err, os.strerror(err))
                p = poll()
                p.register(client, _POLLOUT)
                if not p.poll(tms):
                    raise timed_out()
                err = client.getsockopt(sol, soerror)
                if err:
                    raise OSError(err, os.strerror(err))
            while True:
                try:
                    conn, _ = accept()
                    break
                except BlockingIOError:
                    if not lwait(tms):
                        raise timed_out() from None
            try:
                if verify:
                    _verify_pair(client, conn, i, tms)
            finally:
                conn.close()
        finally:
            client.close()
    return count
