"""The peer: the other end of a case, in its own process.

Design note
-----------
The measured side (a pyperf worker) makes both sockets, then forks the peer
and keeps one end.  Forking instead of starting a new interpreter keeps the
peer's start in milliseconds, outside the timed region, and needs no
address agreement.  The peer:

* runs the compiled loops where they are built (else the twins; recorded
  as ``peer_impl``), in the same mode as the measured side;
* receives a datagram stream with ``recvmmsg``, up to :data:`PEER_BATCH`
  datagrams per call, wherever the compiled loops are loaded (Linux),
  whatever the sender's batch (recorded as ``peer_batch``), so that its
  per-call cost is not what limits a (batched) compiled sender: a peer
  that falls behind catches up a whole queue per call.  What UDP still
  loses is mostly time the peer is off its CPU: a loopback UDP socket
  queues 256 datagrams of 64 B with the default buffer, 0.6 ms of a
  compiled sender;
* dies with its parent (``PR_SET_PDEATHSIG``), ignores SIGINT (the parent
  decides what an interrupt means), sits on another CPU where there is one;
* takes orders over a control socket: fixed 9-byte frames ``<cQ``
  (command, argument), so a short read is always an error, never a guess.

:class:`Peer` forks (the default).  :class:`ExecPeer` forks and *execs* a
new interpreter running the same :func:`_peer_main` over the passed
descriptors (:func:`exec_main`): a counting run's worker runs under
valgrind, and a forked child would stay under valgrind (10x slower, counted
apart), while an exec'd one runs natively (valgrind's default
``--trace-children=no``).  It costs a new interpreter's start (~50 ms
natively), outside any counted or timed region.

Commands: ``R n`` receive n stream bytes then answer ``D got`` (a local
peer first answers ``T ns``: when the last byte arrived, see
:data:`SHARED_CLOCK`); ``G n``
drop stale datagrams, answer ``A`` (ready), receive up to n datagrams
(until an empty one, the sender's end marker) then answer ``D got``;
``Q`` quit.  For pingpong the peer echoes from the start until EOF or ``Q``.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any, Protocol

import fastsock

FRAME = struct.Struct("<cQ")
# The peer's bound on an idle wait (seconds); it loops after an idle echo,
# so this only sets how often it looks at the control socket.
PEER_IDLE = 1.0
# How long the measured side waits for the peer to exit before SIGKILL (s).
EXIT_GRACE = 2.0
_PR_SET_PDEATHSIG = 1
# The peer's stream receive size (bytes), at least the message size: what
# iperf3's server reads with -l 64K.  Not larger: over loopback TCP, 256 KiB
# reads ran the 64 KiB stream at 0.6-0.85x of 64 KiB reads, and cost the
# sender more CPU per byte (a longer read holds the socket and delays the
# window updates the sender waits for); 64 KiB still takes a thousand
# 64 B messages per call.
RECV_BUFFER = 64 * 1024
# Datagrams per recvmmsg of a datagram stream peer with the compiled loops:
# more than any sender's batch in the presets, so the peer is never the
# one that syscalls more per datagram.
PEER_BATCH = 64
# perf_counter is one clock for every process of the host (Linux:
# CLOCK_MONOTONIC): a forked peer's stamp of its last received byte can end
# the measured side's timed region, instead of the confirmation's arrival,
# whose wake-up of the measured side is not delivery (median ~0.1 ms, up to
# ~9 ms on a loaded machine: 0.2% to 3% of a 20-90 ms value).  A remote
# peer's clock is another host's: there the confirmation ends it.
SHARED_CLOCK = time.get_clock_info("perf_counter").implementation == \
    "clock_gettime(CLOCK_MONOTONIC)"


class PeerError(RuntimeError):
    pass


def _set_pdeathsig() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the parent's cleanup and EOF still end the peer


# Where a case's two processes run (``run --placement``):
#   apart  the measured side on one CPU, its peer on another (each pinned);
#   os     wherever the kernel's scheduler puts them (no pinning), as any
#          program and the C tools run by default;
#   auto   apart for spin (two busy-polling ends need a CPU each: on one
#          they would take turns by time slice), os for every other mode.
# Why os: on a 2-vCPU VM, two ends pinned apart ran loopback TCP at 64 KiB
# at half the rate of the same ends placed by the kernel (754 vs 1,726
# MB/s; iperf3 -A 1,0 755 vs 1,559 unpinned), every wake-up of the other
# end a cross-CPU interrupt; that is the hypervisor's cost, not the loops'.
PLACEMENTS = ("auto", "apart", "os")


def placement_for(placement: str, mode: str) -> str:
    """The placement a case of ``mode`` gets under ``placement``: apart or os."""
    if placement == "auto":
        return "apart" if mode == "spin" else "os"
    return placement


def choose_cpus(placement: str = "apart") -> tuple[set[int] | None, int | None]:
    """(CPUs for the measured side, CPU for the peer), or Nones where the
    machine has one CPU, affinity is not supported or the placement is the
    kernel's (``os``; see :data:`PLACEMENTS`)."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = os.sched_getaffinity(0)
    every = set(range(os.cpu_count() or 1))
    outside = sorted(every - allowed)
    if outside:  # already pinned (pyperf --affinity)
        return None, (outside[0] if placement == "apart" else None)  # apart: peer elsewhere
    if len(allowed) < 2 or placement == "os":
        return None, None
    cpus = sorted(allowed)
    return {cpus[-1]}, cpus[-2]


