"""Broken on purpose: ignores ``pattern`` (sends zeros)."""

from __future__ import annotations

import socket

from fastsock.contract import DEFAULT_TIMEOUT
from sample_impls import plain

FASTSOCK_CONTRACT = 1
MODES = ("blocking",)


def stream_send(sock: socket.socket, count: int, size: int, mode: str,
                timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
    return plain.stream_send(sock, count, size, mode, timeout, False)
