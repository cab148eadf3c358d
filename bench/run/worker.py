"""What runs inside a pyperf worker: one case's set-up and timed function.

Design note
-----------
pyperf calls ``time_func(loops)`` several times per worker process (warmups,
then values) and divides what it returns by ``loops``.  Set-up (sockets,
the forked peer) happens on the first call, before the clock starts, and
lives until the process exits; the timed region is only the loop plus, for
throughput, the peer's confirmation that it received everything:

* stream over TCP/Unix: order the peer to receive ``loops * size`` bytes,
  start the clock, ``stream_send``, wait for the peer's count, stop (at
  the local peer's stamp of its last byte: the confirmation's wake-up of
  this process is not delivery);
* stream over datagrams: the same, then end with empty datagrams (resent
  until the peer answers, since UDP may drop one) and return
  ``elapsed * loops / delivered``, so pyperf's value is seconds per
  *delivered* datagram, never the send rate; the case's ``batch`` goes to
  ``dgram_send`` (sendmmsg above 1), and the peer's own batch is recorded
  as ``peer_batch``;
* pingpong: ``*_pingpong`` with per-round-trip samples (both twins pay for
  sampling alike);
* connect: no peer and no pair: a listener (:class:`bench.run.transports.Listener`)
  made at set-up, and ``connect_accept(listener, loops)`` timed, which
  plays both ends of every connection, so pyperf's value is seconds per
  connection and ``cpu_per_msg`` CPU time per connection (both ends').

The event-loop impls (``asyncio-*``, ``uvloop-*``) run the same timed
region through a :class:`fastsock._asyncloops.AsyncConn`, which has the
twins' ``stream_send`` / ``stream_pingpong``: its event loop (and, for
``*-streams``, the reader and writer) is made in set-up, outside the timed
region, so a timed call runs one coroutine.  The loop's description goes
into the case's metadata (``event_loop``).  asyncio and uvloop are imported
only by such cases: a twin's worker starts as light as before.

What a run measures beside time (CPU time per message, loss, RTT
percentiles) is collected by :class:`StatsHook`, a pyperf hook whose
``teardown(metadata)`` adds run metadata; only the values phase counts
(pyperf makes a new hook per phase and the last teardown wins).

Every wait is bounded: the loops' own timeouts (``CASE_TIMEOUT``) and the
peer's answer; a failure ends the worker with one line naming the case.
A peer that dies or is stopped is noticed at once, not after a timeout:
during a timed call a SIGCHLD handler looks at the peer (``waitpid`` with
``WUNTRACED``) and raises :class:`PeerError`, which the loops let through
(they run signal handlers on EINTR).  An event loop would swallow an
exception raised inside one of its callbacks (and uvloop refuses a SIGCHLD
handler of its own), so for the event-loop impls, while the loop runs, the
handler looks (``waitpid`` is safe anywhere), keeps the error in
``peer_error`` and hands it to the loop (``call_soon_threadsafe``, which
wakes it), which ends the running call with ``AsyncConn.abort``.  A call
that ends first leaves the error kept: the stream's wait for the peer and
the next timed call raise it.  This matters for datagram ping-pong,
where a silent peer only costs ``LOSS_TIMEOUT`` per round and ``loops``
rounds would add up to minutes.
"""

from __future__ import annotations

import array
import atexit
import os
import signal
import socket
import sys
import time
from typing import Any, Callable

import fastsock

from bench.run.matrix import ASYNC_IMPLS
from bench.run.peer import Peer, PeerError, PeerLike, choose_cpus
from bench.analysis.report import CaseKey
from bench.run.transports import Listener, make_pair

# Opens a case's measured socket with its peer elsewhere (``run --remote``).
Opener = Callable[[CaseKey], "tuple[socket.socket, PeerLike]"]

# Bound on any single wait of the measured side (seconds): a dead or
# stalled peer becomes an error within this.
CASE_TIMEOUT = 5.0
# Bound on a datagram pingpong round before it counts as lost (seconds).
LOSS_TIMEOUT = 0.2
# Interval between two end-of-stream datagrams (seconds).
END_RESEND = 0.0005

