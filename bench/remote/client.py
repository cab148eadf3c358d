"""The client side of ``serve``: a remote peer for ``run --remote``.

Design note
-----------
A case measured against ``fastsock-bench serve`` differs from a local one
only in where its peer is.  :func:`open_case` returns what
``bench.run.transports.make_pair`` and ``bench.run.peer.Peer`` give a local case,
the measured side's connected socket and a peer object, so the worker's
timed functions run unchanged: :class:`RemotePeer` has ``Peer``'s interface
(``order``, ``answer``, ``ready``, ``wait_ready``, ``close``, ``impl``,
``cpu``) over the TCP control connection, which after the handshake carries
the same 9-byte frames as the local control socket.

The run's main process calls :func:`prepare` once: it finds the server
(trying each address of HOST in turn), keeps the address that answered,
numeric, for the workers (so they neither resolve names nor pick another
address family), and gets the server's fingerprint and limits.  The
address family decides the transports: an IPv4 server runs tcp4 and udp4,
an IPv6 one tcp6 and udp6; Unix transports never cross hosts.

The token travels to workers in the environment (``FASTSOCK_TOKEN``,
inherited through pyperf), never on their command lines; on the wire only
an HMAC of the server's nonce is sent (see :mod:`bench.remote.protocol`).

Every wait is bounded: connecting and each handshake line by
``SETUP_TIMEOUT``; answers by the caller's timeout, as for a local peer.
One wait is not: a datagram pingpong waits only on datagrams, and a server
that stopped (or a link that broke) costs a lost round, ``LOSS_TIMEOUT``,
per round.  There the server sends a heartbeat frame every 0.5 s, and
:meth:`RemotePeer.watch` checks for it (``SIGALRM`` every
``HEARTBEAT_CHECK``): silence for ``HEARTBEAT_LOSS``, or a closed control
connection, raises :class:`RemoteError` from inside the loop (the loops run
signal handlers on EINTR), as the local peer's SIGCHLD watch does.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import bench
import fastsock
from bench.analysis.report import CaseKey
from bench.remote import protocol as P
from bench.run.peer import EXIT_GRACE, FRAME, PeerError, recv_frame

# Bound on connecting and on each handshake line (seconds).
SETUP_TIMEOUT = 5.0
TOKEN_ENV = "FASTSOCK_TOKEN"
# How often a watched case looks for the server's heartbeat (s), and how
# long without one ends it (s); the server beats every 0.5 s.
HEARTBEAT_CHECK = 0.5
HEARTBEAT_LOSS = 3.0
# Where a watch may raise: the measured code (the worker's Case, the
# loops), not pyperf's bookkeeping between two values.
_MEASURED = tuple(os.path.dirname(os.path.abspath(str(m.__file__))) + os.sep
                  for m in (bench, fastsock))


class RemoteError(PeerError):
    """The server cannot be used as asked; ``str()`` is one line."""


def env_token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


@dataclass
class Info:
    """What ``hello`` tells about a server."""

    address: str  # numeric HOST:PORT that answered
    family: int
    impl: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)


def _numeric(addr: tuple[Any, ...]) -> str:
    host = addr[0]
    if len(addr) >= 4 and addr[3]:
        host = f"{host}%{addr[3]}"  # a link-local address needs its scope
    return P.format_hostport(host, addr[1])


def _connect(remote: str, family: int = socket.AF_UNSPEC
             ) -> tuple[socket.socket, P.LineReader, dict[str, Any], str]:
    """Connect to the server and read its greeting: (sock, reader, greeting,
    the numeric address that answered)."""
    try:
        host, port = P.parse_hostport(remote)
    except ValueError as exc:
        raise RemoteError(f"--remote: {exc}") from None
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        names: dict[int, str] = {socket.AF_INET: " as IPv4", socket.AF_INET6: " as IPv6"}
        which = names.get(family, "")
        raise RemoteError(f"cannot resolve {host!r}{which}: {exc.strerror}") from None
    errors = []
    for fam, kind, proto, _, addr in infos:
        sock = socket.socket(fam, kind, proto)
        where = _numeric(addr)
        try:
            sock.settimeout(SETUP_TIMEOUT)
            sock.connect(addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = P.LineReader(sock)
            greeting = reader.read_json(P.MAX_ANSWER, SETUP_TIMEOUT, "greeting")
        except (OSError, P.ProtocolError) as exc:
            sock.close()
            errors.append(f"{where}: {_oserror(exc)}")
            continue
        if not greeting.get("ok", False):
            sock.close()
            raise RemoteError(f"fastsock server at {where}: {_said(greeting)}")
        if greeting.get("fastsock") != P.PROTOCOL:
            sock.close()
            raise RemoteError(f"{where} speaks protocol {P._short(greeting.get('fastsock'), 20)},"
                              f" this client {P.PROTOCOL}: use the same fastsock on both ends")
        return sock, reader, greeting, where
    raise RemoteError(f"cannot reach a fastsock server at {remote} ({'; '.join(errors)});"
                      " is `fastsock-bench serve` running there?")


def _oserror(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {SETUP_TIMEOUT:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _said(answer: dict[str, Any]) -> str:
    return P._short(answer.get("error", "refused without a reason"), 300)


def _request(sock: socket.socket, reader: P.LineReader, greeting: dict[str, Any],
             req: dict[str, Any], where: str, token: str | None) -> dict[str, Any]:
    if greeting.get("auth"):
        if not token:
            raise RemoteError(f"fastsock server at {where} needs a token: "
                              f"set {TOKEN_ENV} (or run --token)")
        nonce = greeting.get("nonce")
        if not isinstance(nonce, str) or not nonce.isascii():
            raise RemoteError(f"fastsock server at {where}: greeting without a nonce")
        req = dict(req, auth=P.auth_digest(token, nonce))
    try:
        sock.settimeout(SETUP_TIMEOUT)
        sock.sendall(P.encode(req))
        answer = reader.read_json(P.MAX_ANSWER, SETUP_TIMEOUT, "answer")
    except (OSError, P.ProtocolError) as exc:
        raise RemoteError(f"fastsock server at {where}: {_oserror(exc)}") from None
    if not answer.get("ok", False):
        raise RemoteError(f"fastsock server at {where}: {_said(answer)}")
    return answer


def hello(remote: str, token: str | None = None, family: int = socket.AF_UNSPEC) -> Info:
    """Ask the server for its fingerprint and limits."""
    sock, reader, greeting, where = _connect(remote, family)
    with sock:
        answer = _request(sock, reader, greeting, {"fastsock": P.PROTOCOL, "op": "hello"},
                          where, token if token is not None else env_token())
        fam = sock.family
    limits, fp, impl = answer.get("limits"), answer.get("fingerprint"), answer.get("impl")
    return Info(where, fam, impl if isinstance(impl, str) else "unknown",
                fp if isinstance(fp, dict) else {}, limits if isinstance(limits, dict) else {})


# ------------------------------------------------------------ the peer


class RemotePeer:
    """``bench.run.peer.Peer``'s interface over a server's control connection."""

    def __init__(self, ctl: socket.socket, where: str, impl: str, batch: int = 1) -> None:
        self.ctl = ctl
        self.where = where
        self.impl = impl
        self.batch = batch  # the server's datagrams per receive call (UDP stream)
        self.cpu: int | None = None  # the server places its own threads
        self.pid = -1  # no local process: nothing to wait for or signal
        self.facts: dict[str, Any] = {}  # the server's end: not known here
        self._quit = False
        self._watching = False
        self._old_alarm: Any = None
        self._last_beat = 0.0

    def order(self, cmd: bytes, arg: int) -> None:
        # OSError passes through, as from Peer.order (callers expect it)
        if cmd == b"Q":  # the end: no heartbeat check from here on
            self.unwatch()
            self._quit = True
        self.ctl.sendall(FRAME.pack(cmd, arg))

    def answer(self, timeout: float, expect: bytes = b"D") -> int:
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.ctl.settimeout(max(1e-3, deadline - time.monotonic()))
                cmd, arg = recv_frame(self.ctl)
                if cmd != b"H":  # heartbeats only say the server is alive
                    break
        except TimeoutError:
            raise RemoteError(f"fastsock server at {self.where} did not answer within "
                              f"{timeout:g} s (stalled?)") from None
        except PeerError:
            raise RemoteError(f"fastsock server at {self.where} closed the control "
                              "connection (see its log)") from None
        except OSError as exc:
            raise RemoteError(f"fastsock server at {self.where}: {_oserror(exc)}") from None
        if cmd != expect:
            raise RemoteError(f"fastsock server at {self.where} answered {cmd!r}, "
                              f"expected {expect!r}")
        return arg

    def ready(self) -> bool:
        return self.wait_ready(0)

    def wait_ready(self, timeout: float) -> bool:
        r, _, _ = select.select([self.ctl], [], [], timeout)
        return bool(r)

    def watch(self) -> None:
        """Check the server's heartbeat until :meth:`close` (main thread
        only: signal handlers live there)."""
        if self._watching or threading.current_thread() is not threading.main_thread():
            return
        self._last_beat = time.monotonic()
        self._old_alarm = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, HEARTBEAT_CHECK, HEARTBEAT_CHECK)
        self._watching = True

    def unwatch(self) -> None:
        if self._watching:
            self._watching = False
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, self._old_alarm)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        gone = ""
        # the control connection is blocking with no timeout here, so a
        # MSG_DONTWAIT recv never waits (CPython polls first only with one)
        while select.select([self.ctl], [], [], 0)[0]:
            try:
                chunk = self.ctl.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                gone = f": {_oserror(exc)}"
                break
            if not chunk:
                gone = " closed the control connection"
                break
            self._last_beat = time.monotonic()
        silent = time.monotonic() - self._last_beat
        if not gone and silent <= HEARTBEAT_LOSS:
            return
        code = os.path.abspath(frame.f_code.co_filename) if frame is not None else ""
        if not code.startswith(_MEASURED):
            return  # between two values: the next check, inside the loop, raises
        self.unwatch()
        raise RemoteError(f"fastsock server at {self.where}" + (
            gone or f" sent no heartbeat for {silent:.1f} s (stopped, or the link is down?)"))

    def close(self) -> None:
        """Say ``Q``, then wait (bounded) for the server to end the case, as
        ``Peer.close`` waits for the local peer to exit."""
        self.unwatch()
        if self.ctl.fileno() < 0:
            return
        try:
            self.ctl.setblocking(False)
            if not self._quit:
                self.ctl.send(FRAME.pack(b"Q", 0))
            self.ctl.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + EXIT_GRACE
            while True:
                rest = deadline - time.monotonic()
                if rest <= 0:
                    break
                self.ctl.settimeout(rest)
                if not self.ctl.recv(4096):
                    break
        except OSError:
            pass
        self.ctl.close()


def open_case(remote: str, key: CaseKey, token: str | None = None, watch: bool = True
              ) -> tuple[socket.socket, RemotePeer]:
    """(measured end, peer) for ``key`` against the server at ``remote``: the
    socket connected, blocking, no timeout, as ``make_pair`` gives it.  With
    ``watch``, a datagram pingpong's peer checks the server's heartbeat."""
    if key.transport not in P.TRANSPORTS:
        raise RemoteError(f"{key.transport} cases cannot run against a remote server")
    token = token if token is not None else env_token()
    family = P.family_of(key.transport)
    dgram = key.transport.startswith("udp")
    ctl, reader, greeting, where = _connect(remote, family)
    data = socket.socket(family, socket.SOCK_DGRAM if dgram else socket.SOCK_STREAM)
    try:
        local, server = ctl.getsockname(), ctl.getpeername()
        # the data socket leaves from the control connection's address: the
        # server accepts (TCP) or talks to (UDP) only that address
        data.bind((local[0], 0) + tuple(local[2:]))
        req: dict[str, Any] = {"fastsock": P.PROTOCOL, "op": "case", "scenario": key.scenario,
                               "transport": key.transport, "mode": key.mode, "size": key.size}
        if dgram:
            req["udp_port"] = data.getsockname()[1]
        answer = _request(ctl, reader, greeting, req, where, token)
        port = answer.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise RemoteError(f"fastsock server at {where} answered no valid data port")
        if not dgram and (key.scenario == "pingpong" or key.nodelay):
            # as bench.run.ends.set_nodelay: a TCP ping-pong's ends; the
            # sender of a stream with --nodelay on
            data.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data.settimeout(SETUP_TIMEOUT)
        try:
            data.connect((server[0], port) + tuple(server[2:]))
        except OSError as exc:
            raise RemoteError(f"fastsock server at {where}: data connection to port {port}: "
                              f"{_oserror(exc)}") from None
        if not dgram:
            try:
                ready = reader.read_json(P.MAX_ANSWER, SETUP_TIMEOUT, "answer")
            except (OSError, P.ProtocolError) as exc:
                raise RemoteError(f"fastsock server at {where}: {_oserror(exc)}") from None
            if not ready.get("ok", False) or ready.get("ready") is not True:
                raise RemoteError(f"fastsock server at {where}: {_said(ready)}")
        beats = dgram and key.scenario == "pingpong"  # may follow the answer at once
        if reader.buf and not beats:
            raise RemoteError(f"fastsock server at {where}: unexpected data after the handshake")
        data.settimeout(None)
        ctl.settimeout(None)
        impl, batch = answer.get("impl"), answer.get("peer_batch", 1)  # older servers: 1
        peer = RemotePeer(ctl, where, impl if isinstance(impl, str) else "unknown",
                          batch if isinstance(batch, int) and not isinstance(batch, bool) else 1)
        if watch and beats:
            peer.watch()
        return data, peer
    except BaseException:
        data.close()
        ctl.close()
        raise


# ------------------------------------------------------------ run's glue


def transports(remote: str, requested: str | None) -> list[str]:
    """The transports a run against ``remote`` can use: those of its address
    family.  Asking for another one is a MatrixError naming why."""
    from bench.run import matrix as M
    try:
        host, _ = P.parse_hostport(remote)
    except ValueError as exc:
        raise M.MatrixError(f"--remote: {exc}") from None
    family = P.literal_family(host)
    families = {family} if family else set()
    if not families:
        try:
            families = {i[0] for i in socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)}
        except socket.gaierror as exc:
            raise M.MatrixError(f"--remote: cannot resolve {host!r}: {exc.strerror}") from None
    out = [t for t in P.TRANSPORTS if P.family_of(t) in families]
    if requested:
        for t in M.parse_list(requested, M.TRANSPORTS, "transport"):
            if t in out:
                continue
            if t not in P.TRANSPORTS:
                raise M.MatrixError(f"{t} cases run on one host only: not with --remote")
            v = "IPv6" if P.family_of(t) == socket.AF_INET6 else "IPv4"
            raise M.MatrixError(f"{t} needs an {v} server address; --remote {remote} is not one")
    return out


def prepare(remote: str, token: str | None) -> Info:
    """In the run's main process: find the server and ask for its hello.
    Raises RemoteError (one line) when it cannot be used."""
    return hello(remote, token)


def check_plan(info: Info, cases: Iterable[CaseKey], requested: str | None) -> dict[str, Any]:
    """Check the cases against the server's limits, say (once) what is
    skipped, and return the ``remote_*`` metadata for the report."""
    from bench.run import matrix as M
    cases = list(cases)
    max_size = info.limits.get("max_size")
    if isinstance(max_size, int):
        for key in cases:
            if key.size > max_size:
                raise RemoteError(f"size {key.size} exceeds the limit of the server at "
                                  f"{info.address} ({max_size} bytes; serve --max-size)")
    usable = transports(info.address, None)
    if not requested:
        skipped = [t for t in M.TRANSPORTS if t not in usable]
        local = [t for t in skipped if t not in P.TRANSPORTS]
        other = [t for t in skipped if t in P.TRANSPORTS]
        parts = []
        if local:
            parts.append(f"{', '.join(local)} (one host only)")
        if other:
            v = "IPv6" if info.family == socket.AF_INET6 else "IPv4"
            parts.append(f"{', '.join(other)} (the server's address is {v})")
        if parts:
            print(f"fastsock-bench: --remote {info.address}: skipping {' and '.join(parts)}",
                  file=sys.stderr, flush=True)
    fp = info.fingerprint
    print(f"fastsock-bench: peer: fastsock-bench serve at {info.address} "
          f"(host {fp.get('hostname', '?')}, {fp.get('cpu_model_name', '?')}, "
          f"{fp.get('cpu_count', '?')} CPUs, {info.impl} loops)", file=sys.stderr, flush=True)
    meta = P.clean_metadata(fp, "remote_")
    meta["remote_address"] = info.address
    meta["remote_protocol"] = P.PROTOCOL
    return meta
