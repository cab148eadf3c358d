"""The timed units: one scenario's timed call each, behind one interface.

Design note
-----------
pyperf calls a case's ``time_func(loops)`` several times per worker and
divides what it returns by ``loops``; :class:`bench.run.worker.Case` sets
the case's ends up (:mod:`bench.run.ends`) at the first call and hands
every call to the case's :class:`Unit`, picked by :func:`unit_for`:

* ``time_loops(loops, extras)`` returns the seconds of ``loops`` messages,
  round trips or connections, and adds to ``extras`` what it measured
  beside time (CPU time, sent/delivered, rounds/lost, RTT samples).  The
  caller passes the phase's :class:`Extras` in: a unit reaches no global,
  so N units in N threads (issue 15) can each fill their own;
* ``close()`` ends the ends the way the unit's peer expects.

The timed region is the loop plus, for throughput, the peer's confirmation
that it received everything:

* :class:`Stream` (TCP, Unix stream): order the peer to receive ``loops *
  size`` bytes, start the clock, ``stream_send``, wait for the peer's
  count, stop (at the local peer's stamp of its last byte: the
  confirmation's wake-up of this process is not delivery);
* :class:`DgramStream`: the same, then end with empty datagrams (resent
  until the peer answers, since UDP may drop one) and return ``elapsed *
  loops / delivered``, so pyperf's value is seconds per *delivered*
  datagram, never the send rate; the case's ``batch`` goes to
  ``dgram_send`` (sendmmsg above 1);
* :class:`Pingpong` (stream and datagram): ``*_pingpong`` with
  per-round-trip samples (both twins pay for sampling alike); a datagram
  round unanswered within ``LOSS_TIMEOUT`` is lost, not an error;
* :class:`Connect`: ``connect_accept(listener, loops)``, which plays both
  ends of every connection: seconds and CPU time per connection.

Limits: a unit only times.  It sets nothing up (bench.run.ends) and
watches no peer process (the worker's SIGCHLD watch does, and raises
through the loops); every wait it makes is bounded by the constants below.
"""

from __future__ import annotations

import array
import socket
import time
from typing import Callable

from bench.analysis.report import DGRAM_TRANSPORTS, CaseKey
from bench.run.ends import TCP_TRANSPORTS, Ends
from bench.run.peer import PeerError

# Bound on any single wait of the measured side (seconds): a dead or
# stalled peer becomes an error within this.
CASE_TIMEOUT = 5.0
# Bound on a datagram pingpong round before it counts as lost (seconds).
LOSS_TIMEOUT = 0.2
# Interval between two end-of-stream datagrams (seconds).
END_RESEND = 0.0005
# How long a stream case over a connection (TCP, Unix stream) runs before
# its first timed call (seconds), as iperf3's --omit: a fresh pair of
# processes placed by the kernel reached its steady rate only after
# 100-200 ms here (tcp4 64 KiB: 1,650 MB/s at the second 10 ms value,
# 2,050 at the 5th to 8th, 2,660 from the 17th on; 64 B: 45 -> 55 MB/s),
# while pyperf's one 10 ms warm-up left every worker in that ramp.
WARM_UP = 0.15


class Extras:
    """What timed calls measured beside time, summed over a phase."""

    def __init__(self) -> None:
        self.msgs = 0
        self.cpu = 0.0  # seconds, user + system, of this process
        self.wall = 0.0  # seconds of wall time over which ``cpu`` was spent
        self.peer_cpu = 0.0  # seconds, the local peer process's (all threads)
        self.peer_msgs = 0  # messages over which ``peer_cpu`` was spent
        self.sent = 0
        self.delivered = 0
        self.rounds = 0
        self.lost = 0
        self.samples: list[array.array[int]] = []  # RTT per round trip (ns)

    def add_cpu(self, cpu: float, msgs: int, wall: float = 0.0) -> None:
        self.cpu += cpu
        self.msgs += msgs
        self.wall += wall

    def add_counts(self, other: Extras) -> None:
        """Add what ``other`` counted (datagrams, rounds, RTT samples), not
        its CPU time: one connection's of several, whose CPU is the
        process's (bench.run.threads)."""
        self.sent += other.sent
        self.delivered += other.delivered
        self.rounds += other.rounds
        self.lost += other.lost
        self.samples += other.samples