def cpu_seconds(pid: int) -> float | None:
    """CPU time a local process has used so far, all its threads, seconds
    (Linux: ``/proc/PID/task/*/schedstat``, nanoseconds; ``/proc/PID/stat``
    counts in ticks of 10 ms, too coarse for a 10 ms value); None where
    that cannot be read."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def peer_batch(loops: Any) -> int:
    """Datagrams per receive call of a datagram stream peer using ``loops``."""
    return PEER_BATCH if getattr(loops, "HAVE_MMSG", False) else 1


def recv_frame(ctl: socket.socket) -> tuple[bytes, int]:
    buf = b""
    while len(buf) < FRAME.size:
        chunk = ctl.recv(FRAME.size - len(buf))
        if not chunk:
            raise PeerError("peer control channel closed (peer died?)")
        buf += chunk
    cmd, arg = FRAME.unpack(buf)
    return cmd, arg


def _peer_main(ctl: socket.socket, data: socket.socket, scenario: str,
               dgram: bool, mode: str, size: int, loops: Any, stamp: bool = False) -> None:
    if scenario == "pingpong":
        ctl.setblocking(False)
        while True:
            if dgram:
                loops.dgram_echo(data, size, mode, PEER_IDLE)
            else:
                try:
                    loops.stream_echo(data, size, mode, PEER_IDLE)
                    return  # EOF: the measured side is done
                except TimeoutError:
                    pass
            try:
                frame = ctl.recv(FRAME.size)
            except BlockingIOError:
                continue
            if not frame or frame[:1] == b"Q":
                return
    while True:
        cmd, arg = recv_frame(ctl)
        if cmd == b"Q":
            return
        if cmd == b"R":
            # A large receive buffer: the peer must not be what caps the
            # sender's rate (one recv can take many small messages).
            got = loops.stream_recv(data, arg, max(size, RECV_BUFFER), mode, 30.0)
            if stamp:
                ctl.sendall(FRAME.pack(b"T", time.perf_counter_ns()))
        elif cmd == b"G":
            # End markers of the previous round may still be queued: drop
            # them before acknowledging, i.e. before the sender starts.
            data.setblocking(False)
            try:
                while True:
                    data.recv(65536)
            except BlockingIOError:
                pass
            ctl.sendall(FRAME.pack(b"A", 0))
            got = loops.dgram_recv(data, arg, size, mode, 30.0, batch=peer_batch(loops))
        else:
            raise PeerError(f"unknown command {cmd!r}")
        ctl.sendall(FRAME.pack(b"D", got))


def _spawn(datas: list[socket.socket], scenario: str, dgram: bool, mode: str, size: int,
           cpu: int | None, measured: tuple[socket.socket, ...],
           workers_own: tuple[socket.socket, ...]) -> tuple[int, list[socket.socket]]:
    """Fork the peer process serving ``datas`` (one :func:`_peer_main` per
    connection, a thread each when there are several); (pid, the parent's
    control sockets, one per connection)."""
    parent = os.getpid()
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in datas]
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the peer
        code = 0
        try:
            for ctl_parent, _ in pairs:
                ctl_parent.close()
            for own in (*measured, *workers_own):
                own.close()
            _set_pdeathsig()
            if os.getppid() != parent:
                os._exit(1)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if cpu is not None:
                try:
                    os.sched_setaffinity(0, {cpu})
                except OSError:
                    pass
            stamp = SHARED_CLOCK
            if len(datas) == 1:
                _peer_main(pairs[0][1], datas[0], scenario, dgram, mode, size, fastsock,
                           stamp=stamp)
            else:
                _serve_group([c for _, c in pairs], datas, scenario, dgram, mode, size, stamp)
        except BaseException as exc:  # report, never unwind into the parent's code
            code = 1
            _report(exc)
        finally:
            os._exit(code)
    for _, ctl_child in pairs:
        ctl_child.close()
    return pid, [ctl_parent for ctl_parent, _ in pairs]


def _report(exc: BaseException) -> None:
    try:
        print(f"fastsock peer: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.stderr.flush()
    except BaseException:
        pass


def _serve_group(ctls: list[socket.socket], datas: list[socket.socket], scenario: str,
                 dgram: bool, mode: str, size: int, stamp: bool) -> None:
    """A thread per connection, each :func:`_peer_main`; the first failure
    ends the whole process (exit 1), so the measured side's SIGCHLD watch
    sees it at once, as with one connection.  The compiled loops release
    the GIL: the threads receive and echo in parallel."""
    import threading

    def serve(ctl: socket.socket, data: socket.socket) -> None:
        try:
            _peer_main(ctl, data, scenario, dgram, mode, size, fastsock, stamp=stamp)
        except BaseException as exc:
            _report(exc)
            os._exit(1)

    threads = [threading.Thread(target=serve, args=pair, daemon=True)
               for pair in zip(ctls, datas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def fork_group(datas: list[socket.socket], scenario: str, transport_is_dgram: bool, mode: str,
               size: int, cpu: int | None, measured: tuple[socket.socket, ...] = (),
               workers_own: tuple[socket.socket, ...] = ()) -> list[Peer]:
    """One forked peer process serving every connection of ``datas`` (a
    thread each); a :class:`Peer` handle per connection, sharing the pid."""
    pid, ctls = _spawn(datas, scenario, transport_is_dgram, mode, size, cpu, measured,
                       workers_own)
    shared = [len(ctls)]
    return [Peer._link(ctl, pid, cpu, shared) for ctl in ctls]


class PeerLike(Protocol):
    """What the measured side asks of its peer, local (:class:`Peer`) or on
    another host (``bench.remote.client.RemotePeer``): orders and answers
    in :data:`FRAME`s over a control channel."""

    impl: str  # the loops the peer runs ("cython", "python")
    batch: int  # datagrams per receive call of a datagram stream peer
    cpu: int | None  # where it runs, when placed here
    pid: int  # a local process's pid, or -1
    facts: dict[str, Any]  # set-up facts of its end for the report ({}: none known)

    def order(self, cmd: bytes, arg: int) -> None: ...
    def answer(self, timeout: float, expect: bytes = b"D") -> int: ...
    def ready(self) -> bool: ...
    def wait_ready(self, timeout: float) -> bool: ...
    def close(self) -> None: ...


class Peer:
    """A forked peer process holding one end of a connected pair (or one
    connection of several, :func:`fork_group`)."""

    def __init__(self, data: socket.socket, scenario: str, transport_is_dgram: bool,
                 mode: str, size: int, cpu: int | None,
                 measured: socket.socket | None = None,
                 workers_own: tuple[socket.socket, ...] = ()) -> None:
        """``measured``: the measured side's end, closed in the peer so that
        closing it in the parent is an EOF for the peer (else the peer's
        inherited copy keeps the connection open: a stream echo would only
        notice the end after PEER_IDLE).  ``workers_own``: other sockets of
        the worker, closed in the peer for the same reason (a lockstep
        worker's turn socket: its close tells the main process the worker
        has finished)."""
        pid, [ctl] = _spawn([data], scenario, transport_is_dgram, mode, size, cpu,
                            (measured,) if measured is not None else (), workers_own)
        self._attach(ctl, pid, cpu, [1])

    @classmethod
    def _link(cls, ctl: socket.socket, pid: int, cpu: int | None, shared: list[int]) -> Peer:
        peer = cls.__new__(cls)
        peer._attach(ctl, pid, cpu, shared)
        return peer

    def _attach(self, ctl: socket.socket, pid: int, cpu: int | None, shared: list[int]) -> None:
        self.impl = fastsock.IMPLEMENTATION
        # what _peer_main uses for a datagram stream (G): recorded, not chosen here
        self.batch = peer_batch(fastsock)
        self.cpu = cpu
        self.stamps = SHARED_CLOCK  # answers T before D to R (see _peer_main)
        # set-up facts of the peer's end for the report (its socket buffers),
        # filled by whoever made the pair (bench.run.ends.open_local)
        self.facts: dict[str, Any] = {}
        self.pid = pid
        self.ctl = ctl
        # the handles still open on this process (one list shared by a
        # group's): the last to close waits for the process
        self._shared = shared

    def order(self, cmd: bytes, arg: int) -> None:
        self.ctl.sendall(FRAME.pack(cmd, arg))

    def answer(self, timeout: float, expect: bytes = b"D") -> int:
        self.ctl.settimeout(timeout)
        try:
            cmd, arg = recv_frame(self.ctl)
        except TimeoutError:
            raise PeerError(f"peer did not answer within {timeout:g} s (stalled?)") from None
        if cmd != expect:
            raise PeerError(f"peer answered {cmd!r}")
        return arg

    def ready(self) -> bool:
        """True when an answer is waiting (non-blocking)."""
        return self.wait_ready(0)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an answer to be waiting."""
        r, _, _ = select.select([self.ctl], [], [], timeout)
        return bool(r)

    def close(self) -> None:
        """Ask the peer to quit; SIGKILL it (by pid) if it does not.  A
        group's connections each ask theirs to quit; the last one waits."""
        if self.pid <= 0:  # closed, or reaped already (its control socket still ours)
            self.ctl.close()
            return
        try:
            self.ctl.setblocking(False)
            self.ctl.send(FRAME.pack(b"Q", 0))
        except OSError:
            pass
        self.ctl.close()
        self._shared[0] -= 1
        if self._shared[0] > 0:
            self.pid = -1  # the others' to wait for
            return
        deadline = time.monotonic() + EXIT_GRACE
        while True:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            if time.monotonic() > deadline:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                break
            time.sleep(0.005)
        self.pid = -1


