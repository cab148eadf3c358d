"""``run --base-python``: base and candidate measured in one run, per case.

Design note
-----------
Two separate runs cannot be compared on a shared machine: the neighbours'
load, the CPU's frequency and the host's scheduling shift a whole run by
tens of percent (two default runs of one build, compared, flagged 80 of
144 cases here).  Nor can two processes a second apart: a pure CPU loop
here runs at speeds that wander by 20% from one 20 ms stretch to the next
and stay off for hundreds of milliseconds (lag-1 correlation 0.7), so the
worker processes of one case spread by 10-20% whatever they measure.  The
base and the candidate must therefore be timed as close together as the
work allows: value by value.

Lockstep (the default when the base's fastsock knows it): for each case,
one calibration worker (the candidate's) fixes the loops per value; then
``--processes`` slots, each one base worker and one candidate worker
started together.  Their timed calls (warmups and values) take turns,
coordinated through a socket per worker (:func:`alternate`;
bench.run.worker.Baton): a round starts when both have asked for a turn,
gives one call to each (the side that goes first alternates from round to
round and from slot to slot), and holds both until the round is over, so nothing either side
does between its values (pyperf's bookkeeping, the other's start-up,
metadata collection, exit) overlaps a timed call.  Value j of the base and
value j of the candidate of one slot are then a few milliseconds apart and
have seen the same machine; every run carries its ``lockstep_slot``, and
``compare`` tests the per-slot log ratios (bench.analysis.compare.paired_diffs).

A base whose fastsock predates lockstep (or speaks another version of
its turn protocol, bench.run.worker.LOCKSTEP_PROTOCOL), and any run whose
warmups pyperf calibrates (warmups not fixed), is interleaved worker by
worker instead, the previous scheme
(:func:`measure`: base, new, new, base, ... one process at a time), which
``compare`` tests as two groups of processes.

The base is another Python interpreter (a virtual environment with the
base build of fastsock installed; for A/A, the same one).  Its workers
start with a launcher that never puts the current directory on sys.path:
run from a candidate's clone, the base would otherwise import the
candidate's tree and compare it with itself.  Before anything runs, the
base must enumerate exactly the same cases (same selection, same matrix)
and report its own fingerprint (commit, implementation loaded), which its
report carries.  Each side's report is saved atomically after every case,
like a plain run's, so an interrupted run keeps both sides' finished cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import pyperf
from pyperf._manager import Manager
from pyperf._utils import create_environ

from bench.analysis.report import CaseKey
from bench.run.worker import LOCKSTEP_ENV, LOCKSTEP_PROTOCOL

# Bound on the base interpreter's start-up checks (seconds).
PROBE_TIMEOUT = 120.0
# Bound on any wait of the main process on a lockstep worker (seconds).
WAIT_TIMEOUT = 120.0
# The base's launcher: its own installed packages, never the cwd's tree.
BASE_LAUNCHER = "import sys; del sys.path[0]; from bench.cli import main; sys.exit(main())"
_FINGERPRINT_CODE = ("import sys; del sys.path[0]; import json; "
                     "from bench.run.fingerprint import collect; import bench.run.worker as w; "
                     "fp = collect(); fp['_lockstep'] = getattr(w, 'LOCKSTEP_PROTOCOL', 0); "
                     "print(json.dumps(fp))")


class BaseError(Exception):
    """The base interpreter cannot take part; str() is one line."""


@dataclass
class Base:
    python: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    program: tuple[str, ...] = ("-c", BASE_LAUNCHER, "run")
    lockstep: bool = False  # its workers take turns (a fastsock that knows the baton)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _probe(python: str, argv: list[str], env: dict[str, str], cwd: str | None = None) -> str:
    try:
        proc = subprocess.run([python, *argv], capture_output=True, text=True, cwd=cwd,
                              timeout=PROBE_TIMEOUT, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BaseError(f"base python {python} did not answer within {PROBE_TIMEOUT:g} s") \
            from None
    except OSError as exc:
        raise BaseError(f"cannot start base python {python}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise BaseError(f"base python {python} cannot run fastsock-bench: "
                        f"{_last_line(proc.stderr or proc.stdout)}")
    return proc.stdout


def prepare(python: str, forward: list[str], cases: list[CaseKey],
            need_compiled: bool) -> Base:
    """Check that ``python`` runs a fastsock with the same cases; fetch its
    fingerprint.  Raises :class:`BaseError` (one line) otherwise."""
    path = python if os.sep in python else (shutil.which(python) or python)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise BaseError(f"base python {python} is not an executable file")
    env = dict(os.environ)
    out = _probe(path, ["-c", BASE_LAUNCHER, "run", "--list", *forward], env)
    theirs = [line.strip() for line in out.splitlines() if line.strip()]
    ours = [key.name for key in cases]
    if theirs != ours:
        missing = sorted(set(ours) - set(theirs))
        extra = sorted(set(theirs) - set(ours))
        what = (f"{len(missing)} of ours missing (e.g. {missing[0]})" if missing else
                f"{len(extra)} extra (e.g. {extra[0]})" if extra else "in another order")
        raise BaseError(f"base python {python} enumerates other cases ({len(theirs)} vs "
                        f"{len(ours)}: {what}); base and candidate need the same case matrix")
    try:
        # from "/": the fingerprint falls back to the cwd's git checkout for
        # the commit of an installed fastsock, and the cwd is the candidate's
        fp = json.loads(_probe(path, ["-c", _FINGERPRINT_CODE], env, cwd=os.sep))
    except ValueError:
        raise BaseError(f"base python {python} printed no fingerprint") from None
    if not isinstance(fp, dict):
        raise BaseError(f"base python {python} printed no fingerprint")
    if need_compiled and fp.get("fastsock_loaded") != "cython":
        raise BaseError(f"base python {python} loads fastsock's "
                        f"{fp.get('fastsock_loaded', 'unknown')} loops, not the compiled ones; "
                        "build it there or select --impl python")
    # the turn protocol of both sides must be the same one
    lockstep = fp.pop("_lockstep", 0) == LOCKSTEP_PROTOCOL
    return Base(path, fp, lockstep=lockstep)


def _spawn(runner: pyperf.Runner, python: str, program: tuple[str, ...], calibrate: bool,
           env: dict[str, str], baton: socket.socket | None = None) -> _Worker:
    """Start one pyperf worker of the runner's current case (its command
    as pyperf's own manager builds it, with this side's interpreter)."""
    manager = Manager(runner)
    rfd, wfd = os.pipe()
    try:
        cmd = manager.worker_cmd(int(calibrate), 0, str(wfd))
        cmd[:1 + len(runner._program_args)] = [python, *program]
        fds = [wfd] + ([baton.fileno()] if baton is not None else [])
        proc = subprocess.Popen(cmd, env=env, pass_fds=fds, stdin=subprocess.DEVNULL)
    except BaseException as exc:
        os.close(rfd)
        if isinstance(exc, OSError):
            raise RuntimeError(f"cannot start worker {python}: {exc.strerror or exc}") from None
        raise
    finally:
        os.close(wfd)
    try:
        return _Worker(proc, rfd)
    except BaseException:  # a signal between the two: no orphan
        proc.kill()
        proc.wait()
        raise


class _Worker:
    """A started worker and the pipe its JSON result comes through."""

    def __init__(self, proc: subprocess.Popen[bytes], rfd: int) -> None:
        self.proc = proc
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, args=(rfd,), daemon=True)
        self.reader.start()

    def _read(self, rfd: int) -> None:
        with os.fdopen(rfd, "rb") as pipe:  # drained while it runs: no full pipe
            self.chunks.append(pipe.read())

    def result(self, side: str) -> pyperf.Benchmark:
        try:
            code = self.proc.wait(timeout=WAIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{side} worker did not exit within {WAIT_TIMEOUT:g} s") from None
        self.reader.join(WAIT_TIMEOUT)
        if code:
            raise RuntimeError(f"{side} worker failed with exit code {code}")
        data = b"".join(self.chunks).decode()
        try:
            suite = pyperf.BenchmarkSuite.loads(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"{side} worker sent no result ({exc})") from None
        return suite.get_benchmarks()[0]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def _talking(side: str, waiting_for: str) -> Iterator[None]:
    """Socket errors with a worker as one-line RuntimeErrors (a case failure)."""
    try:
        yield
    except socket.timeout:
        raise RuntimeError(f"lockstep: the {side} worker did not {waiting_for} within "
                           f"{WAIT_TIMEOUT:g} s") from None
    except OSError as exc:  # ECONNRESET: it died with a turn unread
        raise RuntimeError(f"lockstep: the {side} worker went away ({exc})") from None


def _next_turn(side: str, conn: socket.socket) -> bool:
    """True: the worker asks for a turn; False: it has finished (closed)."""
    with _talking(side, "answer"):
        got = conn.recv(1)
    if got not in (b"R", b""):
        raise RuntimeError(f"lockstep: the {side} worker sent {got!r}")
    return got == b"R"


def _timed_call(side: str, conn: socket.socket) -> None:
    """One timed call of a side: "G" out, "D" back."""
    with _talking(side, "finish its timed call"):
        conn.sendall(b"G")
        done = conn.recv(1)
    if done != b"D":
        raise RuntimeError(f"lockstep: the {side} worker stopped inside a timed call")


def alternate(conns: dict[str, socket.socket], first: str) -> int:
    """Run the workers' timed calls in rounds, one call a side; returns the
    calls given.  ``first`` goes first in the first round, the other side in
    the next, and so on (ABBA: an advantage of going first or second cancels
    within a slot).  A round starts when every side still running has asked
    for its turn ("R"; or closed: finished), so that no timed call overlaps
    the other side's start-up, bookkeeping or exit; a side's call is held
    after it ends ("D") until the round is over ("K"), so the two sides'
    last values run back to back and both wind down (pyperf's metadata,
    exit) after them, together."""
    sides = sorted(conns, key=lambda s: s != first)
    alive = list(sides)
    turns = rounds = 0
    while True:
        alive = [side for side in alive if _next_turn(side, conns[side])]
        if not alive:
            return turns
        for side in alive if rounds % 2 == 0 else alive[::-1]:
            _timed_call(side, conns[side])
            turns += 1
        rounds += 1
        for side in alive:
            with _talking(side, "take the round's end"):
                conns[side].sendall(b"K")


def lockstep(runner: pyperf.Runner, base: Base, new_program: tuple[str, ...],
             slot: int, first: str) -> dict[str, pyperf.Benchmark]:
    """One slot: a base worker and a candidate worker started together,
    timed value by value in turn (``first``'s value first)."""
    args = runner.args
    env = create_environ(args.inherit_environ, args.locale, args.copy_env)
    programs = {"base": (base.python, base.program), "new": (args.python, new_program)}
    workers: dict[str, _Worker] = {}
    conns: dict[str, socket.socket] = {}
    try:
        for side in sorted(programs, key=lambda s: s != first):
            mine, theirs = socket.socketpair()
            conns[side] = mine
            mine.settimeout(WAIT_TIMEOUT)
            try:
                side_env = dict(env, **{LOCKSTEP_ENV: f"{theirs.fileno()}:{slot}"})
                workers[side] = _spawn(runner, *programs[side], calibrate=False,
                                       env=side_env, baton=theirs)
            finally:
                theirs.close()
        alternate(conns, first)
        return {side: workers[side].result(side) for side in ("base", "new")}
    finally:  # killed first: a worker must not see its turn socket close and complain
        for worker in workers.values():
            worker.kill()
        for conn in conns.values():
            conn.close()


def calibrate(runner: pyperf.Runner, program: tuple[str, ...]) -> pyperf.Benchmark:
    """pyperf's loop calibration, one worker of this interpreter."""
    args = runner.args
    env = create_environ(args.inherit_environ, args.locale, args.copy_env)
    worker = _spawn(runner, args.python, program, calibrate=True, env=env)
    try:
        return worker.result("calibration")
    finally:
        worker.kill()


def measure_lockstep(runner: pyperf.Runner, base: Base,
                     new_program: tuple[str, ...]) -> dict[str, pyperf.Benchmark]:
    """One case in lockstep: calibration (new side), then ``--processes``
    slots, the side that goes first alternating from slot to slot."""
    args = runner.args
    saved_loops = args.loops
    sides: dict[str, pyperf.Benchmark] = {}
    try:
        if not args.loops:
            cal = calibrate(runner, new_program)
            args.loops = cal.get_runs()[-1].get_loops()
            sides["new"] = cal  # pyperf keeps calibration runs (no values) too
        for slot in range(args.processes):
            got = lockstep(runner, base, new_program, slot, "base" if slot % 2 == 0 else "new")
            for side, bench in got.items():
                _add_runs(sides, side, bench)
    finally:
        args.loops = saved_loops
    return sides


def in_lockstep(base: Base, args: Any) -> bool:
    """Lockstep when the base speaks the protocol and warmups are fixed
    (pyperf's warmup calibration is a worker by itself)."""
    return base.lockstep and args.warmups is not None


def measure_case(runner: pyperf.Runner, base: Base, new_program: tuple[str, ...],
                 call: Callable[[], pyperf.Benchmark]) -> dict[str, pyperf.Benchmark]:
    """Lockstep when it can (:func:`in_lockstep`), else worker by worker."""
    if in_lockstep(base, runner.args):
        return measure_lockstep(runner, base, new_program)
    return measure(runner, base, new_program, call)


def order(processes: int) -> list[str]:
    """Which side each worker of a case belongs to: pairs alternate which
    side goes first (base new, new base, ...), ``processes`` per side."""
    out: list[str] = []
    for i in range(processes):
        out += ["base", "new"] if i % 2 == 0 else ["new", "base"]
    return out


def measure(runner: pyperf.Runner, base: Base, new_program: tuple[str, ...],
            call: Callable[[], pyperf.Benchmark]) -> dict[str, pyperf.Benchmark]:
    """One case, interleaved: returns {"base": Benchmark, "new": Benchmark}.

    ``call`` runs ``runner.bench_time_func`` for this case with the
    runner's current settings; this function sets, per worker, the
    interpreter, its launcher, one process and the loops.
    """
    args = runner.args
    saved = (args.python, runner._program_args, args.processes, args.loops, args.warmups)
    sides: dict[str, pyperf.Benchmark] = {}
    try:
        for side in order(saved[2]):
            if side == "base":
                args.python, runner._program_args = base.python, base.program
            else:
                args.python, runner._program_args = saved[0], new_program
            args.processes = 1
            bench = call()
            last = bench.get_runs()[-1]
            if not args.loops:  # the first worker calibrated: everyone uses its loops
                args.loops = last.get_loops()
            if args.warmups is None:  # likewise for calibrated warmups (--rigorous)
                args.warmups = len(last.warmups or ())
            _add_runs(sides, side, bench)
    finally:
        (args.python, runner._program_args, args.processes, args.loops,
         args.warmups) = saved
    return sides


def _add_runs(sides: dict[str, pyperf.Benchmark], side: str, bench: pyperf.Benchmark) -> None:
    """One side's benchmark of the case, its runs in the order they ran."""
    if side in sides:
        sides[side].add_runs(bench)
    else:
        sides[side] = bench


def new_id() -> str:
    """One id shared by both reports of an interleaved run."""
    return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


def base_output(output: str) -> str:
    root, ext = os.path.splitext(output)
    return f"{root}.base{ext or '.json'}"


def describe(base: Base) -> str:
    fp = base.fingerprint
    return (f"base: {base.python} (fastsock {fp.get('fastsock_version', '?')}, commit "
            f"{fp.get('fastsock_commit', '?')}, {fp.get('fastsock_loaded', '?')}); new: "
            f"{sys.executable}")