class Unit:
    """The interface: one scenario's timed calls over one case's ends."""

    def __init__(self, key: CaseKey, ends: Ends) -> None:
        self.key = key
        self.ends = ends
        # Called right before the clock starts (after the peer's orders):
        # the start line of N units timed together (bench.run.threads).
        self.gate: Callable[[], object] | None = None
        # (start, end) of the last timed call, perf_counter seconds.
        self.span = (0.0, 0.0)

    def time_loops(self, loops: int, extras: Extras) -> float:
        """Seconds for ``loops`` messages (round trips, connections)."""
        raise NotImplementedError

    def close(self) -> None:
        self.ends.close()


class Stream(Unit):
    """Stream throughput over TCP or a Unix stream: timed until delivery.

    The steps around the send are methods of their own, so that N
    connections sent on one event loop (:class:`bench.run.threads.LoopGroup`)
    take them alike."""

    _got = 0  # bytes the peer confirmed in the last call

    def time_loops(self, loops: int, extras: Extras) -> float:
        ends, size = self.ends, self.key.size
        sock = ends.sock
        assert sock is not None
        self.begin(loops)
        if self.gate is not None:
            self.gate()
        c0 = time.process_time()
        t0 = time.perf_counter()
        ends.loops.stream_send(sock, loops, size, self.key.mode, CASE_TIMEOUT)
        self.push()
        t1, t2 = self.delivered(loops, t0)
        extras.add_cpu(time.process_time() - c0, loops, t2 - t0)
        self.span = (t0, t1)
        self.end(loops)
        return t1 - t0

    @property
    def _nagle(self) -> bool:
        # Nagle is on unless the case turned it off (--nodelay on): then
        # there is no tail to push, and nothing to toggle
        return self.key.transport in TCP_TRANSPORTS and not self.key.nodelay

    def begin(self, loops: int) -> None:
        """Order the peer to receive ``loops`` messages (before the clock)."""
        assert self.ends.peer is not None
        self.ends.peer.order(b"R", loops * self.key.size)

    def push(self) -> None:
        """After the send: push out a tail that Nagle holds until the peer's
        (delayed, up to 40 ms) ACK: the loop is done, the stall is not its
        cost."""
        if self._nagle:
            assert self.ends.sock is not None
            self.ends.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def delivered(self, loops: int, t0: float) -> tuple[float, float]:
        """After the send and its :meth:`push` (timed): wait for the peer's
        delivery; (when the last byte arrived, now)."""
        ends = self.ends
        sock, peer = ends.sock, ends.peer
        assert sock is not None and peer is not None
        if ends.peer_error is not None:  # seen while an event loop ran the send
            raise ends.peer_error
        # A local peer stamps its last byte's arrival (bench.run.peer.SHARED_CLOCK):
        # delivery ends there, not when its answer wakes this process up.
        t_last = peer.answer(CASE_TIMEOUT, expect=b"T") / 1e9 if getattr(
            peer, "stamps", False) else None
        self._got = peer.answer(CASE_TIMEOUT)
        t1 = t2 = time.perf_counter()
        if t_last is not None and t0 < t_last <= t1:
            t1 = t_last
        return t1, t2

    def end(self, loops: int) -> None:
        """After the clock: Nagle back on, every byte accounted for."""
        sock = self.ends.sock
        assert sock is not None
        if self._nagle:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        if self._got != loops * self.key.size:
            raise PeerError(f"peer received {self._got} of {loops * self.key.size} bytes")


class DgramStream(Unit):
    """Datagram throughput: seconds per delivered datagram, loss beside."""

    def time_loops(self, loops: int, extras: Extras) -> float:
        ends, size = self.ends, self.key.size
        sock, peer = ends.sock, ends.peer
        assert sock is not None and peer is not None
        peer.order(b"G", loops)
        peer.answer(CASE_TIMEOUT, expect=b"A")
        if self.gate is not None:
            self.gate()
        c0 = time.process_time()
        t0 = time.perf_counter()
        ends.loops.dgram_send(sock, loops, size, self.key.mode, CASE_TIMEOUT,
                              batch=self.key.batch)
        # End markers until the peer answers: one may be dropped like data.
        deadline = time.perf_counter() + CASE_TIMEOUT
        while not peer.ready():
            if time.perf_counter() > deadline:  # one bound for the whole wait
                raise PeerError(f"peer did not answer within {CASE_TIMEOUT:g} s (stalled?)")
            try:  # timed: a plain try costs less than contextlib.suppress()
                sock.send(b"")
            except BlockingIOError:
                pass
            peer.wait_ready(END_RESEND)
        delivered = peer.answer(CASE_TIMEOUT)
        t1 = time.perf_counter()
        extras.add_cpu(time.process_time() - c0, loops, t1 - t0)
        self.span = (t0, t1)
        extras.sent += loops
        extras.delivered += delivered
        if delivered == 0:
            raise PeerError(f"none of {loops} datagrams arrived")
        return (t1 - t0) * loops / delivered


