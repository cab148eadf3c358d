"""The pyperf runner over the case matrix (``fastsock-bench run``'s engine).

Design note
-----------
pyperf runs each benchmark in fresh worker processes that re-execute the
program.  Four of its habits shape this module:

* workers re-execute ``sys.argv[0]``: the Runner gets a launcher
  (:func:`worker_program`: ``python -c ... run``, importing what this
  process imported, not the cwd's tree) and the selection flags are
  forwarded with ``add_cmdline_args``, so a worker enumerates the same
  cases and pyperf's task index picks the same one;
* workers get a cleaned environment: ``FASTSOCK_*`` travel with
  ``--inherit-environ``;
* pyperf's ``-o`` is not atomic and refuses existing files, so the suite
  writes its own report, after every benchmark (atomic rename): an
  interrupted run keeps everything that finished;
* pyperf turns Ctrl-C into ``exit(1)`` and ``--timeout`` ends the whole
  run, so stalls are bounded inside the worker (socket timeouts) and
  SIGINT/SIGTERM are handled here (exit 130/143 after saving).

A failed case (its worker exits non-zero with a one-line reason) is
recorded and the run goes on; the exit status says so at the end.

The command line (flags, the plan, output checks, the closing summary) is
:mod:`bench.cli.run`; this module runs a plan and reports what happened
(:class:`Outcome`), printing only the progress lines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyperf

import fastsock
from bench.analysis.report import SCHEMA_VERSION, CaseKey, dump_suite
from bench.analysis.units import fmt_value
from bench.run import lockstep as _interleave
from bench.run import matrix as M

PROG = "fastsock-bench run"

# pyperf settings of each preset: processes, values, warmups, and either a
# minimum time per value (s) or fixed loops.  A worker process costs about
# 0.3 s to start here, so the default's budget (<= 10 min for 120 cases on
# 2 cores) goes to processes, not long values: 8 processes per case x 6
# values of >= 10 ms.  Six short values rather than three of 20 ms (same
# time): in a lockstep run (--base-python) each value is paired with the
# other side's, and the median of 6 pairs 10 ms apart is steadier than of
# 3 pairs 20 ms apart (slot-to-slot spread of the log ratio, median over
# the default's 120 cases, one A/A run each: 0.027 against 0.044;
# docs/compare.md).  --quick fixes
# the loops, which skips pyperf's calibration process: a smoke run, not a
# measurement.
PRESET_PYPERF = {
    "quick": ["--processes", "1", "--values", "3", "--warmups", "1", "--loops", "1000"],
    "default": ["--processes", "8", "--values", "6", "--warmups", "1", "--min-time", "0.01"],
    "full": ["--processes", "8", "--values", "6", "--warmups", "1", "--min-time", "0.01"],
}
# Processes (lockstep slots) per case and side of a run with a base
# (--base-python) unless -p says otherwise.  A 10% change on a third of the
# default's 120 cases, caught: 39 of 40 with 8 slots, 37 of 40 with 12,
# 40 of 40 with 16, never a false call (one A/A run each, docs/compare.md).
# 8 stay the plain run's default (its 10-minute budget).
GATE_PROCESSES = 16
# Environment variables workers must see (pyperf cleans the rest).
# FASTSOCK_TOKEN: the remote server's token, kept off workers' command lines.
INHERIT = ("FASTSOCK_PUREPYTHON", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR", "FASTSOCK_TOKEN")


def case_metadata(key: CaseKey) -> dict[str, Any]:
    return {
        "scenario": key.scenario,
        "transport": key.transport,
        "mode": key.mode,
        "size": key.size,
        "impl": key.impl,
        "batch": key.batch,
        "sockbuf": key.sockbuf,
        "threads": key.threads,
        "nodelay": int(key.nodelay),
        "fastsock_schema": SCHEMA_VERSION,
        "measure": "time",  # run --measure instructions: bench.run.count
    }


def make_runner(forward: list[str]) -> pyperf.Runner:
    from bench.run.worker import HookEntry

    def add_cmdline_args(cmd: list[str], args: Any) -> None:
        cmd.extend(forward)
        if args.quiet:
            cmd.append("--quiet")

    return pyperf.Runner(
        program_args=worker_program(),
        add_cmdline_args=add_cmdline_args,
        hooks=[HookEntry()],
    )


def worker_program() -> tuple[str, ...]:
    """How pyperf starts a worker: ``python -c LAUNCHER run ...``.

    ``python -m bench`` would put the current directory first on sys.path:
    run from a clone after ``pip install .``, the workers would then import
    the clone's uncompiled tree while this process measures the installed
    build (and refuse every cython case).  The launcher drops that entry
    unless this process's own packages come from the current directory, so
    a worker imports exactly what this process imported.
    """
    import bench

    here = os.path.abspath(os.getcwd())
    roots = {os.path.dirname(os.path.dirname(os.path.abspath(m.__file__ or "")))
             for m in (bench, fastsock)}
    keep_cwd = here in roots
    code = ("import sys; " + ("" if keep_cwd else "del sys.path[0]; ")
            + "from bench.cli import main; sys.exit(main())")
    return ("-c", code, "run")


@dataclass
class Plan:
    """The cases a run measures, the selection flags its workers get (so
    they enumerate the same cases) and metadata for every benchmark."""

    selection: M.Selection
    cases: list[CaseKey]
    forward: list[str] = field(default_factory=list)  # selection flags for workers
    metadata: dict[str, Any] = field(default_factory=dict)  # for every benchmark


@dataclass
class Outcome:
    """What a run did: every finished case is saved already."""

    outputs: dict[str, str]  # side ("new", "base") -> report path
    total: int  # cases planned
    done: int  # cases measured and saved
    seconds: float
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case, one-line reason)
    signal: int | None = None  # the signal that interrupted it
    write_error: bool = False  # a report could not be written: the run stopped


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def execute(args: argparse.Namespace, plan: Plan, outputs: dict[str, str], pargs: list[str],
            base: _interleave.Base | None = None) -> Outcome:
    """Measure every case of ``plan`` (with ``base``: in lockstep with it),
    saving the report(s) after each; SIGINT and SIGTERM end it early."""
    from bench.run import fingerprint as _fingerprint

    output = outputs["new"]
    fingerprints = {"new": _fingerprint.collect()}
    fingerprints["new"].update(plan.metadata)  # the remote server's (remote_*), if any
    if base is not None:
        pair = _interleave.new_id()
        fingerprints["base"] = dict(base.fingerprint, **plan.metadata)
        for side in fingerprints:
            fingerprints[side].update(interleaved=pair, interleaved_side=side)
    runner = make_runner(plan.forward)
    runner.parse_args(pargs)
    new_program = runner._program_args

    interrupted: list[int] = []
    # Raise only while pyperf runs a case (it kills the worker on the way
    # out); elsewhere (saving, printing) the flag is enough: the loop stops
    # at its next turn, and a half-written save or print is never cut.
    in_pyperf = [False]

    def on_signal(signum: int, _frame: Any) -> None:
        if not interrupted:
            interrupted.append(signum)
        if in_pyperf[0]:
            raise KeyboardInterrupt

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    benchmarks: dict[str, list[pyperf.Benchmark]] = {side: [] for side in outputs}
    failed: list[tuple[str, str]] = []
    n = len(plan.cases)
    start = time.monotonic()
    print(f"fastsock-bench: {n} cases, preset {args.preset}, report {output}", flush=True)
    if base is not None:
        how = "in lockstep, value by value" if _interleave.in_lockstep(base, runner.args) \
            else "worker by worker"
        print(f"fastsock-bench: interleaved with the base, {how}; base report "
              f"{outputs['base']}\n  {_interleave.describe(base)}", flush=True)
    try:
        for k, key in enumerate(plan.cases, 1):
            if interrupted:
                break
            t_case = time.monotonic()
            metadata = case_metadata(key)

            def call(k: int = k, key: CaseKey = key,
                     metadata: dict[str, Any] = metadata) -> pyperf.Benchmark:
                # the worker enumerates the same cases: task k-1 is this one
                runner._worker_task = k - 1
                runner._bench_names.discard(key.name)  # several workers of one case
                bench = runner.bench_time_func(key.name, _never, metadata=metadata)
                assert bench is not None
                return bench

            try:
                in_pyperf[0] = True
                said = io.StringIO()
                try:
                    if interrupted:  # a signal just before the flag was set
                        raise KeyboardInterrupt
                    # pyperf's main process prints each result even when
                    # quiet; the progress line below says it in our units.
                    # Kept, and shown, when the case fails.
                    with contextlib.redirect_stdout(said):
                        if base is None:
                            got = {"new": call()}
                        else:
                            runner._worker_task = k - 1  # lockstep spawns its own workers
                            got = _interleave.measure_case(runner, base, new_program, call)
                finally:
                    in_pyperf[0] = False
            except (KeyboardInterrupt, SystemExit, RuntimeError, ValueError) as exc:
                if interrupted:
                    break
                for line in said.getvalue().splitlines():
                    if line.strip() and "Mean +- std dev" not in line:
                        print(f"  pyperf: {line}", file=sys.stderr)
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                failed.append((key.name, reason))
                print(f"[{k}/{n}] {key.name}: FAILED ({reason})", flush=True)
                if args.fail_fast:
                    break
                continue
            for side, bench in got.items():
                bench.update_metadata(fingerprints[side])
                benchmarks[side].append(bench)
            # the base first: a report "new" never holds a case its base lacks
            for side in sorted(outputs, key=lambda s: s != "base"):
                if not _save(benchmarks[side], outputs[side]):
                    return Outcome(outputs, n, len(benchmarks["new"]) - 1,
                                   time.monotonic() - start, failed, write_error=True)
            elapsed = time.monotonic() - start
            eta = elapsed / k * (n - k)
            figures = fmt_value(key.scenario, key.size, got["new"].median())
            if "base" in got:
                figures = (f"base {fmt_value(key.scenario, key.size, got['base'].median())},"
                           f" new {figures}")
            print(
                f"[{k}/{n}] {key.name}: {figures}"
                f"  ({time.monotonic() - t_case:.1f} s; elapsed {fmt_duration(elapsed)},"
                f" ETA {fmt_duration(eta)})",
                flush=True,
            )
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    outcome = Outcome(outputs, n, len(benchmarks["new"]), time.monotonic() - start, failed)
    if interrupted:
        outcome.signal = interrupted[0]
    return outcome


def _save(benchmarks: list[pyperf.Benchmark], output: str) -> bool:
    """Save the report; a failure (disk full, directory gone) is one line."""
    try:
        dump_suite(pyperf.BenchmarkSuite(benchmarks), output)
    except OSError as exc:
        print(f"{PROG}: error: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


def _never(loops: int) -> float:  # the main process never times anything
    raise AssertionError("time function called outside a worker")
