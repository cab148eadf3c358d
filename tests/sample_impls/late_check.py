"""Broken on purpose: configures the socket before checking the arguments."""

from __future__ import annotations

import socket

from sample_impls import plain

from fastsock.contract import DEFAULT_TIMEOUT, configure

FASTSOCK_CONTRACT = 1
MODES = ("blocking",)


def stream_send(sock: socket.socket, count: int, size: int, mode: str,
                timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
    if isinstance(sock, socket.socket) and sock.fileno() >= 0:
        configure(sock, "blocking", 1.0)
    return plain.stream_send(sock, count, size, mode, timeout, pattern)