class Pingpong(Unit):
    """Round trips, stream or datagram: mean RTT, samples and loss beside."""

    def time_loops(self, loops: int, extras: Extras) -> float:
        ends, size, mode = self.ends, self.key.size, self.key.mode
        sock = ends.sock
        assert sock is not None
        dgram = self.key.transport in DGRAM_TRANSPORTS
        samples = array.array("q", bytes(8 * loops))
        if self.gate is not None:
            self.gate()
        c0 = time.process_time()
        if dgram:
            t0 = time.perf_counter()
            done, lost = ends.loops.dgram_pingpong(
                sock, loops, size, mode, LOSS_TIMEOUT, samples=samples
            )
            t1 = time.perf_counter()
            if done == 0:
                raise PeerError(f"all {loops} round trips lost")
        else:
            t0 = time.perf_counter()
            done = ends.loops.stream_pingpong(
                sock, loops, size, mode, CASE_TIMEOUT, samples=samples
            )
            t1 = time.perf_counter()
            lost = 0
        extras.add_cpu(time.process_time() - c0, loops, t1 - t0)
        self.span = (t0, t1)
        if dgram:  # only datagram rounds can be lost
            extras.rounds += loops
            extras.lost += lost
        extras.samples.append(samples[:done])
        return t1 - t0

    def close(self) -> None:
        ends = self.ends
        if ends.sock is not None and self.key.transport in DGRAM_TRANSPORTS:
            try:  # an empty datagram ends the peer's echo at once; the
                # quit order goes first, so the peer finds it right after
                if ends.peer is not None:
                    ends.peer.order(b"Q", 0)
                ends.sock.setblocking(False)
                ends.sock.send(b"")
            except OSError:
                pass
            # the peer echoes that marker: our end stays open until the
            # peer has quit (a closed Unix datagram end is ECONNREFUSED)
            if ends.peer is not None:
                ends.peer.close()
                ends.peer = None
        ends.close()


class Connect(Unit):
    """Connections to the ends' listener: both ends' time per connection."""

    def time_loops(self, loops: int, extras: Extras) -> float:
        sock = self.ends.sock
        assert sock is not None
        c0 = time.process_time()
        t0 = time.perf_counter()
        self.ends.loops.connect_accept(sock, loops, self.key.mode, CASE_TIMEOUT)
        t1 = time.perf_counter()
        extras.add_cpu(time.process_time() - c0, loops, t1 - t0)
        self.span = (t0, t1)
        return t1 - t0


def warms_up(key: CaseKey) -> bool:
    """Whether the case streams over a connection (see :data:`WARM_UP`)."""
    return key.scenario == "stream" and key.transport not in DGRAM_TRANSPORTS


def warm_up(unit: Unit, seconds: float = WARM_UP) -> int:
    """Run ``unit``'s calls, untimed, for about ``seconds``: from 8 loops
    up, doubling, then what fills the rest at the rate seen.  Returns the
    loops run (counted nowhere else)."""
    loops, done, spent = 8, 0, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        unit.time_loops(loops, Extras())
        took = time.perf_counter() - t0
        spent += took
        done += loops
        left = seconds - spent
        loops = max(1, min(2 * loops, int(loops * left / took) if took > 0 else 2 * loops))
    return done


def unit_for(key: CaseKey, ends: Ends) -> Unit:
    """The unit that times ``key``'s scenario over ``ends``."""
    if key.scenario == "pingpong":
        return Pingpong(key, ends)
    if key.scenario == "connect":
        return Connect(key, ends)
    if key.transport in DGRAM_TRANSPORTS:
        return DgramStream(key, ends)
    return Stream(key, ends)