# A lockstep worker's baton (``run --base-python``, bench.run.lockstep):
# "FD:SLOT" in its environment, FD a socket to the main process.
LOCKSTEP_ENV = "FASTSOCK_LOCKSTEP"
# Version of the turn protocol below; a base that speaks another one is
# interleaved worker by worker instead.
LOCKSTEP_PROTOCOL = 1
# Bound on a lockstep worker's wait for its turn (seconds): the other
# side's one value, or the main process gone.
BATON_TIMEOUT = 120.0

_ACTIVE: "StatsHook | None" = None
# The running case's set-up facts (peer_impl, socket options), added to
# every run's metadata by StatsHook; equal in all runs, pyperf shows them
# as the benchmark's metadata.
_CASE_META: dict[str, Any] = {}


class StatsHook:
    """pyperf hook: accumulates the extra measurements of one phase."""

    name = "fastsock"

    def __init__(self) -> None:
        global _ACTIVE
        _ACTIVE = self
        self.msgs = 0
        self.cpu = 0.0
        self.sent = 0
        self.delivered = 0
        self.rounds = 0
        self.lost = 0
        self.samples: list[array.array[int]] = []

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass

    def teardown(self, metadata: dict[str, Any]) -> None:
        metadata.update(_CASE_META)
        if _BATON is not None:  # pairs this run with the other side's of the slot
            metadata["lockstep_slot"] = _BATON.slot
        if self.msgs:
            metadata["cpu_per_msg"] = self.cpu / self.msgs
        if self.sent:
            metadata["sent"] = self.sent
            metadata["delivered"] = self.delivered
            metadata["loss"] = 1.0 - self.delivered / self.sent
        if self.rounds:  # datagram pingpong: loss recorded even when 0
            metadata["loss"] = self.lost / self.rounds
        if self.samples:
            # sorted() rather than numpy: the worker stays light to start
            allv = sorted(v for s in self.samples for v in s if v > 0)
            if allv:
                for key, q in zip(("rtt_p50", "rtt_p90", "rtt_p99", "rtt_p999"),
                                  (0.50, 0.90, 0.99, 0.999)):
                    metadata[key] = percentile(allv, q) / 1e9


