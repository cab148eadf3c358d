"""``run --base-python``: base and candidate measured interleaved, per case.

Design note
-----------
``compare`` tests per-process medians: its unit is the worker process.
That is only sound when the base's and the candidate's processes saw the
same machine.  Two separate runs do not: on a shared machine the
neighbours' load, CPU frequency and caches shift a whole run by tens of
percent, and eight processes a side cannot tell such a shift from a
change (two default runs of one build, compared, flagged 80 of 144 cases
here).  Interleaving at the run level (base, candidate, base, ...) only
helps as far as the drift is slower than a whole run.

So this mode interleaves at the finest unit there is, the worker process:
for each case, one pyperf worker of one interpreter, then one of the
other, in the order base, new, new, base, base, new, ... (pairs alternate
which side goes first, so a drift that is linear within a case adds the
same to both sides), each side getting ``--processes`` workers.  Both
sides run the same number of loops per value: the first worker calibrates,
the rest reuse its figure (the same work per value on both sides; no
calibration process per side).  Every worker of one case runs within a
few seconds, so whatever the machine does then, it does to both.

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

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pyperf

from bench._report import CaseKey

# Bound on the base interpreter's start-up checks (seconds).
PROBE_TIMEOUT = 120.0
# The base's launcher: its own installed packages, never the cwd's tree.
BASE_LAUNCHER = "import sys; del sys.path[0]; from bench.cli import main; sys.exit(main())"
_FINGERPRINT_CODE = ("import sys; del sys.path[0]; import json; "
                     "from bench._fingerprint import collect; print(json.dumps(collect()))")


class BaseError(Exception):
    """The base interpreter cannot take part; str() is one line."""


@dataclass
class Base:
    python: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    program: tuple[str, ...] = ("-c", BASE_LAUNCHER, "run")


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
    return Base(path, fp)


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
                args.warmups = len(last.warmups)
            if side in sides:
                sides[side].add_runs(bench)
            else:
                sides[side] = bench
    finally:
        (args.python, runner._program_args, args.processes, args.loops,
         args.warmups) = saved
    return sides


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
