"""One client of ``fastsock-bench serve``: its control connection and case.

Design note
-----------
:class:`bench.remote.server.Server` accepts and watches; everything one
client's thread does is here: the handshake (a nonce, the token's HMAC, one
bounded request, :mod:`bench.remote.protocol`), the ``hello`` answer (the
server's fingerprint and limits), and a case: the data socket opened per
case (TCP: a listener on an ephemeral port of the control connection's
local address, accepting one connection from the client's address only;
UDP: bound there and connected to the client's stated port), then the very
peer loop a local case forks (``bench.run.peer._peer_main``) until the
client's quit order or EOF.  A refused request gets one
``{"ok": false, "error": ...}`` line, and what the client still sends is
read and dropped for a moment (:data:`LINGER`) so that the close does not
reset the connection before the client has read the answer.  A client
never takes the server down: every exception of a session ends that
session with one log line.

The session reads what it needs of its server through :class:`Host`.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from typing import Any, Protocol

import fastsock
from bench.remote import protocol as P

# Bound on the client's data connection after the server names the port (s).
ACCEPT_TIMEOUT = 5.0
# Bound on the wait for the next order of a stream case (s).
CASE_IDLE = 60.0
# Keepalive on control connections: idle (s), interval (s), probes.
KEEPALIVE = (10, 5, 3)
# After an error answer: read and drop what the client still sends, for up
# to this long (s) / this much (bytes), so that closing does not reset the
# connection before the client has read the answer.
LINGER = 0.5
LINGER_BYTES = 256 * 1024


class Host(Protocol):
    """What a session asks of the server it runs in."""

    token: str | None
    max_clients: int
    max_size: int
    read_timeout: float
    fingerprint: dict[str, Any]

    def log(self, text: str) -> None: ...
    def clients(self) -> int: ...
    def forget(self, c: Conn) -> None: ...


def unmapped(addr: tuple[Any, ...]) -> tuple[Any, ...]:
    """An IPv4-mapped IPv6 socket address as the IPv4 one."""
    host = addr[0]
    if isinstance(host, str) and host.lower().startswith("::ffff:") and "." in host:
        return (host[7:], addr[1])
    return tuple(addr)


def _with_port(addr: tuple[Any, ...], port: int) -> tuple[Any, ...]:
    return (addr[0], port) + tuple(addr[2:])


class Conn:
    """One control connection and what it opened, so it can be aborted."""

    def __init__(self, sock: socket.socket, addr: tuple[Any, ...]) -> None:
        self.sock = sock
        self.name = P.format_hostport(*unmapped(addr)[:2])
        self.data: socket.socket | None = None
        self.case_start: float | None = None
        # a duplicate of ``sock`` that the accept loop peeks at without
        # waiting (``sock`` itself may have a timeout, which makes CPython
        # poll before the recv)
        self.watch: socket.socket | None = None
        self.heartbeat = False  # send H frames (datagram pingpong)
        self.last_beat = 0.0
        self.thread: threading.Thread | None = None
        # Held by the accept loop while it touches these sockets and by the
        # connection's thread while it closes them: never a syscall on a
        # closed socket's number, which a new socket may have reused.
        self.lock = threading.Lock()
        self.closed = False

    def abort(self) -> None:
        """Wake whatever this connection's thread waits on (it then ends)."""
        with self.lock:
            if self.closed:
                return
            for s in (self.sock, self.data):
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for s in (self.watch, self.data, self.sock):
                if s is not None:
                    s.close()


def serve_conn(host: Host, c: Conn) -> None:
    """One client's thread: its request, then its case or answer; never raises."""
    try:
        _handle(host, c)
    except Exception as exc:  # a client never takes the server down
        host.log(f"{c.name}: {type(exc).__name__}: {P._short(exc, 200)}")
    finally:
        c.case_start = None
        host.forget(c)  # before closing: the client's next case may connect
        c.close()  # as soon as it sees the close


def _handle(host: Host, c: Conn) -> None:
    sock = c.sock
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _keepalive(sock)
    nonce = secrets.token_hex(P.NONCE_BYTES)
    sock.settimeout(host.read_timeout)
    sock.sendall(P.encode({"fastsock": P.PROTOCOL, "ok": True, "nonce": nonce,
                           "auth": host.token is not None}))
    reader = P.LineReader(sock)
    try:
        req = reader.read_json(P.MAX_REQUEST, host.read_timeout, "request")
        if host.token is not None and not P.auth_ok(host.token, nonce, req.get("auth")):
            raise P.ProtocolError(
                "unauthorised: this server needs a token (run --token or FASTSOCK_TOKEN)"
                if "auth" not in req else "unauthorised: wrong token")
        P.check_request(req, host.max_size)
        if reader.buf:
            raise P.ProtocolError("unexpected data after the request")
    except P.ProtocolError as exc:
        _refuse(host, c, str(exc))
        return
    if req["op"] == "hello":
        fp = dict(host.fingerprint)
        try:
            fp["load_avg_1min"] = round(os.getloadavg()[0], 2)
        except OSError:
            pass
        clients = host.clients()
        sock.sendall(P.encode({
            "ok": True, "fastsock": P.PROTOCOL, "impl": fastsock.IMPLEMENTATION,
            "fingerprint": fp, "clients": clients,
            "limits": {"max_size": host.max_size, "max_clients": host.max_clients,
                       "max_request": P.MAX_REQUEST, "read_timeout": host.read_timeout},
        }))
        return
    _case(host, c, req)

