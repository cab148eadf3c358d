"""Connected socket pairs for each transport, on this machine only.

Design note
-----------
Every case needs two connected sockets: the measured side's and the peer's.
They are made here in the worker (TCP: listen/connect/accept on loopback;
UDP: two bound sockets connected to each other; Unix: real path-bound
sockets in a private temporary directory), then the peer's end is handed to
the peer process.  Making both ends in one process keeps set-up outside
the timed region and needs no port or path agreement with the peer.

Unix socket files are unlinked, and their directory removed, as soon as the
connection exists: a connected Unix socket does not need its path, so a
crash later leaves no file behind.

The connect scenario needs a listener instead of a pair
(:class:`Listener`): it lives for the whole case, since every iteration
connects to it, so a Unix listener keeps its path (in a private temporary
directory) until ``close()`` removes both.  A worker killed outright
(SIGKILL) leaves that directory behind; every other way out closes it.

Socket buffers (a case's ``sockbuf``, :mod:`bench.run.axes`): both ends
get ``SO_SNDBUF`` and ``SO_RCVBUF`` before they connect: TCP picks its
window scale from the receive buffer at the handshake, and a set size turns
its autotuning off.  A TCP connection accepted from a listener inherits the
listener's sizes; a Unix stream one does not, so it gets them after
``accept`` (nothing is negotiated there).  :func:`buffer_facts` reads back
what the kernel granted on both ends: it doubles a request (for its own
bookkeeping) and caps it at ``net.core.wmem_max`` / ``rmem_max``;
``SO_SNDBUFFORCE`` / ``SO_RCVBUFFORCE``, which pass the cap, need root and
are not used.

Limits: loopback only (127.0.0.1, ::1); the cross-host peer is ``serve``.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile

from fastsock import UDP4_MAX, UDP6_MAX

# Bound on connect/accept during set-up (seconds).
SETUP_TIMEOUT = 5.0
# Accept queue of a connect case's listener (connections): the loop accepts
# each connection before making the next, so 1 would do; a few more keep a
# stray connection from elsewhere from stalling it.
LISTEN_BACKLOG = 16
# Largest Unix datagram the suite uses (bytes); the kernel's real bound is
# the send buffer, probed by unix_dgram_max().
UNIX_DGRAM_CAP = 65536


def has_ipv6() -> bool:
    """True when ::1 can be bound here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def unix_dgram_max() -> int:
    """The largest Unix datagram this machine accepts, up to UNIX_DGRAM_CAP."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.setblocking(False)
        lo, hi = 1, UNIX_DGRAM_CAP
        while lo < hi:  # binary search on EMSGSIZE
            mid = (lo + hi + 1) // 2
            try:
                a.send(bytes(mid))
                b.recv(mid)
                lo = mid
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS, errno.EAGAIN):
                    raise
                hi = mid - 1
        return lo


def max_datagrams() -> dict[str, int]:
    return {"udp4": UDP4_MAX, "udp6": UDP6_MAX, "unix-dgram": unix_dgram_max()}


def available() -> list[str]:
    out = ["tcp4", "udp4", "unix-stream", "unix-dgram"]
    if has_ipv6():
        out[1:1] = ["tcp6"]
        out.insert(3, "udp6")
    return out


def set_buffers(sock: socket.socket, sockbuf: int) -> None:
    """Ask for ``sockbuf`` bytes of send and receive buffer (0: leave the
    kernel's defaults)."""
    if sockbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sockbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sockbuf)


def granted(sock: socket.socket) -> tuple[int, int]:
    """(SO_SNDBUF, SO_RCVBUF) as the kernel reports them, bytes."""
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def buffer_facts(mine: socket.socket, theirs: socket.socket, sockbuf: int) -> dict[str, int]:
    """What the kernel granted on both ends, for the report: the peer's end
    (``peer_sndbuf``, ``peer_rcvbuf``) and, when a size was asked for,
    whether it was capped (``sockbuf_capped``: a grant below twice the
    request; the measured end's sizes are recorded by the worker)."""
    snd, rcv = granted(theirs)
    facts = {"peer_sndbuf": snd, "peer_rcvbuf": rcv}
    if sockbuf:
        every = (*granted(mine), snd, rcv)
        facts["sockbuf_capped"] = int(any(g < 2 * sockbuf for g in every))
    return facts


