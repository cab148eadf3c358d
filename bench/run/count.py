"""``run --measure instructions``: user-space instructions per message, counted.

Design note
-----------
A time run on a shared machine moves with the neighbours' load; the
number of instructions the measured process executes per message does
not.  This module counts them with valgrind's callgrind
(:mod:`bench.run.callgrind` says why that tool) and writes them as a pyperf
report like a time run's, one benchmark per case, its value instructions
per message (round trip, connection) of the measured side only: its user
space (interpreter, extension, libc), never the kernel's work.

The plan (:func:`plan`):

* modes whose work per message does not depend on timing, ``blocking`` and
  ``timeout`` (connect's too), are counted over intervals of N and 2N
  messages in one process, and the *difference* is divided by N:
  start-up, set-up and every per-call cost cancel;
* ``nonblocking`` retries after EAGAIN as often as the peer's timing says:
  six intervals (N, 2N, N, 2N, N, 2N) and a least-squares *fit* that takes
  the retries out by their count;
* :mod:`bench.run.intervals` says how, and how the calls are checked; a
  case whose timing-dependent work cannot be separated, or a datagram
  round trip lost, is counted again once, then fails with one line;
* ``spin`` is left out (:data:`LEFT_OUT`): its per-message work is busy
  polling.

N: intervals of at least :data:`TARGET` instructions (estimated per
scenario and impl, :data:`ESTIMATE`), never below :data:`MIN_N`
(``range`` caches small ints: below 257 the Python twin under-counts).
Batched cases count datagrams, in whole ``sendmmsg`` calls.

Running: the cases go to :func:`jobs` valgrind processes
(:mod:`bench.run.count_worker`) in balanced groups, deterministic cases
first in each (a retrying case leaves pymalloc in a state that moved a
later connect/python count by 0.35%); each process gets its next case when
it has reported the last, the peer runs natively, and each finished case
is checked, computed and saved at once (atomically, as a time run).
SIGINT and SIGTERM kill the valgrind processes (by pid), keep what
finished and end the run (exit 130, 143).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

import pyperf

from bench.analysis.report import DGRAM_TRANSPORTS, CaseKey, dump_suite
from bench.analysis.units import count_what, fmt_count
from bench.run import callgrind as _cg
from bench.run.axes import parse_threads
from bench.run.count_worker import Task
from bench.run.intervals import EVENT_SINGULAR, Count, Interval, Unsteady, solve
from bench.run.runner import Outcome, case_metadata, fmt_duration

PROG = "fastsock-bench run"
MEASURE = "instructions"
# Modes counted by difference; nonblocking is fitted; the rest left out.
DETERMINISTIC_MODES = ("blocking", "timeout")
FITTED_MODES = ("nonblocking",)
LEFT_OUT = {
    "spin": "spin is not counted: its work per message is busy polling, whose number of "
            "tries the peer's timing sets (64 KiB: 1-13% apart between runs, fitted or not)",
}
PATTERN_DIFFERENCE = (1, 2)
# Datagram streams end each call with a loop of end markers that turns as
# often as the peer takes to answer (a turn in a third of the calls on a
# busy machine): six intervals, nine (N, 2N) pairs, and when none has the
# same turns on both sides, turns that differ between intervals of one
# length for a fit to take them out (bench.run.intervals).
PATTERN_DATAGRAM = (1, 2, 1, 2, 1, 2)
PATTERN_FIT = (1, 2, 1, 2, 1, 2)
# Instructions per interval of N (a preset's): per-call noise (quickening,
# specialisation: 400-1000 instructions a call) stays below 0.03%.
TARGET = {"quick": 1e6, "default": 4e6, "full": 4e6}
# Fitted cases of interpreted loops get longer intervals: what timing adds
# to them (a retry's exception, and the collector's run it shifts into
# another interval: ~10K instructions each; an event loop's retry: ~60K)
# weighs less.  The compiled loops allocate nothing per retry.
FIT_TARGET_FACTOR = 3
# Batched cases: a datagram costs valgrind's syscall wrapper ~20 µs, more
# than its instructions; their calls are few, so half the target does
# (a quarter in --quick).
BATCH_TARGET_FACTOR = {"quick": 0.25, "default": 0.5, "full": 0.5}
MIN_N = 300
# Rough instructions per message, only to choose N (measured here).
ESTIMATE = {
    ("stream", "cython"): 600, ("stream", "python"): 2000,
    ("stream", "asyncio-sock"): 4200, ("stream", "asyncio-streams"): 8400,
    ("pingpong", "cython"): 1000, ("pingpong", "python"): 4500,
    ("pingpong", "asyncio-sock"): 8300, ("pingpong", "asyncio-streams"): 64000,
    ("connect", "cython"): 1900, ("connect", "python"): 40000,
}
DEFAULT_ESTIMATE = 5000
# Instructions per second under callgrind (pure bytecode; every message
# adds MESSAGE_S: its syscalls through valgrind, the kernel's copy), only
# to balance the groups.
RATE = 40e6
MESSAGE_S = 1.5e-5
CASE_START_S = 0.5
# Valgrind processes at most; fewer on fewer CPUs.
JOBS = 2
# Bound on one case in a valgrind process (seconds): the slowest default
# case takes ~25 s; beyond this the process is killed and the case failed.
CASE_STALL = 600.0
# Bound on a valgrind process's exit after its last case (seconds).
EXIT_WAIT = 30.0


class CountError(RuntimeError):
    """A count run that cannot start: one line, exit 2."""


def method(key: CaseKey) -> str | None:
    """'difference', 'fit' or None (left out: :data:`LEFT_OUT` says why)."""
    if key.mode in DETERMINISTIC_MODES:
        return "difference"
    if key.mode in FITTED_MODES:
        return "fit"
    return None


def left_out_reason(mode: str) -> str:
    return LEFT_OUT.get(mode, f"{mode} is not counted: its work per message depends on timing")


def n_for(key: CaseKey, preset: str) -> int:
    """Messages per unit interval: >= TARGET instructions, whole batches."""
    est = ESTIMATE.get((key.scenario, key.impl), DEFAULT_ESTIMATE) / key.batch
    target = TARGET.get(preset, TARGET["default"])
    if key.batch > 1:
        target *= BATCH_TARGET_FACTOR.get(preset, BATCH_TARGET_FACTOR["default"])
    elif method(key) == "fit" and key.impl != "cython":
        target *= FIT_TARGET_FACTOR
    n = max(MIN_N, math.ceil(target / est))
    return -(-n // key.batch) * key.batch


def plan(cases: list[CaseKey], preset: str) -> tuple[list[Task], list[CaseKey]]:
    """The tasks to count, in the cases' order, and the cases left out."""
    tasks: list[Task] = []
    left: list[CaseKey] = []
    for key in cases:
        how = method(key)
        if how is None:
            left.append(key)
            continue
        datagram = key.scenario == "stream" and key.transport in DGRAM_TRANSPORTS
        pattern = PATTERN_FIT if how == "fit" else PATTERN_DATAGRAM if datagram \
            else PATTERN_DIFFERENCE
        tasks.append(Task(len(tasks), key, n_for(key, preset), list(pattern)))
    return tasks, left