def _launcher() -> str:
    """``python -c`` code that imports this very ``bench`` (and the
    ``fastsock`` beside it, when it is there), not whatever the current
    directory holds, and runs :func:`exec_main`."""
    import bench

    root = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__ or "")))
    return (f"import sys; sys.path[0] = {root!r}; "
            "from bench.run.peer import exec_main; sys.exit(exec_main(sys.argv[1:]))")


def exec_main(argv: list[str]) -> int:
    """The exec'd peer (:class:`ExecPeer`): CTL_FD DATA_FD SCENARIO DGRAM
    MODE SIZE CPU PARENT_PID (CPU -1: not placed)."""
    try:
        ctl_fd, data_fd = int(argv[0]), int(argv[1])
        scenario, dgram, mode, size = argv[2], argv[3] == "1", argv[4], int(argv[5])
        cpu, parent = int(argv[6]), int(argv[7])
    except (IndexError, ValueError):
        print(f"fastsock peer: bad arguments {argv!r}", file=sys.stderr)
        return 2
    _set_pdeathsig()
    if os.getppid() != parent:  # the parent died before the line above
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpu >= 0:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
    try:
        with socket.socket(fileno=ctl_fd) as ctl, socket.socket(fileno=data_fd) as data:
            _peer_main(ctl, data, scenario, dgram, mode, size, fastsock, stamp=SHARED_CLOCK)
    except Exception as exc:
        print(f"fastsock peer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


class ExecPeer(Peer):
    """A peer in a new interpreter (fork + exec) holding one end of a pair:
    what :class:`Peer` does, for a parent that runs under valgrind."""

    def __init__(self, data: socket.socket, scenario: str, transport_is_dgram: bool,
                 mode: str, size: int, cpu: int | None) -> None:
        ctl_parent, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-c", _launcher(), str(ctl_child.fileno()),
                str(data.fileno()), scenario, "1" if transport_is_dgram else "0", mode,
                str(size), str(-1 if cpu is None else cpu), str(os.getpid())]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # only exec here: until it, this child runs under valgrind
            try:
                # Every other descriptor is close-on-exec (Python's default):
                # the measured end and the worker's own sockets stay behind.
                os.set_inheritable(ctl_child.fileno(), True)
                os.set_inheritable(data.fileno(), True)
                os.execv(sys.executable, argv)
            finally:
                os._exit(127)
        ctl_child.close()
        self._attach(ctl_parent, pid, cpu, [1])  # the child imports the same fastsock
