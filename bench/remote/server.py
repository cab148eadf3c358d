"""``fastsock-bench serve``: the peer of ``run --remote``, on another host.

Design note
-----------
What ``iperf3 -s`` is to iperf3: a long-running process that is the other
end of each case a remote ``run`` measures.  The plan:

* one TCP control port (default ``127.0.0.1:7317``: loopback unless
  ``--listen`` says otherwise); one control connection per case, speaking
  :mod:`bench.remote.protocol` (bounded JSON lines, then the local peer's frames);
* one thread per connection (:mod:`bench.remote.session`), at most ``--max-clients`` (others get a
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
import selectors
import socket
import sys
import threading
import time
from typing import Any

from bench.remote import protocol as P
from bench.remote.session import Conn, serve_conn, unmapped
from bench.run.peer import FRAME

# Defaults of the server's limits (overridable on the command line).
DEFAULT_MAX_CLIENTS = 4
DEFAULT_MAX_SIZE = 4 * 1024 * 1024  # bytes
# Hard ceilings of those options.
MAX_CLIENTS_CEILING = 256
# A case's whole life at most (s): a pyperf worker lasts seconds.
MAX_CASE = 600.0
# Interval of the ``H`` frames sent during a datagram pingpong case (s):
# there the client waits only on datagrams, and a stopped or unreachable
# server would cost it LOSS_TIMEOUT per round; the frames let it tell.
HEARTBEAT = 0.5
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

    # ------------------------------------------------------------ its sessions
    def clients(self) -> int:
        with self.lock:
            return len(self.conns)

    def forget(self, c: Conn) -> None:
        with self.lock:
            self.conns.discard(c)

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
        c.thread = threading.Thread(target=serve_conn, args=(self, c),
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
