"""What runs inside a pyperf worker: one case's lifecycle around its timed unit.

Design note
-----------
pyperf calls ``time_func(loops)`` several times per worker process (warmups,
then values) and divides what it returns by ``loops``.  :class:`Case` keeps
the lifecycle and hands the timing to its scenario's unit:

* set-up on the first call, before the clock starts, living until the
  process exits: the impl's loops (:mod:`bench.run.impls`; their module,
  file, distribution and contract go into the run's metadata), the two
  ends (:mod:`bench.run.ends`: a local pair and a forked peer, a remote
  peer through the injected ``opener``, or a listener for connect), an
  event loop's connection around them for the
  event-loop impls (:mod:`bench.run.eventloop`), and the unit picked by
  the case key (:mod:`bench.run.scenarios`, where the timed regions and
  their bounds are described);
* every call: the lockstep baton (:class:`Baton`), then the unit's
  ``time_loops`` under the SIGCHLD peer watch;
* ``fail()`` and ``close()``: one line naming the case, the peer ended,
  nothing left behind.

What a run measures beside time (CPU time per message, loss, RTT
percentiles) is collected by :class:`StatsHook`, a pyperf hook whose
``teardown(metadata)`` adds run metadata; only the values phase counts
(pyperf makes a new hook per phase and the last teardown wins).  Each
timed call gets the active hook (an :class:`bench.run.scenarios.Extras`)
to add to.

Every wait is bounded: the loops' own timeouts (``CASE_TIMEOUT``) and the
peer's answer; a failure ends the worker with one line naming the case.
A peer that dies or is stopped is noticed at once, not after a timeout:
during a timed call a SIGCHLD handler looks at the peer (``waitpid`` with
``WUNTRACED``) and raises :class:`PeerError`, which the loops let through
(they run signal handlers on EINTR); on an event loop the handler hands
the error over instead (:func:`bench.run.eventloop.hand_over`).  This
matters for datagram ping-pong, where a silent peer only costs
``LOSS_TIMEOUT`` per round and ``loops`` rounds would add up to minutes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import sys
from functools import partial
from types import FrameType
from typing import Any

from bench.analysis.report import CaseKey
from bench.run import impls as _impls
from bench.run.ends import CaseFailed, Ends, Opener, fork_peer, listen, open_ends, open_local
from bench.run.eventloop import Handler, hand_over, wrap, wrap_group
from bench.run.peer import PeerError, cpu_seconds
from bench.run.scenarios import CASE_TIMEOUT, WARM_UP, Extras, Unit, unit_for, warm_up, warms_up
from bench.run.threads import LoopGroup, open_group, threaded_unit

# A lockstep worker's baton (``run --base-python``, bench.run.lockstep):
# "FD:SLOT" in its environment, FD a socket to the main process.
LOCKSTEP_ENV = "FASTSOCK_LOCKSTEP"
# Version of the turn protocol below; a base that speaks another one is
# interleaved worker by worker instead.
LOCKSTEP_PROTOCOL = 1
# Bound on a lockstep worker's wait for its turn (seconds): the other
# side's one value, or the main process gone.
BATON_TIMEOUT = 120.0

_ACTIVE: StatsHook | None = None
# The running case's set-up facts (peer_impl, socket options), added to
# every run's metadata by StatsHook; equal in all runs, pyperf shows them
# as the benchmark's metadata.
_CASE_META: dict[str, Any] = {}


class StatsHook(Extras):
    """pyperf hook: accumulates the extra measurements of one phase."""

    name = "fastsock"

    def __init__(self) -> None:
        global _ACTIVE
        super().__init__()
        _ACTIVE = self

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
        if self.wall > 0:
            metadata["cpu_use"] = self.cpu / self.wall
        if self.peer_msgs:
            metadata["peer_cpu_per_msg"] = self.peer_cpu / self.peer_msgs
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
    """One case in a pyperf worker: set-up at the first timed call, the
    lockstep turn, the peer watch, failure and teardown; its unit times."""

    def __init__(self, key: CaseKey, opener: Opener | None = None,
                 placement: str = "auto") -> None:
        self.key = key
        # where a local case's two processes run (bench.run.peer.PLACEMENTS)
        self.placement = placement
        # A peer elsewhere (``run --remote``: bench.remote.client.open_case
        # bound to the server's address), or None: a local pair and peer.
        self.opener = opener
        # The impl is loaded in setup(), not here: a worker builds a Case
        # for every case of the selection, and only its own task's may fail
        # (or import anything).
        self.impl = _impls.get(key.impl)
        self.on_event_loop = self.impl.kind == "event loop"
        self.ends: Ends | None = None
        # every connection's ends (threads > 1: several; else [ends])
        self.group: list[Ends] = []
        self.unit: Unit | None = None
        self._watch: Handler = self._on_sigchld  # the SIGCHLD handler of a timed call
        self._warm = warms_up(key)  # see bench.run.scenarios.WARM_UP

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        key = self.key
        try:
            loops: Any = self.impl.load()  # an event loop's: None, wrapped below
            # where the measured loops came from: equal in every run
            _CASE_META.update(self.impl.metadata())
        except _impls.ImplError as exc:
            raise CaseFailed(str(exc)) from None
        connect = self.opener is None and key.scenario == "connect"
        own = (_BATON.sock,) if _BATON is not None else ()
        if connect:
            ends = listen(key, loops, self.placement)
        elif key.threads > 1:
            if self.opener is not None:
                raise CaseFailed("threads > 1 needs a local peer (not --remote)")
            self.group = open_group(key, loops, own)
            self.ends = self.group[0]
            atexit.register(self.close)  # owned from here: a failure below still closes
            if self.on_event_loop:  # N connections on one loop, no threads
                self.unit = LoopGroup(key, self.group)
                runner = wrap_group(self.group, key.impl, CASE_TIMEOUT)
                self._watch = hand_over(self.ends, self.check_peer, runner)
            else:
                self.unit = threaded_unit(key, self.group)
            _CASE_META.update(self.ends.meta)
            return
        else:
            opener = self.opener or partial(open_local, start_peer=partial(fork_peer, own=own),
                                            placement=self.placement)
            ends = open_ends(key, opener, loops)
        # Owned from here: a failure below still closes the ends.
        self.ends, self.unit = ends, unit_for(key, ends)
        self.group = [ends]
        atexit.register(self.close)
        if self.on_event_loop and not connect:
            wrap(ends, key.impl, CASE_TIMEOUT)
            self._watch = hand_over(ends, self.check_peer)
        _CASE_META.update(ends.meta)

    def close(self) -> None:
        """End the ends the unit's way; safe before set-up and twice."""
        if self.unit is not None:
            self.unit.close()
        else:  # set-up failed between the connections and their unit
            for ends in self.group:
                ends.close()
        self.ends = self.unit = None
        self.group = []

    # ------------------------------------------------------------ timing
    def time_func(self, loops: int) -> float:
        try:
            turn = baton()
            if self.unit is None:
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
            raise AssertionError("unreachable") from None

    def _watched(self, loops: int) -> float:
        # The SIGCHLD watch covers the timed call only: fail() and close()
        # end the peer themselves and must not be interrupted by its death.
        assert self.unit is not None
        extras = _ACTIVE if _ACTIVE is not None else Extras()  # none: kept nowhere
        if self._warm:  # once, in the first call's turn, watched, before its clock
            self._warm = False
            old = signal.signal(signal.SIGCHLD, self._watch)
            try:
                warm_up(self.unit)
            finally:
                signal.signal(signal.SIGCHLD, old)
            _CASE_META["warm_up"] = WARM_UP
        pid = self.ends.peer.pid if self.ends is not None and self.ends.peer is not None else -1
        # the local peer's CPU time, read outside the timed region
        before = cpu_seconds(pid) if pid > 0 else None
        msgs = extras.msgs
        old = signal.signal(signal.SIGCHLD, self._watch)
        try:
            seconds = self.unit.time_loops(loops, extras)
        finally:
            signal.signal(signal.SIGCHLD, old)
        after = cpu_seconds(pid) if before is not None else None
        if before is not None and after is not None:
            extras.peer_cpu += after - before
            extras.peer_msgs += extras.msgs - msgs
        return seconds

    def _on_sigchld(self, signum: int, frame: FrameType | None) -> None:
        self.check_peer()

    def check_peer(self) -> None:
        """Raise PeerError when the peer has exited or been stopped (with
        several connections: their one peer process)."""
        for ends in self.group or ([self.ends] if self.ends is not None else []):
            self._check_one(ends)

    def _check_one(self, ends: Ends) -> None:
        if ends.peer_error is not None:
            raise ends.peer_error
        peer = ends.peer
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
        for other in self.group:  # a group's handles share the process
            if other.peer is not None and other.peer.pid == peer.pid:
                other.peer.pid = -1
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
        pids = {e.peer.pid for e in self.group or ([self.ends] if self.ends else [])
                if e.peer is not None and e.peer.pid > 0}
        for pid in pids:
            # no grace for a failed case's peer (it may be stopped)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.close()
        os._exit(3)
