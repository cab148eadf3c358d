"""The event-loop impls in a worker: their connection, and the peer watch's hand-over.

Design note
-----------
The event-loop impls (``asyncio-*``, ``uvloop-*``) run the same timed units
(:mod:`bench.run.scenarios`) through a
:class:`fastsock._asyncloops.AsyncConn`, which has the twins'
``stream_send`` / ``stream_pingpong``.  :func:`wrap` makes it at set-up,
outside the timed region: its event loop (and, for ``*-streams``, the
reader and writer), so that a timed call runs one coroutine.  The
connection becomes the ends' loops and owns their socket; the loop's
description goes into the case's metadata (``event_loop``).  asyncio and
uvloop are imported inside :func:`wrap`, only by such cases: a twin's
worker starts as light as before.

The worker's SIGCHLD watch raises :class:`bench.run.peer.PeerError` from
its handler, which the twins' loops let through (they run signal handlers
on EINTR).  An event loop would swallow an exception raised inside one of
its callbacks (and uvloop refuses a SIGCHLD handler of its own), so while
the loop runs, :func:`hand_over`'s handler looks (``waitpid`` is safe
anywhere), keeps the error in ``Ends.peer_error`` and hands it to the loop
(``call_soon_threadsafe``, which wakes it), which ends the running call
with ``AsyncConn.abort``.  A call that ends first leaves the error kept:
the stream's wait for the peer and the next timed call raise it.

N connections (``threads`` > 1) share one loop: :func:`wrap_group` makes
a :class:`fastsock._asyncloops.AsyncGroup`, whose calls run the N
connections' coroutines as one task (:class:`bench.run.threads.LoopGroup`
times them).

Limits: stream transports only (``AsyncConn`` has no datagram loops; the
matrix offers none).
"""

from __future__ import annotations

from types import FrameType
from typing import Any, Callable

from bench.run.ends import CaseFailed, Ends
from bench.run.peer import PeerError

# What signal.signal takes as a handler.
Handler = Callable[[int, "FrameType | None"], None]


def wrap(ends: Ends, impl: str, timeout: float) -> None:
    """Drive ``ends`` with ``impl``'s event loop ("asyncio-streams", say):
    ``ends.loops`` becomes the connection.  CaseFailed where that event
    loop is not installed."""
    from fastsock._asyncloops import AsyncConn

    assert ends.sock is not None
    event_loop, api = impl.split("-", 1)
    try:
        conn = AsyncConn(ends.sock, event_loop, api, timeout)
    except ImportError as exc:
        raise CaseFailed(str(exc)) from None
    ends.conn = ends.loops = conn
    ends.meta["event_loop"] = conn.event_loop


def wrap_group(group: list[Ends], impl: str, timeout: float) -> Any:
    """N connections on one loop of ``impl`` (:class:`fastsock._asyncloops.AsyncGroup`):
    each ends' ``conn`` is its connection, ``loops`` the group (returned).
    CaseFailed where that event loop is not installed."""
    from fastsock._asyncloops import AsyncGroup

    socks = [e.sock for e in group]
    assert all(s is not None for s in socks)
    event_loop, api = impl.split("-", 1)
    try:
        loops = AsyncGroup([s for s in socks if s is not None], event_loop, api, timeout)
    except ImportError as exc:
        raise CaseFailed(str(exc)) from None
    for ends, conn in zip(group, loops.conns):
        ends.conn = conn
        ends.loops = loops
        ends.meta["event_loop"] = loops.event_loop
    return loops


def hand_over(ends: Ends, check_peer: Callable[[], None], runner: Any = None) -> Handler:
    """The SIGCHLD handler for ``ends`` on an event loop: ``check_peer``
    (which raises PeerError) as is between coroutines, its error handed to
    the loop while one runs.  ``runner``: what runs the calls and can be
    aborted (an AsyncGroup); the ends' own connection by default."""
    conn = runner if runner is not None else ends.conn
    assert conn is not None

    def on_sigchld(signum: int, frame: FrameType | None) -> None:
        if conn.closed or not conn.loop.is_running():
            check_peer()  # between coroutines (the peer's answer): as the twins
            return
        try:  # never raise inside the loop's machinery: hand it over
            check_peer()
        except PeerError as exc:
            ends.peer_error = exc
            conn.loop.call_soon_threadsafe(conn.abort, exc)

    return on_sigchld

