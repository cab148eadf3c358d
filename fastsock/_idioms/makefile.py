"""socket-makefile: ``sock.makefile('rwb')``, buffered file calls instead of socket calls.

Design note
-----------
Per message the measured side ``write``s the message and ``flush``es it
(``io.BufferedWriter``; a message larger than the buffer, 8 KiB, goes
straight to the socket), and a round trip reads its reply with
``readinto`` (``io.BufferedReader``: it keeps reading until the buffer is
full, i.e. the whole reply, or EOF).  The flush per message keeps the
contract's stream_send: each message is handed to the kernel when it is
sent, one ``send`` per message as the twin does; without it the file would
gather small messages into buffer-sized sends, a batching the twins do
not do either.  The file is made once per call (outside the per-message
loop) and closed on every way out.

Modes: ``blocking`` and ``timeout``.  A file over a non-blocking socket
returns ``None`` from its raw reads and writes and loses track of what it
buffered; ``makefile()`` says the socket must be blocking (it may have a
timeout), so ``nonblocking`` and ``spin`` are refused (ValueError, before
any I/O).  An expired wait shows as ``None`` from ``readinto`` or
``BlockingIOError`` from ``flush`` (``blocking``: SO_RCVTIMEO/SO_SNDTIMEO)
or ``TimeoutError`` (``timeout``): the contract's ``TimeoutError`` either
way.  After an error the file is closed with the socket made non-blocking
first, so that closing (which flushes) never waits again.
"""

from __future__ import annotations

import io
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
IMPLEMENTATION = "socket-makefile"
MODES = ("blocking", "timeout")
_WHY = "a makefile() file needs a blocking socket (which may have a timeout)"


def _close(sock: socket.socket, f: io.BufferedRWPair, done: bool) -> None:
    """Close the file; after an error, without waiting to flush what it holds."""
    if done:
        f.close()
        return
    try:
        sock.setblocking(False)
    except OSError:
        pass
    try:
        f.close()
    except (OSError, ValueError):
        pass  # the unsent rest of a failed message: the error is already on its way


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
    off = 0
    f = sock.makefile("rwb")
    write, flush = f.write, f.flush
    done = False
    try:
        for _ in range(count):
            if pat is not None:
                msg = pat[off:off + size]
                off = (off + size) % PATTERN_PERIOD
            write(msg)
            flush()
        done = True
    except (BlockingIOError, TimeoutError):
        raise timed_out() from None
    finally:
        _close(sock, f, done)
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
    now = _now_ns
    t0 = 0
    f = sock.makefile("rwb")
    write, flush, readinto = f.write, f.flush, f.readinto
    done = False
    try:
        for i in range(count):
            if pat is not None:
                msg = pat[off:off + size]
                off = (off + size) % PATTERN_PERIOD
            if out is not None:
                t0 = now()
            write(msg)
            flush()
            got = readinto(rbuf)
            while got != size:  # short: EOF, or a wait that expired (None)
                if not got:
                    raise timed_out() if got is None else peer_closed()
                n = readinto(rbuf[got:])
                if not n:
                    raise timed_out() if n is None else peer_closed()
                got += n
            if out is not None:
                out[i] = now() - t0
            if pat is not None and rbuf != msg:
                raise _first_mismatch(rbuf, msg, i * size)
        done = True
    except (BlockingIOError, TimeoutError):
        raise timed_out() from None
    finally:
        _close(sock, f, done)
    return count
