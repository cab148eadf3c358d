"""``fastsock-bench serve``: the peer of ``run --remote``, on another host.

Design note
-----------
What ``iperf3 -s`` is to iperf3: a long-running process that is the other
end of each case a remote ``run`` measures.  The plan:

* one TCP control port (default ``127.0.0.1:7317``: loopback unless
  ``--listen`` says otherwise); one control connection per case, speaking
  :mod:`bench.remote.protocol` (bounded JSON lines, then the local peer's frames);
* one thread per connection, at most ``--max-clients`` (others get a
  ``busy`` answer at once); the cases run fastsock's loops, compiled where
  they are built (they release the GIL), through the very function the local
  forked peer runs (``bench.run.peer._peer_main``), so a remote case differs
  from a local one only by the network;
* the data socket is opened per case: TCP listens on an ephemeral port of
  the control connection's local address and accepts one connection from
  the control connection's client address; UDP binds there and connects to
  the client's stated port at that address (so it only hears, and echoes
  to, that client).

Bounds (a client cannot make this allocate or wait without limit): request
lines of ``MAX_REQUEST`` bytes within ``--read-timeout``; sizes validated
against ``--max-size`` (and the UDP maximum) before any buffer exists, so
memory is about ``max_clients * max(size, 256 KiB)``; the data connection
within ``ACCEPT_TIMEOUT``; ``CASE_IDLE`` between two orders; TCP keepalive
on the control connection (a vanished host is noticed in ~25 s); a case
lives at most ``MAX_CASE`` seconds.  The accept loop also watches running
cases: a closed control connection ends its case at once, and datagram
pingpong cases get a heartbeat frame (``H``) every ``HEARTBEAT`` seconds, so
that the client can tell a stopped server from lost datagrams.  A refused request gets one
``{"ok": false, "error": ...}`` line and a close; the server goes on.

Limits: no encryption (the token authenticates the request, see
:mod:`bench.remote.protocol`); one address family per control connection;
behind NAT the UDP cases fail (the client's address must be reachable).
"""

from __future__ import annotations

import os
import platform
import secrets
import selectors
import socket
import sys
import threading
import time
from typing import Any

import fastsock

from bench.remote import protocol as P
from bench.run.peer import FRAME

# Defaults of the server's limits (overridable on the command line).
DEFAULT_MAX_CLIENTS = 4
DEFAULT_MAX_SIZE = 4 * 1024 * 1024  # bytes
# Hard ceilings of those options.
MAX_CLIENTS_CEILING = 256
# Bound on the client's data connection after the server names the port (s).
ACCEPT_TIMEOUT = 5.0
# Bound on the wait for the next order of a stream case (s).
CASE_IDLE = 60.0
# A case's whole life at most (s): a pyperf worker lasts seconds.
MAX_CASE = 600.0
# Keepalive on control connections: idle (s), interval (s), probes.
KEEPALIVE = (10, 5, 3)
# Interval of the ``H`` frames sent during a datagram pingpong case (s):
# there the client waits only on datagrams, and a stopped or unreachable
# server would cost it LOSS_TIMEOUT per round; the frames let it tell.
HEARTBEAT = 0.5
# After an error answer: read and drop what the client still sends, for up
# to this long (s) / this much (bytes), so that closing does not reset the
# connection before the client has read the answer.
LINGER = 0.5
LINGER_BYTES = 256 * 1024
# How often the accept loop looks at stop requests and case ages (s).
TICK = 0.25
# Bound on joining the connection threads when stopping (s).
STOP_GRACE = 2.0
# Listen backlog (connections).
BACKLOG = 16


class ServeError(Exception):
    """Cannot start serving; ``str()`` is one line."""


