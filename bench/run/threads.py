"""N connections, each driven by its own thread: their ends and their timing.

Design note
-----------
A case with ``threads`` N > 1 (:mod:`bench.run.axes`) opens N connections
(:func:`open_group`): N pairs made alike (the case's socket options on
each), one forked peer process serving all N, a thread per connection
(:func:`bench.run.peer.fork_group`: the compiled loops release the GIL, so
the peer's threads receive in parallel).  Each connection gets the unit
its scenario has (:mod:`bench.run.scenarios`); :class:`Threaded` times
them together:

* N daemon threads live as long as the case (started at set-up, outside
  every timed region); a timed call hands each its unit's ``time_loops``,
  with ``loops`` messages or round trips *per connection*;
* each unit gives its peer its orders, then waits at a barrier (the unit's
  ``gate``) so that the N clocks start together, and records its own
  (start, end): the value is made from those, never from this thread's
  wake-ups;
* pyperf's value: stream, (last end - first start) per message delivered
  over all connections (MB/s = the aggregate); pingpong, the mean over
  connections of each one's time per round trip (its RTT);
* CPU time is the whole process's over the call (``time.process_time``),
  per message of all connections, and ``cpu_use`` = CPU / wall time: a
  GIL-bound run shows as at most about one CPU's worth.  What each
  connection counted beside (datagrams, RTT samples) is summed.

Placement: N connections leave both processes on every CPU they may use
(``placement`` os, whatever ``run --placement`` says; ``measured_cpus`` and
``peer_cpu`` are recorded): the threads of one process pinned to one CPU
could never run in parallel, which is the very thing these cases measure.
Under pyperf's ``--affinity`` the measured side keeps it and the peer goes
to a CPU outside it.

Ends: a dead or stopped peer is seen by the worker's SIGCHLD watch, in the
main thread, which waits for the connection threads in short slices (the
kernel may deliver the signal to another thread; the connection threads
block SIGCHLD, SIGINT and SIGTERM so that it goes to the main thread);
Ctrl-C likewise.  Either ends the case at once; :meth:`Threaded.close`
shuts every socket down (waking a thread blocked on it), joins the threads
for at most :data:`JOIN_TIMEOUT` and closes the ends.  A failure in one
connection's thread breaks the start barrier and fails the case with its
error.

The event-loop impls run N connections on their one loop instead, as an
event-loop program does (:class:`LoopGroup`, on a group of
:func:`bench.run.eventloop.wrap_group`): the same ends and peer, no
threads on the measured side.

Limits: ``run --remote`` takes one connection.
"""

from __future__ import annotations

import array
import os
import signal
import socket
import threading
import time
from typing import Any

from bench.analysis.report import DGRAM_TRANSPORTS, CaseKey
from bench.run.ends import Ends, ends_meta, placement_facts, set_nodelay
from bench.run.peer import PeerError, choose_cpus, fork_group
from bench.run.scenarios import CASE_TIMEOUT, Extras, Stream, Unit, unit_for
from bench.run.transports import buffer_facts, make_pair

# Bound on joining the connection threads when a case closes (seconds):
# their sockets are shut down first, so they return at once.
JOIN_TIMEOUT = 2.0
# How often the main thread looks at signals while the connections run
# (seconds): the kernel may hand SIGCHLD to a thread that is not the main one.
WAIT_SLICE = 0.05
# Signals the connection threads block: the main thread takes them.
_MAIN_SIGNALS = {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM}


def placement() -> tuple[set[int] | None, int | None]:
    """(CPUs for the measured side, CPU for the peer) of N connections:
    no pinning, unless pyperf's --affinity pinned this worker already."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = os.sched_getaffinity(0)
    if set(range(os.cpu_count() or 1)) - allowed:
        return choose_cpus("apart")  # pyperf --affinity: the peer outside it
    return None, None


def open_group(key: CaseKey, loops: Any, own: tuple[socket.socket, ...] = ()) -> list[Ends]:
    """``key.threads`` connections and their one peer process, each
    connection's ends with the case's set-up facts."""
    pairs: list[tuple[socket.socket, socket.socket]] = []
    try:
        for _ in range(key.threads):
            pairs.append(make_pair(key.transport, key.sockbuf))
            set_nodelay(key, *pairs[-1])
        facts = [buffer_facts(mine, theirs, key.sockbuf) for mine, theirs in pairs]
        worker_cpus, peer_cpu = placement()
        if worker_cpus:
            os.sched_setaffinity(0, worker_cpus)
        mines = tuple(m for m, _ in pairs)
        peers = fork_group([t for _, t in pairs], key.scenario, key.transport in DGRAM_TRANSPORTS,
                           key.mode, key.size, peer_cpu, measured=mines, workers_own=own)
    except BaseException:
        for mine, _ in pairs:
            mine.close()
        raise
    finally:
        for _, theirs in pairs:
            theirs.close()
    where = placement_facts("os" if peer_cpu is None else "apart", peer_cpu)
    out = []
    for (mine, _), peer, fact in zip(pairs, peers, facts):
        peer.facts.update(fact)
        meta = ends_meta(key, mine, peer)
        meta.update(where)
        out.append(Ends(mine, peer, loops, meta=meta))
    return out


class _Crew:
    """N daemon threads, each running one unit's timed call on demand."""

    def __init__(self, units: list[Unit]) -> None:
        self.units = units
        self.barrier = threading.Barrier(len(units), timeout=CASE_TIMEOUT)
        for unit in units:
            unit.gate = self.barrier.wait
        self._cond = threading.Condition()
        self._round = 0
        self._stop = False
        self._jobs: list[tuple[int, Extras]] = []
        self.results: list[float | BaseException | None] = [None] * len(units)
        self._left = 0
        self.threads = [threading.Thread(target=self._serve, args=(i,), daemon=True,
                                         name=f"fastsock-conn-{i}")
                        for i in range(len(units))]
        for t in self.threads:
            t.start()

    def _serve(self, i: int) -> None:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, _MAIN_SIGNALS)
        seen = 0
        while True:
            with self._cond:
                while self._round == seen and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                seen = self._round
                loops, extras = self._jobs[i]
            result: float | BaseException
            try:
                result = self.units[i].time_loops(loops, extras)
            except BaseException as exc:  # handed to the main thread
                result = exc
                self.barrier.abort()  # the others must not wait for this one
            with self._cond:
                self.results[i] = result
                self._left -= 1
                self._cond.notify_all()

    def run(self, loops: int, extras: list[Extras]) -> list[float | BaseException | None]:
        """Every unit's ``time_loops(loops, extras[i])`` at once; returns
        when all are done.  Signals are seen in the main thread meanwhile:
        its handlers' exceptions (PeerError, KeyboardInterrupt) leave from here."""
        with self._cond:
            if self.barrier.broken:
                self.barrier.reset()
            self._jobs = [(loops, e) for e in extras]
            self.results = [None] * len(self.units)
            self._left = len(self.units)
            self._round += 1
            self._cond.notify_all()
            while self._left:
                self._cond.wait(WAIT_SLICE)
        return self.results

    @property
    def busy(self) -> bool:
        """A call is under way (left by an exception from a signal)."""
        return self._left > 0

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.barrier.abort()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


