"""example-gather: stream messages handed to the kernel 16 at a time, one sendmsg each.

Where fastsock's Python loop makes one ``send`` per message, this loop
gathers up to ``GROUP`` messages into one ``sendmsg`` call (scatter/gather,
``writev``), as a framing library does when it flushes the messages it
queued.  It keeps fastsock's loop contract (``fastsock.contract``; the
rules are in fastsock's ``docs/impls.md``):

* ``FASTSOCK_CONTRACT = 1``: the contract version it keeps;
* it provides ``stream_send`` only, so fastsock measures it in the stream
  scenario over TCP and Unix streams and leaves the rest out with a note;
* ``MODES``: it waits the socket's way (blocking, with or without a
  timeout), so it declares ``blocking`` and ``timeout`` and refuses the
  others with a ``ValueError``, before any I/O, as every bad argument;
* every message is sent completely: a partial ``sendmsg`` is continued
  with the rest of its buffers; ``pattern=True`` sends the contract's
  integrity pattern (the peer verifies it); an expired wait raises
  ``TimeoutError``.
"""

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
MODES = ("blocking", "timeout")
__version__ = "0.1.0"

GROUP = 16  # messages per sendmsg call


def stream_send(sock: socket.socket, count: int, size: int, mode: str,
                timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
    check_stream(sock, size, count)
    check_mode_of(mode, MODES, "example-gather", "it lets the socket wait")
    timeout = check_timeout(timeout)
    configure(sock, mode, timeout)
    pat = memoryview(pattern_buffer(size)) if pattern else None
    full = [memoryview(bytearray(size))] * GROUP
    sendmsg = sock.sendmsg
    off = 0
    left = count
    try:
        while left:
            k = GROUP if left >= GROUP else left
            if pat is None:
                bufs = full if k == GROUP else full[:k]
            else:
                bufs = []
                for _ in range(k):
                    bufs.append(pat[off:off + size])
                    off = (off + size) % PATTERN_PERIOD
            sent = sendmsg(bufs)
            if sent < k * size:
                _send_rest(sendmsg, bufs, sent)
            left -= k
    except (BlockingIOError, TimeoutError):  # SO_SNDTIMEO, or the socket's timeout
        raise timed_out() from None
    return count * size


def _send_rest(sendmsg: object, bufs: list[memoryview], sent: int) -> None:
    """A partial sendmsg (the send buffer was full): the rest of its buffers."""
    rest = list(bufs)
    while rest:
        while rest and sent >= len(rest[0]):
            sent -= len(rest.pop(0))
        if not rest:
            return
        if sent:
            rest[0] = rest[0][sent:]
        sent = sendmsg(rest)  # type: ignore[operator]
