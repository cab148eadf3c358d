"""Broken on purpose: a datagram round takes any reply, a stale one too."""

from __future__ import annotations

import socket
from typing import Any

from fastsock.contract import (
    DEFAULT_TIMEOUT,
    check_dgram,
    check_mode_of,
    check_samples,
    check_timeout,
    configure,
    pattern_buffer,
    pattern_error,
)

FASTSOCK_CONTRACT = 1
MODES = ("blocking",)


def dgram_pingpong(sock: socket.socket, count: int, size: int, mode: str,
                   timeout: float = DEFAULT_TIMEOUT, samples: Any = None,
                   pattern: bool = False) -> tuple[int, int]:
    check_dgram(sock, size, count)
    check_samples(samples, count)
    check_mode_of(mode, MODES, "takes_stale", "a sample")
    configure(sock, mode, check_timeout(timeout))
    msg = bytearray(pattern_buffer(size)[:size] if pattern else bytes(size))
    done = lost = 0
    for i in range(count):
        msg[0] = i & 0xFF
        sock.send(msg)
        try:
            reply = sock.recv(size)
        except (BlockingIOError, TimeoutError):
            lost += 1
            continue
        if samples is not None:
            samples[done] = 1
        done += 1
        if pattern and reply != msg:
            raise pattern_error(0, reply[0], msg[0])
    return done, lost