def cost(task: Task) -> float:
    """Rough seconds of a task under callgrind, to balance the groups."""
    est = ESTIMATE.get((task.key.scenario, task.key.impl), DEFAULT_ESTIMATE) / task.key.batch
    msgs = task.n * sum(task.pattern)
    return CASE_START_S + msgs * (est / RATE + MESSAGE_S)


def jobs() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    return max(1, min(JOBS, cpus))


def groups(tasks: list[Task], n: int) -> list[list[Task]]:
    """``n`` groups of about equal cost (the largest task to the least
    loaded group), each in plan order with its deterministic cases first."""
    out: list[list[Task]] = [[] for _ in range(n)]
    load = [0.0] * n
    for task in sorted(tasks, key=cost, reverse=True):
        i = load.index(min(load))
        out[i].append(task)
        load[i] += cost(task)
    return [sorted(g, key=lambda t: (method(t.key) != "difference", t.index)) for g in out if g]


# ---------------------------------------------------------------- processes


def _launcher() -> str:
    """``python -c`` code importing this very ``bench`` (not the cwd's)."""
    import bench

    root = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__ or "")))
    return (f"import sys; sys.path[0] = {root!r}; "
            "from bench.run.count_worker import main; sys.exit(main())")


class Worker:
    """One valgrind process and the tasks it still has to count."""

    def __init__(self, number: int, tasks: list[Task], outdir: str,
                 events: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
        self.number = number
        self.pending = collections.deque(tasks)
        self.current: Task | None = None
        self.started = time.monotonic()
        self.pid = 0  # the counted process's (valgrind's) pid, from its start event
        self.ended = False
        self.stalled = False
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)
        env = _cg.environment(dict(os.environ))
        cmd = _cg.command(outdir) + [sys.executable, "-c", _launcher()]
        # its own session: a terminal's Ctrl-C is the run's to handle
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, text=True, bufsize=1,
                                     start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, sink in ((self.proc.stdout, None), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, sink, events),
                             daemon=True).start()

    def _read(self, stream: IO[str], sink: collections.deque[str] | None,
              events: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
        for line in stream:
            if sink is not None:
                if line.strip():
                    sink.append(line.rstrip())
                continue
            try:
                events.put((self.number, json.loads(line)))
            except ValueError:
                self.stderr.append(line.rstrip())
        if sink is None:
            events.put((self.number, {"event": "eof"}))

    def feed(self) -> None:
        """Give the next task, or close its input: no more."""
        assert self.proc.stdin is not None
        self.current = self.pending.popleft() if self.pending else None
        self.started = time.monotonic()
        try:
            if self.current is None:
                self.proc.stdin.close()
            else:
                self.proc.stdin.write(json.dumps(self.current.to_json()) + "\n")
                self.proc.stdin.flush()
        except OSError:
            pass  # it died: its eof event says so

    def why_dead(self) -> str:
        if self.stalled:
            return f"no result within {CASE_STALL:g} s (valgrind process killed)"
        last = [ln for ln in self.stderr if ln.strip()]
        code = self.proc.poll()
        status = f"exit status {code}" if code is not None else "no answer"
        return f"valgrind process ended ({status})" + (f": {last[-1]}" if last else "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()  # by pid; its peers die with it (PR_SET_PDEATHSIG)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            pass


# ---------------------------------------------------------------- the run


@dataclass
class _State:
    tasks: list[Task]
    output: str
    common: dict[str, Any]
    benchmarks: dict[int, pyperf.Benchmark] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    retried: set[int] = field(default_factory=set)
    finished: int = 0
    start: float = field(default_factory=time.monotonic)


def common_metadata(version: str, left: list[CaseKey]) -> dict[str, Any]:
    """Metadata of every benchmark of a count report."""
    from pyperf._collect_metadata import collect_metadata

    from bench.run import fingerprint as _fingerprint

    meta = {k: v for k, v in collect_metadata().items()
            if k in ("cpu_model_name", "cpu_count", "platform", "hostname", "python_version",
                     "python_implementation", "load_avg_1min", "perf_version")}
    meta.update(_fingerprint.collect())
    meta.update(measure=MEASURE, count_tool="callgrind", valgrind_version=version,
                count_env=" ".join(f"{k}={v}" for k, v in _cg.ENV.items())
                + f" (unset: {', '.join(_cg.UNSET)})")
    if left:
        modes = sorted({k.mode for k in left})
        meta["count_left_out"] = f"{len(left)} cases: " + "; ".join(
            left_out_reason(m) for m in modes)
    return meta


def benchmark(task: Task, count: Count, ivs: list[Interval], event: dict[str, Any],
              common: dict[str, Any]) -> pyperf.Benchmark:
    key = task.key
    meta: dict[str, Any] = dict(case_metadata(key), name=key.name, unit="integer")
    meta.update(common)
    meta.update(event.get("meta") or {})
    meta.update(count_unit=f"instructions per {count_what(key.scenario)}",
                count_method=count.method, count_n=task.n,
                count_msgs=",".join(str(iv.msgs) for iv in ivs),
                count_ir=",".join(str(iv.instructions) for iv in ivs),
                count_setup_ir=int(event.get("setup_ir", 0)),
                count_calls=";".join(
                    f"{name}:{','.join(str(iv.calls[name]) for iv in ivs)}"
                    for name in _cg.CALLS if any(iv.calls[name] for iv in ivs)) or "-",
                date=time.strftime("%Y-%m-%dT%H:%M:%S"),
                duration=float(event.get("seconds", 0.0)))
    if count.method == "fit":
        meta["count_se"] = count.se
        meta["count_dof"] = count.dof
        for name, rate in count.per_msg.items():
            meta[f"{name}_per_msg"] = rate
        for name, instr in count.cost.items():
            meta[f"instr_per_{EVENT_SINGULAR[name]}"] = instr
    sent, delivered = int(event.get("sent", 0)), int(event.get("delivered", 0))
    if sent:
        meta.update(sent=sent, delivered=delivered, loss=1.0 - delivered / sent)
    if int(event.get("rounds", 0)):
        meta["loss"] = int(event.get("lost", 0)) / int(event["rounds"])
    run = pyperf.Run([count.value], metadata=meta, collect_metadata=False)
    return pyperf.Benchmark([run])


def _read_intervals(outdir: str, pid: int, task: Task, event: dict[str, Any]
                    ) -> list[Interval]:
    first, n = int(event["first"]), int(event["parts"])
    if n != len(task.pattern):
        raise _cg.CallgrindError(f"{n} intervals reported, {len(task.pattern)} asked")
    # the part the case's first marker ended: the previous case's teardown,
    # this one's set-up and warm-up, never counted (recorded to show it)
    event["setup_ir"] = _cg.part_total(_cg.part_path(outdir, pid, first - 1))
    out = []
    for i, m in enumerate(task.pattern):
        total, calls = _cg.read_part(_cg.part_path(outdir, pid, first + i))
        out.append(Interval(m * task.n, total, calls))
    # a stray getppid() would shift the parts: a set-up part (hundreds of
    # millions of instructions) among the intervals, or a piece of one
    # (fitted cases: retries alone can triple an interval)
    per = [iv.instructions / iv.msgs for iv in out]
    if method(task.key) == "difference" and max(per) > 3 * min(per):
        raise _cg.CallgrindError("intervals out of proportion (a stray getppid() call?)")
    return out


def _drop_parts(outdir: str, pid: int, upto: int) -> None:
    for k in _cg.parts(outdir, pid):
        if k <= upto:
            try:
                os.unlink(_cg.part_path(outdir, pid, k))
            except OSError:
                pass


def _save(state: _State) -> bool:
    suite = pyperf.BenchmarkSuite([state.benchmarks[i] for i in sorted(state.benchmarks)])
    try:
        dump_suite(suite, state.output)
    except OSError as exc:
        print(f"{PROG}: error: cannot write {state.output}: {exc.strerror or exc}",
              file=sys.stderr)
        return False
    return True


def _progress(state: _State, task: Task, text: str) -> None:
    state.finished += 1
    k, n = state.finished, len(state.tasks)
    elapsed = time.monotonic() - state.start
    eta = elapsed / k * (n - k)
    print(f"[{k}/{n}] {task.key.name}: {text}  (elapsed {fmt_duration(elapsed)}, "
          f"ETA {fmt_duration(eta)})", flush=True)


def _on_case(state: _State, w: Worker, outdir: str, event: dict[str, Any]) -> bool:
    """A case counted: check, compute, save; False when the report could
    not be written.  An unsteady case goes back to its process once."""
    task = w.current
    assert task is not None and int(event["index"]) == task.index
    deterministic = method(task.key) == "difference"
    problem = None
    count = None
    try:
        ivs = _read_intervals(outdir, w.pid, task, event)
        if int(event.get("lost", 0)):
            raise Unsteady(f"{event['lost']} of {event['rounds']} round trips lost")
        count = solve(task.key, ivs, deterministic)
        if not (math.isfinite(count.value) and count.value > 0):
            raise Unsteady(f"{count.method} gave {count.value:.1f} instructions per message")
    except (_cg.CallgrindError, Unsteady) as exc:
        problem, count = str(exc), None
    finally:
        _drop_parts(outdir, w.pid, int(event["first"]) + int(event["parts"]) - 1)
    if count is None:
        problem = problem or "no count"
        if task.index not in state.retried:
            state.retried.add(task.index)
            w.pending.appendleft(task)
            print(f"  {task.key.name}: counted again ({problem})", flush=True)
            return True
        state.failed.append((task.key.name, f"{problem} (twice)"))
        _progress(state, task, f"FAILED ({problem}, twice)")
        return True
    state.benchmarks[task.index] = benchmark(task, count, ivs, event, state.common)
    if not _save(state):
        return False
    extra = ""
    if count.method == "fit":
        extra = f" ±{count.se:.1f}, {count.per_msg.get('retries', 0):.3f} retries/msg"
    _progress(state, task, f"{fmt_count(task.key.scenario, count.value)} "
              f"({count.method}{extra}; {float(event.get('seconds', 0)):.1f} s)")
    return True


def execute(args: argparse.Namespace, tasks: list[Task], left: list[CaseKey], output: str,
            version: str) -> Outcome:
    """Count every task, saving the report after each; SIGINT and SIGTERM
    end it early (the valgrind processes killed, finished cases kept)."""
    state = _State(tasks, output, common_metadata(version, left))
    n_jobs = jobs()
    print(f"fastsock-bench: counting {len(tasks)} cases (user-space instructions, "
          f"{version} callgrind) in {n_jobs} process{'es' * (n_jobs != 1)}, "
          f"report {output}", flush=True)
    for mode in sorted({k.mode for k in left}):
        n = sum(k.mode == mode for k in left)
        print(f"fastsock-bench: {n} {mode} case{'s' * (n != 1)} left out: "
              f"{left_out_reason(mode)}", flush=True)
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if not interrupted:
            interrupted.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    outdir = tempfile.mkdtemp(prefix="fastsock-count-")
    events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
    workers = [Worker(i, g, outdir, events) for i, g in enumerate(groups(tasks, n_jobs))]
    write_error = False
    try:
        write_error = not _loop(args, state, workers, outdir, events, interrupted)
    finally:
        for w in workers:
            w.kill()
        shutil.rmtree(outdir, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)
    outcome = Outcome({"new": output}, len(tasks), len(state.benchmarks),
                      time.monotonic() - state.start, state.failed, write_error=write_error)
    if interrupted:
        outcome.signal = interrupted[0]
    return outcome


def _loop(args: argparse.Namespace, state: _State, workers: list[Worker], outdir: str,
          events: queue.Queue[tuple[int, dict[str, Any]]], interrupted: list[int]) -> bool:
    """Hand out tasks and take results until every process is done."""
    live = {w.number: w for w in workers}
    while live and not interrupted:
        try:
            number, event = events.get(timeout=0.2)
        except queue.Empty:
            for w in list(live.values()):
                if w.current is not None and time.monotonic() - w.started > CASE_STALL:
                    w.stalled = True
                    w.kill()  # its eof event fails the case
            continue
        if number not in live:
            continue
        w = live[number]
        kind = event.get("event")
        if kind == "start":
            w.pid = int(event["pid"])
            w.feed()
        elif kind == "case":
            if not _on_case(state, w, outdir, event):
                return False
            w.feed()
        elif kind == "fail":
            task = w.current
            assert task is not None
            _drop_parts(outdir, w.pid, int(event.get("markers", 0)))
            state.failed.append((task.key.name, str(event.get("reason", "failed"))))
            _progress(state, task, f"FAILED ({event.get('reason')})")
            if args.fail_fast:
                return True
            w.feed()
        elif kind == "end":
            w.ended = True
            stray = [k for k in _cg.parts(outdir, w.pid) if k > int(event["markers"])]
            if stray:
                print(f"{PROG}: warning: {len(stray)} unexpected callgrind parts "
                      "(a stray getppid() call?)", file=sys.stderr)
        elif kind == "eof":
            del live[number]
            lost = ([w.current] if w.current is not None else []) + list(w.pending)
            if not w.ended or lost:
                why = w.why_dead()
                for task in lost:
                    state.failed.append((task.key.name, why))
                    _progress(state, task, f"FAILED ({why})")
                if args.fail_fast:
                    return True
    return True


def refuse(args: argparse.Namespace) -> None:
    """What a count run does not take: CountError, one line."""
    if getattr(args, "base_python", None):
        raise CountError("--measure instructions needs no --base-python: a count does not "
                         "move with the machine, so base and candidate are two separate runs")
    if getattr(args, "remote", None):
        raise CountError("--measure instructions needs no --remote: it counts the measured "
                         "process's own instructions, which no other host changes")
    knobs = [f for f, v in (("-p", args.processes), ("-n", args.values), ("-w", args.warmups),
                            ("--min-time", args.min_time),
                            ("--loops", getattr(args, "loops", None)), ("--fast", args.fast),
                            ("--rigorous", args.rigorous), ("--affinity", args.affinity))
             if v not in (None, False)]
    if knobs:
        raise CountError(f"{', '.join(knobs)}: pyperf settings do not apply to --measure "
                         "instructions (one exact count per case)")
    threads = getattr(args, "threads", None)
    if threads and any(n != 1 for n in parse_threads(threads)):
        raise CountError("--threads above 1 cannot be counted: how the threads' messages "
                         "interleave depends on timing (count one connection)")