def _refuse(host: Host, c: Conn, message: str) -> None:
    host.log(f"{c.name}: refused: {message}")
    try:
        c.sock.settimeout(1.0)
        c.sock.sendall(P.encode({"ok": False, "error": message}))
        c.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER
        dropped = 0
        while dropped < LINGER_BYTES:
            rest = deadline - time.monotonic()
            if rest <= 0:
                break
            c.sock.settimeout(rest)
            chunk = c.sock.recv(65536)
            if not chunk:
                break
            dropped += len(chunk)
    except OSError:
        pass

def _case(host: Host, c: Conn, req: dict[str, Any]) -> None:
    from bench.run.peer import _peer_main, peer_batch

    transport, scenario = req["transport"], req["scenario"]
    mode, size = req["mode"], req["size"]
    dgram = transport.startswith("udp")
    family = P.family_of(transport)
    local = unmapped(c.sock.getsockname())
    peer = unmapped(c.sock.getpeername())
    if P.literal_family(local[0]) != family:
        want = "IPv6" if family == socket.AF_INET6 else "IPv4"
        _refuse(host, c, f"{transport} needs the server's {want} address: "
                        f"this control connection arrived at {local[0]}")
        return
    what = f"{scenario}/{transport}/{mode}/{size}"
    if dgram:
        data = socket.socket(family, socket.SOCK_DGRAM)
        c.data = data
        data.bind(_with_port(local, 0))
        data.connect(_with_port(peer, req["udp_port"]))
        c.sock.sendall(P.encode({"ok": True, "port": data.getsockname()[1],
                                 "impl": fastsock.IMPLEMENTATION,
                                 "peer_batch": peer_batch(fastsock)}))
    else:
        accepted = _accept_data(host, c, local, peer)
        if accepted is None:
            return
        data = c.data = accepted
        if scenario == "pingpong":
            data.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock.sendall(P.encode({"ok": True, "ready": True}))
    data.settimeout(None)
    c.sock.settimeout(CASE_IDLE)
    c.watch = c.sock.dup()
    c.watch.settimeout(0)  # the fd is O_NONBLOCK already (timeout mode)
    c.heartbeat = dgram and scenario == "pingpong"
    c.case_start = t0 = time.monotonic()
    host.log(f"{c.name}: case {what} started")
    try:
        _peer_main(c.sock, data, scenario, dgram, mode, size, fastsock)
        ending = "ended"
    except (OSError, ValueError, RuntimeError, OverflowError) as exc:
        ending = f"ended: {type(exc).__name__}: {P._short(exc, 120)}"
    c.case_start = None
    host.log(f"{c.name}: case {what} {ending} after {time.monotonic() - t0:.1f} s")

def _accept_data(host: Host, c: Conn, local: tuple[Any, ...],
                 peer: tuple[Any, ...]) -> socket.socket | None:
    """The client's data connection (from the control connection's
    client address only), or None after refusing."""
    family = P.literal_family(local[0]) or socket.AF_INET
    lst = socket.socket(family, socket.SOCK_STREAM)
    c.data = lst  # so that abort() wakes accept()
    try:
        lst.bind(_with_port(local, 0))
        lst.listen(1)
        c.sock.sendall(P.encode({"ok": True, "port": lst.getsockname()[1],
                                 "impl": fastsock.IMPLEMENTATION}))
        deadline = time.monotonic() + ACCEPT_TIMEOUT
        while True:
            rest = deadline - time.monotonic()
            if rest <= 0:
                break
            lst.settimeout(rest)
            try:
                data, addr = lst.accept()
            except TimeoutError:
                continue
            except OSError:  # aborted (server stopping)
                return None
            if unmapped(addr)[0] == peer[0]:
                return data
            host.log(f"{c.name}: data connection from stranger "
                     f"{P.format_hostport(*unmapped(addr)[:2])} dropped")
            data.close()
    finally:
        with c.lock:
            c.data = None
            lst.close()
    _refuse(host, c, f"no data connection within {ACCEPT_TIMEOUT:g} s")
    return None


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = KEEPALIVE
    for opt, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                       ("TCP_KEEPCNT", count)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