class Threaded(Unit):
    """N connections' units, each in its own thread, timed together."""

    def __init__(self, key: CaseKey, units: list[Unit]) -> None:
        super().__init__(key, units[0].ends)
        self.units = units
        self.crew: _Crew | None = _Crew(units)

    def time_loops(self, loops: int, extras: Extras) -> float:
        assert self.crew is not None
        each = [Extras() for _ in self.units]
        c0 = time.process_time()
        w0 = time.perf_counter()
        results = self.crew.run(loops, each)
        w1 = time.perf_counter()
        cpu = time.process_time() - c0
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # the first real one: the others' broken barrier follows from it
            real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
            raise (real or errors)[0]
        n = len(self.units)
        extras.add_cpu(cpu, loops * n, w1 - w0)
        for e in each:
            extras.add_counts(e)
        if self.key.scenario == "pingpong":
            # each connection's own time per round trip (its RTT), averaged
            return sum(u.span[1] - u.span[0] for u in self.units) / n
        first = min(u.span[0] for u in self.units)
        last = max(u.span[1] for u in self.units)
        if self.key.transport in DGRAM_TRANSPORTS:
            delivered = sum(e.delivered for e in each)
            if delivered == 0:
                raise PeerError(f"none of {loops * n} datagrams arrived")
        else:
            delivered = loops * n
        # wall time per delivered message over all connections, times loops
        return (last - first) * loops / delivered

    def close(self) -> None:
        """Wake and join the connection threads, then close every ends the
        way its unit does.  Threads still in a call (a signal ended it) are
        woken by shutting their sockets down."""
        if self.crew is not None and self.crew.busy:
            for unit in self.units:
                sock = unit.ends.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        if self.crew is not None:
            self.crew.stop()
            self.crew = None
        for unit in self.units:
            unit.close()


class LoopGroup(Unit):
    """N connections of an event-loop impl on its one loop (an
    ``AsyncGroup`` as every ends' ``loops``): one call drives them all,
    as one task; the value is made as :class:`Threaded`'s (stream: wall
    time per message delivered over all connections; pingpong: each
    connection's time per round trip, which is the whole call's)."""

    def __init__(self, key: CaseKey, group: list[Ends]) -> None:
        super().__init__(key, group[0])
        self.group = group
        self.units = [unit_for(key, e) for e in group]

    def time_loops(self, loops: int, extras: Extras) -> float:
        group, size, mode, n = self.ends.loops, self.key.size, self.key.mode, len(self.units)
        socks = [e.sock for e in self.group]
        if self.key.scenario == "pingpong":
            samples = [array.array("q", bytes(8 * loops)) for _ in range(n)]
            c0 = time.process_time()
            t0 = time.perf_counter()
            group.stream_pingpong(socks, loops, size, mode, CASE_TIMEOUT, samples=samples)
            t1 = time.perf_counter()
            extras.add_cpu(time.process_time() - c0, loops * n, t1 - t0)
            extras.samples += samples
            for e in self.group:
                if e.peer_error is not None:
                    raise e.peer_error
            return t1 - t0
        streams = [u for u in self.units if isinstance(u, Stream)]
        for u in streams:
            u.begin(loops)
        c0 = time.process_time()
        t0 = time.perf_counter()
        group.stream_send(socks, loops, size, mode, CASE_TIMEOUT)
        for u in streams:  # every tail out first: none waits on another's answer
            u.push()
        ends = [u.delivered(loops, t0) for u in streams]
        extras.add_cpu(time.process_time() - c0, loops * n, max(t2 for _, t2 in ends) - t0)
        for u in streams:
            u.end(loops)
        return (max(t1 for t1, _ in ends) - t0) / n

    def close(self) -> None:
        """Every connection's ends (their connections), then the loop."""
        for unit in self.units:
            unit.close()
        close = getattr(self.ends.loops, "close", None)  # none before wrap_group
        if close is not None:
            close()


def threaded_unit(key: CaseKey, ends: list[Ends]) -> Threaded:
    """The :class:`Threaded` unit over ``ends``, one unit per connection."""
    return Threaded(key, [unit_for(key, e) for e in ends])