def _tcp_pair(family: int, host: str, sockbuf: int = 0) -> tuple[socket.socket, socket.socket]:
    with socket.socket(family, socket.SOCK_STREAM) as lst:
        set_buffers(lst, sockbuf)  # before listen: the accepted socket inherits them
        lst.bind((host, 0))
        lst.listen(1)
        lst.settimeout(SETUP_TIMEOUT)
        client = socket.socket(family, socket.SOCK_STREAM)
        try:
            set_buffers(client, sockbuf)  # before connect: the window scale
            client.settimeout(SETUP_TIMEOUT)
            client.connect(lst.getsockname()[:2])
            server, _ = lst.accept()
        except BaseException:
            client.close()
            raise
    return client, server


def _udp_pair(family: int, host: str, sockbuf: int = 0) -> tuple[socket.socket, socket.socket]:
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    try:
        set_buffers(a, sockbuf)
        set_buffers(b, sockbuf)
        a.bind((host, 0))
        b.bind((host, 0))
        a.connect(b.getsockname()[:2])
        b.connect(a.getsockname()[:2])
    except BaseException:
        a.close()
        b.close()
        raise
    return a, b


def _unix_pair(kind: int, sockbuf: int = 0) -> tuple[socket.socket, socket.socket]:
    d = tempfile.mkdtemp(prefix="fastsock-")
    pa, pb = os.path.join(d, "a.sock"), os.path.join(d, "b.sock")
    a = socket.socket(socket.AF_UNIX, kind)
    b = socket.socket(socket.AF_UNIX, kind)
    try:
        set_buffers(a, sockbuf)
        set_buffers(b, sockbuf)
        if kind == socket.SOCK_STREAM:
            b.bind(pb)
            b.listen(1)
            b.settimeout(SETUP_TIMEOUT)
            a.settimeout(SETUP_TIMEOUT)
            a.connect(pb)
            server, _ = b.accept()
            b.close()
            try:  # a Unix connection does not inherit the listener's sizes
                set_buffers(server, sockbuf)
            except BaseException:
                server.close()
                raise
            return a, server
        a.bind(pa)
        b.bind(pb)
        a.connect(pb)
        b.connect(pa)
        return a, b
    except BaseException:
        a.close()
        b.close()
        raise
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_pair(transport: str, sockbuf: int = 0) -> tuple[socket.socket, socket.socket]:
    """(measured end, peer end), connected, blocking, no timeout; with
    ``sockbuf`` > 0 both ends asked for that many bytes of send and receive
    buffer before they connect."""
    if transport == "tcp4":
        pair = _tcp_pair(socket.AF_INET, "127.0.0.1", sockbuf)
    elif transport == "tcp6":
        pair = _tcp_pair(socket.AF_INET6, "::1", sockbuf)
    elif transport == "udp4":
        pair = _udp_pair(socket.AF_INET, "127.0.0.1", sockbuf)
    elif transport == "udp6":
        pair = _udp_pair(socket.AF_INET6, "::1", sockbuf)
    elif transport == "unix-stream":
        pair = _unix_pair(socket.SOCK_STREAM, sockbuf)
    elif transport == "unix-dgram":
        pair = _unix_pair(socket.SOCK_DGRAM, sockbuf)
    else:
        raise ValueError(f"unknown transport {transport!r}")
    for s in pair:
        s.settimeout(None)
    return pair


class Listener:
    """A listening socket on this machine for the connect scenario (tcp4,
    tcp6, unix-stream); ``close()`` also removes a Unix path and its
    private directory.  Blocking, no timeout: the loop sets its mode."""

    def __init__(self, transport: str) -> None:
        self._dir: str | None = None
        if transport in ("tcp4", "tcp6"):
            family, host = ((socket.AF_INET, "127.0.0.1") if transport == "tcp4"
                            else (socket.AF_INET6, "::1"))
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            where: str | tuple[str, int] = (host, 0)
        elif transport == "unix-stream":
            self._dir = tempfile.mkdtemp(prefix="fastsock-")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            where = os.path.join(self._dir, "listen.sock")
        else:
            raise ValueError(f"transport {transport!r} has no connections")
        try:
            self.sock.bind(where)
            self.sock.listen(LISTEN_BACKLOG)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
