"""fastsock: socket loops (send/recv, connect/accept), compiled (Cython) and pure Python.

``fastsock`` holds only what is measured.  Importing it picks the compiled
loops (``fastsock._loops``) or, when ``FASTSOCK_PUREPYTHON=1`` is set or the
extension is not built, their pure-Python twins (``fastsock._pyloops``).
``IMPLEMENTATION`` says which one was loaded ("cython" or "python"); both
modules stay importable by name so that tests and the suite can use each
explicitly.  The loop contract is documented in ``fastsock._common``; it
is public and versioned (``CONTRACT_VERSION``; ``fastsock.contract`` for
modules of users' own that keep it, docs/impls.md).
The event-loop comparators (asyncio, optionally uvloop) live in
``fastsock._asyncloops``, imported only by who uses them: importing
``fastsock`` does not import asyncio.
"""

from __future__ import annotations

import os

from fastsock._common import (
    CONTRACT_VERSION,
    DEFAULT_TIMEOUT,
    MAX_BATCH,
    MODES,
    UDP4_MAX,
    UDP6_MAX,
)

__version__ = "0.1.0"

_FORCED_PYTHON = os.environ.get("FASTSOCK_PUREPYTHON", "") not in ("", "0")

if _FORCED_PYTHON:
    from fastsock import _pyloops as _impl
else:
    try:
        from fastsock import _loops as _impl  # type: ignore[no-redef]
    except ImportError:
        from fastsock import _pyloops as _impl

IMPLEMENTATION: str = _impl.IMPLEMENTATION
# The loaded loops batch datagrams (dgram_send/dgram_recv with batch > 1):
# the compiled ones on Linux (sendmmsg/recvmmsg); never the Python twin.
HAVE_MMSG: bool = _impl.HAVE_MMSG
LOOP_NAMES = (
    "stream_send",
    "stream_recv",
    "stream_echo",
    "stream_pingpong",
    "dgram_send",
    "dgram_recv",
    "dgram_echo",
    "dgram_pingpong",
    "connect_accept",
)

stream_send = _impl.stream_send
stream_recv = _impl.stream_recv
stream_echo = _impl.stream_echo
stream_pingpong = _impl.stream_pingpong
dgram_send = _impl.dgram_send
dgram_recv = _impl.dgram_recv
dgram_echo = _impl.dgram_echo
dgram_pingpong = _impl.dgram_pingpong
connect_accept = _impl.connect_accept


def implementations() -> dict[str, object]:
    """The loop modules available here, by impl name ("cython", "python")."""
    from fastsock import _pyloops

    found: dict[str, object] = {"python": _pyloops}
    try:
        from fastsock import _loops
    except ImportError:
        pass
    else:
        found["cython"] = _loops
    return found


__all__ = [
    "CONTRACT_VERSION",
    "DEFAULT_TIMEOUT",
    "HAVE_MMSG",
    "IMPLEMENTATION",
    "LOOP_NAMES",
    "MAX_BATCH",
    "MODES",
    "UDP4_MAX",
    "UDP6_MAX",
    "implementations",
    *LOOP_NAMES,
]
