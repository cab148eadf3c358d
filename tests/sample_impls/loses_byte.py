"""Broken on purpose: the last byte of the stream is never sent."""

from __future__ import annotations

import socket

from sample_impls.plain import message

from fastsock.contract import (
    DEFAULT_TIMEOUT,
    check_mode_of,
    check_stream,
    check_timeout,
    configure,
    pattern_buffer,
    timed_out,
)

FASTSOCK_CONTRACT = 1
MODES = ("blocking",)


def stream_send(sock: socket.socket, count: int, size: int, mode: str,
                timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
    check_stream(sock, size, count)
    check_mode_of(mode, MODES, "loses_byte", "a sample")
    timeout = check_timeout(timeout)
    configure(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    try:
        for i in range(count):
            m = message(pat, msg, i * size, size)
            sock.sendall(m[:-1] if i == count - 1 else m)
    except (BlockingIOError, TimeoutError):
        raise timed_out() from None
    return count * size
