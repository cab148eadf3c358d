"""A minimal impl that keeps the loop contract: stream_send, blocking mode only."""

from __future__ import annotations

import socket

from fastsock.contract import (
    DEFAULT_TIMEOUT,
    PATTERN_PERIOD,
    check_mode_of,
    check_stream,
    check_timeout,
    configure,
    pattern_buffer,
    timed_out,
)

FASTSOCK_CONTRACT = 1
MODES = ("blocking",)
__version__ = "1.2.3"


def message(pat: memoryview | None, msg: memoryview, off: int, size: int) -> memoryview:
    return msg if pat is None else pat[off % PATTERN_PERIOD:off % PATTERN_PERIOD + size]


def stream_send(sock: socket.socket, count: int, size: int, mode: str,
                timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
    check_stream(sock, size, count)
    check_mode_of(mode, MODES, "plain", "a sample")
    timeout = check_timeout(timeout)
    configure(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    try:
        for i in range(count):
            sock.sendall(message(pat, msg, i * size, size))
    except (BlockingIOError, TimeoutError):
        raise timed_out() from None
    return count * size