def fingerprint() -> dict[str, Any]:
    """This host's environment, as the client stores it (``remote_*``)."""
    from bench.run import fingerprint as _fingerprint
    fp: dict[str, Any] = _fingerprint.collect()
    try:  # pyperf's collector gives the keys the local side has; private API
        from pyperf._collect_metadata import collect_metadata

        meta = collect_metadata()
    except Exception:
        meta = {}
    for key in ("cpu_model_name", "cpu_count", "cpu_freq", "cpu_config", "platform",
                "hostname", "python_version", "python_implementation", "boot_time"):
        if key in meta:
            fp[key] = meta[key]
    fp.setdefault("cpu_count", os.cpu_count() or 1)
    fp.setdefault("platform", platform.platform())
    fp.setdefault("hostname", socket.gethostname())
    fp.setdefault("python_version", platform.python_version())
    if "cpu_model_name" not in fp:
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        fp["cpu_model_name"] = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    return fp


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


class Server:
    def __init__(self, listener: socket.socket, token: str | None, max_clients: int,
                 max_size: int, read_timeout: float, quiet: bool = False) -> None:
        self.listener = listener
        self.token = token or None
        self.max_clients = max_clients
        self.max_size = max_size
        self.read_timeout = read_timeout
        self.quiet = quiet
        self.fingerprint = fingerprint()
        self.conns: set[Conn] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    # ------------------------------------------------------------ logging
    def log(self, text: str) -> None:
        if self.quiet:
            return
        stamp = time.strftime("%H:%M:%S")
        with self.lock:
            print(f"{stamp} {text}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ accepting
    def serve(self) -> None:
        """Accept until ``self.stop`` is set; then end every connection."""
        sel = selectors.DefaultSelector()
        self.listener.setblocking(False)
        sel.register(self.listener, selectors.EVENT_READ)
        try:
            while not self.stop.is_set():
                if sel.select(TICK):
                    self._accept()
                self._watchdog()
        finally:
            sel.close()
            self.listener.close()
            with self.lock:
                conns = list(self.conns)
            for c in conns:
                c.abort()
            deadline = time.monotonic() + STOP_GRACE
            for c in conns:
                if c.thread is not None:
                    c.thread.join(max(0.0, deadline - time.monotonic()))

    def _accept(self) -> None:
        try:
            sock, addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EMFILE and the like: say so, keep serving
            self.log(f"accept failed: {exc}")
            time.sleep(TICK)
            return
        c = Conn(sock, addr)
        with self.lock:
            busy = len(self.conns) >= self.max_clients
            if not busy:
                self.conns.add(c)
        if busy:
            self.log(f"{c.name}: refused: busy ({self.max_clients} clients)")
            try:  # never block the accept loop on a client
                sock.setblocking(False)
                sock.send(P.encode({"ok": False, "error": (
                    f"busy: this server serves {self.max_clients} clients at once; "
                    "try again when one has finished")}))
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            sock.close()
            return
        c.thread = threading.Thread(target=self._serve_conn, args=(c,),
                                    name=f"fastsock-{c.name}", daemon=True)
        c.thread.start()

    def _watchdog(self) -> None:
        """End cases that ran too long or whose client is gone.  A case
        waiting on its data socket (a datagram sink, say) would notice a
        closed control connection only at its own timeout."""
        now = time.monotonic()
        with self.lock:
            running = [c for c in self.conns if c.case_start is not None]
        for c in running:
            why = self._check(c, now)
            if why is None or c.case_start is None:
                continue
            self.log(f"{c.name}: case aborted: {why}")
            c.case_start = None
            c.abort()

    def _check(self, c: Conn, now: float) -> str | None:
        """Beat (datagram pingpong); why the case must end, or None."""
        with c.lock:  # non-blocking calls only: never held long
            start, watch = c.case_start, c.watch
            if c.closed or start is None or watch is None:
                return None
            if c.heartbeat and now - c.last_beat >= HEARTBEAT:
                c.last_beat = now
                try:
                    watch.send(FRAME.pack(b"H", 0))
                except OSError:
                    pass  # a full buffer or a gone client: the peek below says
            if now - start > MAX_CASE:
                return f"longer than {MAX_CASE:g} s"
            try:
                if watch.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    return None  # an order waiting: alive
                return "the client closed the control connection"
            except BlockingIOError:
                return None
            except OSError as exc:
                return f"control connection: {exc.strerror or exc}"

    # ------------------------------------------------------------ one client
    def _serve_conn(self, c: Conn) -> None:
        try:
            self._handle(c)
        except Exception as exc:  # a client never takes the server down
            self.log(f"{c.name}: {type(exc).__name__}: {P._short(exc, 200)}")
        finally:
            c.case_start = None
            with self.lock:  # before closing: the client's next case may
                self.conns.discard(c)  # connect as soon as it sees the close
            c.close()

    def _handle(self, c: Conn) -> None:
        sock = c.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _keepalive(sock)
        nonce = secrets.token_hex(P.NONCE_BYTES)
        sock.settimeout(self.read_timeout)
        sock.sendall(P.encode({"fastsock": P.PROTOCOL, "ok": True, "nonce": nonce,
                               "auth": self.token is not None}))
        reader = P.LineReader(sock)
        try:
            req = reader.read_json(P.MAX_REQUEST, self.read_timeout, "request")
            if self.token is not None and not P.auth_ok(self.token, nonce, req.get("auth")):
                raise P.ProtocolError(
                    "unauthorised: this server needs a token (run --token or FASTSOCK_TOKEN)"
                    if "auth" not in req else "unauthorised: wrong token")
            P.check_request(req, self.max_size)
            if reader.buf:
                raise P.ProtocolError("unexpected data after the request")
        except P.ProtocolError as exc:
            self._refuse(c, str(exc))
            return
        if req["op"] == "hello":
            fp = dict(self.fingerprint)
            try:
                fp["load_avg_1min"] = round(os.getloadavg()[0], 2)
            except OSError:
                pass
            with self.lock:
                clients = len(self.conns)
            sock.sendall(P.encode({
                "ok": True, "fastsock": P.PROTOCOL, "impl": fastsock.IMPLEMENTATION,
                "fingerprint": fp, "clients": clients,
                "limits": {"max_size": self.max_size, "max_clients": self.max_clients,
                           "max_request": P.MAX_REQUEST, "read_timeout": self.read_timeout},
            }))
            return
        self._case(c, req)

    def _refuse(self, c: Conn, message: str) -> None:
        self.log(f"{c.name}: refused: {message}")
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

    def _case(self, c: Conn, req: dict[str, Any]) -> None:
        from bench.run.peer import _peer_main, peer_batch

        transport, scenario = req["transport"], req["scenario"]
        mode, size = req["mode"], req["size"]
        dgram = transport.startswith("udp")
        family = P.family_of(transport)
        local = unmapped(c.sock.getsockname())
        peer = unmapped(c.sock.getpeername())
        if P.literal_family(local[0]) != family:
            want = "IPv6" if family == socket.AF_INET6 else "IPv4"
            self._refuse(c, f"{transport} needs the server's {want} address: "
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
            accepted = self._accept_data(c, local, peer)
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
        self.log(f"{c.name}: case {what} started")
        try:
            _peer_main(c.sock, data, scenario, dgram, mode, size, fastsock)
            ending = "ended"
        except (OSError, ValueError, RuntimeError, OverflowError) as exc:
            ending = f"ended: {type(exc).__name__}: {P._short(exc, 120)}"
        c.case_start = None
        self.log(f"{c.name}: case {what} {ending} after {time.monotonic() - t0:.1f} s")

    def _accept_data(self, c: Conn, local: tuple[Any, ...],
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
                self.log(f"{c.name}: data connection from stranger "
                         f"{P.format_hostport(*unmapped(addr)[:2])} dropped")
                data.close()
        finally:
            with c.lock:
                c.data = None
                lst.close()
        self._refuse(c, f"no data connection within {ACCEPT_TIMEOUT:g} s")
        return None


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = KEEPALIVE
    for opt, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                       ("TCP_KEEPCNT", count)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


def listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {P.format_hostport(host, port)}: "
                         f"[Errno {exc.errno}] {exc.strerror}") from None
    return sock


def is_loopback(sock: socket.socket) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(unmapped(sock.getsockname())[0].split("%")[0]).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------ CLI
