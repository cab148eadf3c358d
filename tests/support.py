"""Constants and small helpers shared by the loop tests (fixtures are in
conftest.py).  The reference reader and pattern here are plain Python, written
from the contract in ``fastsock._common``, so that a twin is never checked
only against itself."""

from __future__ import annotations

import socket
import time

from fastsock import _common

MODES = _common.MODES
STREAM_TRANSPORTS = ("tcp4", "tcp6", "unix")
DGRAM_TRANSPORTS = ("udp4", "udp6", "unix_dgram")

# Bound on every wait of a loop under test that is expected to succeed (s).
TIMEOUT = 5.0
# Bound on joining a peer thread (s): longer than any loop timeout it runs.
JOIN_TIMEOUT = TIMEOUT * 3
# Socket buffer size that makes sends partial and reads short (bytes).
TINY_BUFFER = 4096


def pattern(offset: int, n: int) -> bytes:
    """The contract's stream pattern: byte at offset i is i % PATTERN_PERIOD."""
    period = _common.PATTERN_PERIOD
    start = offset % period
    reps = (start + n) // period + 1
    return (bytes(range(period)) * reps)[start:start + n]


def recv_exactly(sock: socket.socket, n: int, timeout: float = TIMEOUT) -> bytes:
    """Plain-Python reference reader: ``n`` bytes or what came before EOF."""
    sock.settimeout(timeout)
    chunks = []
    got = 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def nothing_to_read(sock: socket.socket, wait: float = 0.01) -> bool:
    """True when ``sock`` has no data (and no EOF) within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    return False


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg.strip(), f"{type(exc).__name__} has an empty message"
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    return msg


class Elapsed:
    """``with Elapsed() as t: ...``; then ``t.s`` is the seconds it took."""

    def __enter__(self) -> Elapsed:
        self.t0 = time.monotonic()
        self.s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.monotonic() - self.t0
