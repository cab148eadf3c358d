"""Broken on purpose: ignores ``pattern`` (sends zeros)."""

from __future__ import annotations

import socket

from sample_impls import plain

from fastsock.contract import DEFAULT_TIMEOUT

FASTSOCK_CONTRACT = 1
MODES = ("blocking",)


def stream_send(sock: socket.socket, count: int, size: int, mode: str,
                timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
    return plain.stream_send(sock, count, size, mode, timeout, False)
