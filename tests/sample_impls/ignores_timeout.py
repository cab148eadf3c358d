"""Broken on purpose: waits without a bound (the socket's timeout removed)."""

from __future__ import annotations

import socket
import struct

from sample_impls.plain import message

from fastsock.contract import (
    DEFAULT_TIMEOUT,
    check_mode_of,
    check_stream,
    check_timeout,
    pattern_buffer,
)

FASTSOCK_CONTRACT = 1
MODES = ("blocking",)


def stream_send(sock: socket.socket, count: int, size: int, mode: str,
                timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
    check_stream(sock, size, count)
    check_mode_of(mode, MODES, "ignores_timeout", "a sample")
    check_timeout(timeout)
    sock.settimeout(None)  # and no SO_SNDTIMEO: a peer that reads nothing blocks it forever
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", 0, 0))
    pat = memoryview(pattern_buffer(size)) if pattern else None
    msg = memoryview(bytearray(size))
    for i in range(count):
        sock.sendall(message(pat, msg, i * size, size))
    return count * size
