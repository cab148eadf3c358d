"""Inside valgrind: the measured side of ``run --measure instructions``.

Design note
-----------
One process runs many cases under ``valgrind --tool=callgrind
--dump-before=getppid`` (:mod:`bench.run.count` starts it and reads what it
says).  Callgrind writes the instructions executed since its previous dump
to a new part file each time this process calls ``getppid()``: the marker.
Nothing the suite measures calls ``getppid``; this module calls it at the
boundaries of the counted intervals only.

Per case, the suite's own pieces, as a time run uses them: the ends
(:func:`bench.run.ends.open_ends` over :func:`~bench.run.ends.open_local`,
whose peer is started by :func:`~bench.run.ends.exec_peer`: fork and exec,
so that it runs natively, outside the instrumentation; a listener for
connect), an event loop's connection for the event-loop impls, and the
case's timed unit (:func:`bench.run.scenarios.unit_for`).  Each counted
interval is one ``time_loops(m * N)`` call, so what is counted is what a
time run times; the unit's own per-call work (its clock reads, the peer's
order and answer) is the same in every call and cancels in the difference
(or goes into the fit's constant).  Then::

    20 x time_loops(16), time_loops(300)   warm-up: the interpreter quickens
                                          and specialises the call path and
                                          the loop body before any counting
    gc.collect(); gc.freeze()              the collector's work in the loop no
                                          longer depends on this harness's heap
    gc.collect(0) | marker | time_loops(p1 * N) gc.collect(0) | marker |
                             time_loops(p2 * N) gc.collect(0) | marker ...

Why ``gc.collect(0)`` ends every interval: the cyclic collector runs when
the young generation has grown by 700 objects since its last run, so
without it a run (~10K instructions here) falls every so many calls of the
unit, wherever the process's whole history puts it: always into the N
intervals, say, and the difference is 0.3% off, differently for another
selection of cases.  Ended by a collection of its own, every interval
starts from an empty young generation: what the collector does inside it
(for loops that leave cyclic garbage) is that interval's own work, and the
collection that ends it costs the same in each.

The case owns the parts of its markers; it reports the first one's number
and how many, with what each interval's unit saw beside the count
(datagrams sent and delivered, rounds lost).  Set-up, warm-up and teardown
fall into the part before a case's first marker, never into a counted one.

Talks to its parent in JSON lines on the descriptor that was standard
output (standard output itself is sent to standard error at start: the
peer inherits it).  Importable without numpy, asyncio or pyperf: a
worker's start under valgrind costs seconds for every module it imports.

Test hook: ``FASTSOCK_COUNT_TEST_SETUP_WORK=K`` adds K iterations of
Python work to every case's set-up (before its first marker); tests use it
to show that set-up is not counted.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from bench.analysis.report import CaseKey
from bench.run import impls as _impls
from bench.run.ends import CaseFailed, Ends, exec_peer, listen, open_ends, open_local
from bench.run.scenarios import CASE_TIMEOUT, Extras, Unit, unit_for

# Warm-up before counting: calls of the unit (each of WARM_LOOPS messages:
# one lost datagram does not fail it), then one call of WARM_MSGS.
WARM_CALLS = 20
WARM_LOOPS = 16
WARM_MSGS = 300
SETUP_WORK_ENV = "FASTSOCK_COUNT_TEST_SETUP_WORK"


@dataclass
class Task:
    """One case to count: N messages, and the multiples of N per interval."""

    index: int
    key: CaseKey
    n: int
    pattern: list[int]

    def to_json(self) -> dict[str, Any]:
        impl = _impls.get(self.key.impl)
        return {"index": self.index, "key": asdict(self.key),
                "impl_module": "" if impl.builtin else impl.module,
                "n": self.n, "pattern": self.pattern}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Task:
        key = CaseKey(**d["key"])
        if d.get("impl_module"):  # an impl from outside: known here as the parent knew it
            _impls.adopt(key.impl, str(d["impl_module"]))
        return cls(int(d["index"]), key, int(d["n"]), [int(m) for m in d["pattern"]])


class Marker:
    """``getppid()``, callgrind's dump trigger, counted: the k-th call
    writes part k."""

    def __init__(self) -> None:
        self.calls = 0
        self._getppid = os.getppid

    def __call__(self) -> int:
        self.calls += 1
        self._getppid()
        return self.calls


def _set_up(key: CaseKey) -> tuple[Ends, Unit]:
    impl = _impls.get(key.impl)
    asynchronous = impl.kind == "event loop"
    try:
        loops = impl.load()  # an event loop's: None, wrapped below
    except _impls.ImplError as exc:
        raise CaseFailed(str(exc)) from None
    # A count does not depend on placement: the kernel spreads the valgrind
    # processes and their (exec'd, native) peers best; nothing is pinned.
    if key.scenario == "connect":
        ends = listen(key, loops, placement="os")
    else:
        ends = open_ends(key, lambda k: open_local(k, start_peer=exec_peer, placement="os"),
                         loops)
    try:
        if asynchronous:
            from bench.run.eventloop import wrap  # asyncio only for these cases

            wrap(ends, key.impl, CASE_TIMEOUT)
        unit = unit_for(key, ends)
    except BaseException:
        ends.close()
        raise
    return ends, unit


def _setup_work() -> None:
    """The test hook: extra work before the first marker."""
    work = int(os.environ.get(SETUP_WORK_ENV, "0") or 0)
    if work > 0:
        junk = [str(i) * 3 for i in range(work)]
        del junk


def count_case(task: Task, marker: Marker) -> dict[str, Any]:
    """Set up, warm up, count the intervals, tear down; what the parent needs."""
    t0 = time.monotonic()
    ends, unit = _set_up(task.key)
    seen = Extras()
    try:
        _setup_work()
        for _ in range(WARM_CALLS):
            unit.time_loops(WARM_LOOPS, Extras())
        unit.time_loops(WARM_MSGS, Extras())
        gc.collect()
        gc.freeze()
        try:
            gc.collect(0)
            first = marker() + 1
            for m in task.pattern:
                ex = Extras()
                unit.time_loops(m * task.n, ex)
                gc.collect(0)  # every interval starts the collector's count afresh
                marker()
                seen.sent += ex.sent
                seen.delivered += ex.delivered
                seen.rounds += ex.rounds
                seen.lost += ex.lost
        finally:
            gc.unfreeze()
        meta = dict(ends.meta)
        meta.update(_impls.get(task.key.impl).metadata())  # where the loops came from
    finally:
        unit.close()
    return {"event": "case", "index": task.index, "first": first,
            "parts": len(task.pattern), "sent": seen.sent, "delivered": seen.delivered,
            "rounds": seen.rounds, "lost": seen.lost, "meta": meta,
            "seconds": round(time.monotonic() - t0, 3)}


def _say(out: TextIO, event: dict[str, Any]) -> None:
    out.write(json.dumps(event) + "\n")
    out.flush()


def main() -> int:
    """Tasks (:meth:`Task.to_json`) come one per line on standard input, the
    next when this process has said how the last one went; it ends at EOF."""
    out = os.fdopen(os.dup(1), "w")  # the parent's channel, close-on-exec
    os.dup2(2, 1)  # anything else printed (a peer's error, say) is stderr
    marker = Marker()
    _say(out, {"event": "start", "pid": os.getpid()})
    for line in sys.stdin:
        task = Task.from_json(json.loads(line))
        try:
            _say(out, count_case(task, marker))
        # RuntimeError: PeerError, CaseFailed, an event loop's EventLoopError
        except (OSError, RuntimeError, ValueError) as exc:
            text = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
            _say(out, {"event": "fail", "index": task.index, "reason": reason,
                       "markers": marker.calls})
    _say(out, {"event": "end", "markers": marker.calls})
    return 0


if __name__ == "__main__":
    sys.exit(main())