def percentile(ordered: list[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class HookEntry:
    """What pyperf's ``Runner(hooks=...)`` wants: a name and a loader."""

    name = "fastsock"

    def load(self) -> type:
        return StatsHook


class CaseFailed(RuntimeError):
    pass


class Baton:
    """A lockstep worker's turn-taking with the main process.

    Every timed call (warmups and values) waits for its turn ("R", then
    "G"), hands it back when done ("D") and waits for the round's end
    ("K"), so that the base's and the candidate's workers of one slot
    alternate value by value and never run at the same time (see
    bench.run.lockstep.alternate)."""

    def __init__(self, spec: str) -> None:
        fd, _, slot = spec.partition(":")
        try:
            self.slot = int(slot)
            self.sock = socket.socket(fileno=int(fd))
        except (ValueError, OSError) as exc:
            raise CaseFailed(f"bad {LOCKSTEP_ENV}={spec!r}: {exc}") from None
        self.sock.settimeout(BATON_TIMEOUT)

    def _exchange(self, send: bytes, expect: bytes, doing: str) -> None:
        try:
            self.sock.sendall(send)
            got = self.sock.recv(1)
        except OSError as exc:
            raise CaseFailed(f"lockstep: {doing} ({exc})") from None
        if got != expect:
            raise CaseFailed("lockstep: the main process went away")

    def take(self) -> None:
        """Wait for this side's turn."""
        self._exchange(b"R", b"G", "no turn from the main process")

    def give(self) -> None:
        """Hand the turn back; return when the round is over (the other
        side's value timed too)."""
        self._exchange(b"D", b"K", "cannot hand the turn back")


_BATON: Baton | None = None
_BATON_READ = False  # the environment is read once, at the first timed call


def baton() -> Baton | None:
    """This worker's baton (None outside lockstep), made at the first timed
    call, before the case's set-up forks the peer (which closes its copy)."""
    global _BATON, _BATON_READ
    if not _BATON_READ:
        spec = os.environ.get(LOCKSTEP_ENV)
        _BATON = Baton(spec) if spec else None
        _BATON_READ = True
    return _BATON


class Case:
    """One case's sockets, peer and timed function, in a pyperf worker."""

    def __init__(self, key: CaseKey, opener: Opener | None = None) -> None:
        self.key = key
        # A peer elsewhere (``run --remote``: bench.remote.client.open_case
        # bound to the server's address), or None: a local pair and peer.
        self.opener = opener
        # Checked in setup(), not here: a worker builds a Case for every
        # case of the selection, and only its own task's may fail.
        self.loops: Any = fastsock.implementations().get(key.impl)
        self.on_event_loop = key.impl in ASYNC_IMPLS
        self.conn: Any = None  # the AsyncConn of an event-loop impl
        self.peer_error: PeerError | None = None  # seen by the SIGCHLD watch, not raised yet
        self.dgram = key.transport in ("udp4", "udp6", "unix-dgram")
        self.tcp = key.transport in ("tcp4", "tcp6")
        self.sock: socket.socket | None = None
        self.peer: PeerLike | None = None
        self.listener: Listener | None = None  # connect: the socket is its listener
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        key = self.key
        if self.loops is None and not self.on_event_loop:
            raise CaseFailed("the compiled extension is not built: cannot run cython cases")
        if self.opener is not None:
            self._setup_remote()
            return
        if key.scenario == "connect":
            self._setup_connect()
            return
        mine, theirs = make_pair(key.transport)
        try:
            if key.scenario == "pingpong" and key.transport in ("tcp4", "tcp6"):
                for s in (mine, theirs):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker_cpus, peer_cpu = choose_cpus()
            if worker_cpus:
                os.sched_setaffinity(0, worker_cpus)
            self.peer = Peer(theirs, key.scenario, self.dgram, key.mode, key.size, peer_cpu,
                             measured=mine,
                             workers_own=(_BATON.sock,) if _BATON is not None else ())
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.sock = mine
        atexit.register(self.close)
        self.meta = {
            "peer_impl": self.peer.impl,
            "sndbuf": mine.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            "rcvbuf": mine.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        }
        if key.transport in ("tcp4", "tcp6"):
            self.meta["tcp_nodelay"] = mine.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self._setup_event_loop()
        self._note_peer_batch()
        _CASE_META.update(self.meta)

    def _note_peer_batch(self) -> None:
        """A datagram stream's peer receives ``peer_batch`` datagrams per call."""
        if self.dgram and self.key.scenario == "stream":
            self.meta["peer_batch"] = getattr(self.peer, "batch", 1)

    def _setup_connect(self) -> None:
        """A listener only: the loop is both ends, there is no peer (the
        report has no peer_impl for these cases)."""
        worker_cpus, _ = choose_cpus()
        if worker_cpus:  # where the other scenarios' measured side runs
            os.sched_setaffinity(0, worker_cpus)
        self.listener = Listener(self.key.transport)
        self.sock = self.listener.sock
        atexit.register(self.close)

    def _setup_remote(self) -> None:
        """The peer is `fastsock-bench serve` on another host: no local
        pair, no fork, no CPU placement (the server places its own)."""
        assert self.opener is not None
        mine, peer = self.opener(self.key)
        self.sock, self.peer = mine, peer
        atexit.register(self.close)
        self.meta = {
            "peer_impl": peer.impl,
            "sndbuf": mine.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            "rcvbuf": mine.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        }
        if self.key.transport in ("tcp4", "tcp6"):
            self.meta["tcp_nodelay"] = mine.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self._setup_event_loop()
        self._note_peer_batch()
        _CASE_META.update(self.meta)

    def _setup_event_loop(self) -> None:
        """An event-loop impl: its loop and streams, made here, outside the
        timed region; ``self.loops`` becomes the connection."""
        if not self.on_event_loop:
            return
        from fastsock._asyncloops import AsyncConn

        event_loop, api = self.key.impl.split("-", 1)
        try:
            self.conn = AsyncConn(self.sock, event_loop, api, CASE_TIMEOUT)  # type: ignore[arg-type]
        except ImportError as exc:
            raise CaseFailed(str(exc)) from None
        self.loops = self.conn
        self.meta["event_loop"] = self.conn.event_loop

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()  # and its Unix path
            self.listener = self.sock = None
        if self.conn is not None:  # closes the socket too: the peer's EOF
            self.conn.close()
            self.conn = None
        if self.sock is not None:
            if self.dgram and self.key.scenario == "pingpong":
                try:  # an empty datagram ends the peer's echo at once; the
                    # quit order goes first, so the peer finds it right after
                    if self.peer is not None:
                        self.peer.order(b"Q", 0)
                    self.sock.setblocking(False)
                    self.sock.send(b"")
                except OSError:
                    pass
                # the peer echoes that marker: our end stays open until the
                # peer has quit (a closed Unix datagram end is ECONNREFUSED)
                if self.peer is not None:
                    self.peer.close()
                    self.peer = None
            self.sock.close()  # stream: an EOF, which ends the peer's echo
            self.sock = None
        if self.peer is not None:
            self.peer.close()
            self.peer = None

    # ------------------------------------------------------------ timing
    def time_func(self, loops: int) -> float:
        try:
            turn = baton()
            if self.sock is None:
                self.setup()
            self.check_peer()
            if turn is None:
                return self._watched(loops)
            turn.take()
            try:
                return self._watched(loops)
            finally:
                turn.give()
        # RuntimeError: PeerError, CaseFailed and an event loop's EventLoopError
        except (OSError, RuntimeError, ValueError) as exc:
            self.fail(exc)
            raise AssertionError("unreachable")

    def _watched(self, loops: int) -> float:
        # The SIGCHLD watch covers the timed call only: fail() and close()
        # end the peer themselves and must not be interrupted by its death.
        on_loop = self.conn is not None
        old = signal.signal(signal.SIGCHLD, self._on_sigchld_loop if on_loop else self._on_sigchld)
        try:
            if self.key.scenario == "pingpong":
                return self._pingpong(loops)
            if self.key.scenario == "connect":
                return self._connect(loops)
            if self.dgram:
                return self._dgram_stream(loops)
            return self._stream(loops)
        finally:
            signal.signal(signal.SIGCHLD, old)

    def _on_sigchld(self, signum: int, frame: Any) -> None:
        self.check_peer()

    def _on_sigchld_loop(self, signum: int, frame: Any) -> None:
        conn = self.conn
        if conn is None or conn.closed or not conn.loop.is_running():
            self.check_peer()  # between coroutines (the peer's answer): as the twins
            return
        try:  # never raise inside the loop's machinery: hand it over
            self.check_peer()
        except PeerError as exc:
            self.peer_error = exc
            conn.loop.call_soon_threadsafe(conn.abort, exc)

    def check_peer(self) -> None:
        """Raise PeerError when the peer has exited or been stopped."""
        if self.peer_error is not None:
            raise self.peer_error
        peer = self.peer
        if peer is None or peer.pid <= 0:
            return
        try:
            pid, status = os.waitpid(peer.pid, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:
            pid, status = peer.pid, 0
        if pid == 0:
            return
        if os.WIFSTOPPED(status):
            sig = os.WSTOPSIG(status)
            if sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
                return  # job control (Ctrl-Z stops the worker too; fg resumes both)
            raise PeerError(f"peer (pid {peer.pid}) was stopped by {signal.Signals(sig).name}")
        peer.pid = -1  # reaped: never signal that pid again
        if os.WIFSIGNALED(status):
            raise PeerError(f"peer died (killed by {signal.Signals(os.WTERMSIG(status)).name})")
        raise PeerError(f"peer exited (status {os.waitstatus_to_exitcode(status)})")

    def fail(self, exc: BaseException) -> None:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.errno and exc.strerror:
            text = f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}"
        print(f"fastsock-bench: case {self.key.name} failed: {text}", file=sys.stderr)
        sys.stderr.flush()
        if self.peer is not None and self.peer.pid > 0:
            try:  # no grace for a failed case's peer (it may be stopped)
                os.kill(self.peer.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.close()
        os._exit(3)

    def _record_cpu(self, cpu: float, msgs: int) -> None:
        if _ACTIVE is not None:
            _ACTIVE.cpu += cpu
            _ACTIVE.msgs += msgs

    def _stream(self, loops: int) -> float:
        size, sock, peer = self.key.size, self.sock, self.peer
        assert sock is not None and peer is not None
        peer.order(b"R", loops * size)
        c0 = time.process_time()
        t0 = time.perf_counter()
        self.loops.stream_send(sock, loops, size, self.key.mode, CASE_TIMEOUT)
        if self.peer_error is not None:  # seen while an event loop ran the send
            raise self.peer_error
        if self.tcp:
            # Push out a tail that Nagle holds until the peer's (delayed,
            # up to 40 ms) ACK: the loop is done, the stall is not its cost.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A local peer stamps its last byte's arrival (bench.run.peer.SHARED_CLOCK):
        # delivery ends there, not when its answer wakes this process up.
        t_last = peer.answer(CASE_TIMEOUT, expect=b"T") / 1e9 if getattr(
            peer, "stamps", False) else None
        got = peer.answer(CASE_TIMEOUT)
        t1 = time.perf_counter()
        if t_last is not None and t0 < t_last <= t1:
            t1 = t_last
        self._record_cpu(time.process_time() - c0, loops)
        if self.tcp:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        if got != loops * size:
            raise PeerError(f"peer received {got} of {loops * size} bytes")
        return t1 - t0

    def _dgram_stream(self, loops: int) -> float:
        size, sock, peer = self.key.size, self.sock, self.peer
        assert sock is not None and peer is not None
        peer.order(b"G", loops)
        peer.answer(CASE_TIMEOUT, expect=b"A")
        c0 = time.process_time()
        t0 = time.perf_counter()
        self.loops.dgram_send(sock, loops, size, self.key.mode, CASE_TIMEOUT,
                              batch=self.key.batch)
        # End markers until the peer answers: one may be dropped like data.
        deadline = time.perf_counter() + CASE_TIMEOUT
        while not peer.ready():
            if time.perf_counter() > deadline:  # one bound for the whole wait
                raise PeerError(f"peer did not answer within {CASE_TIMEOUT:g} s (stalled?)")
            try:
                sock.send(b"")
            except BlockingIOError:
                pass
            peer.wait_ready(END_RESEND)
        delivered = peer.answer(CASE_TIMEOUT)
        t1 = time.perf_counter()
        self._record_cpu(time.process_time() - c0, loops)
        if _ACTIVE is not None:
            _ACTIVE.sent += loops
            _ACTIVE.delivered += delivered
        if delivered == 0:
            raise PeerError(f"none of {loops} datagrams arrived")
        return (t1 - t0) * loops / delivered

    def _pingpong(self, loops: int) -> float:
        size, sock = self.key.size, self.sock
        assert sock is not None
        samples = array.array("q", bytes(8 * loops))
        c0 = time.process_time()
        if self.dgram:
            t0 = time.perf_counter()
            done, lost = self.loops.dgram_pingpong(
                sock, loops, size, self.key.mode, LOSS_TIMEOUT, samples=samples
            )
            t1 = time.perf_counter()
            if done == 0:
                raise PeerError(f"all {loops} round trips lost")
        else:
            t0 = time.perf_counter()
            done = self.loops.stream_pingpong(
                sock, loops, size, self.key.mode, CASE_TIMEOUT, samples=samples
            )
            t1 = time.perf_counter()
            lost = 0
        self._record_cpu(time.process_time() - c0, loops)
        if _ACTIVE is not None:
            if self.dgram:  # only datagram rounds can be lost
                _ACTIVE.rounds += loops
                _ACTIVE.lost += lost
            _ACTIVE.samples.append(samples[:done])
        return t1 - t0

    def _connect(self, loops: int) -> float:
        sock = self.sock
        assert sock is not None
        c0 = time.process_time()
        t0 = time.perf_counter()
        self.loops.connect_accept(sock, loops, self.key.mode, CASE_TIMEOUT)
        t1 = time.perf_counter()
        self._record_cpu(time.process_time() - c0, loops)
        return t1 - t0
