"""Broken on purpose: its process dies (SIGSEGV, as a crashing extension would)."""

from __future__ import annotations

import faulthandler
import os
import signal
import socket

from fastsock.contract import DEFAULT_TIMEOUT

FASTSOCK_CONTRACT = 1
MODES = ("blocking",)


def stream_send(sock: socket.socket, count: int, size: int, mode: str,
                timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
    faulthandler.disable()  # a crash, not a traceback dump in the test's output
    os.kill(os.getpid(), signal.SIGSEGV)
    return 0
