"""``fastsock-bench run``: the pyperf runner over the case matrix.

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
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import pyperf

import fastsock

from bench import _interleave
from bench import _matrix as M
from bench import _remote
from bench._report import SCHEMA_VERSION, CaseKey, dump_suite, load_report
from bench._units import fmt_value

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


class UsageError(Exception):
    """Bad command-line input: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse quotes stray arguments raw: a newline (or any control
        # character) in one would break the one-line error; escape it
        raise UsageError("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """The flags a worker needs to enumerate the same cases."""
    g = p.add_argument_group("selection (comma lists)")
    g.add_argument("--scenario", help=f"{','.join(M.SCENARIOS)} (default: all)")
    g.add_argument("--transport", help=f"{','.join(M.TRANSPORTS)} (default: all available)")
    g.add_argument("--mode", help=f"{','.join(M.MODES)} (default: all)")
    g.add_argument("--size", help="bytes, e.g. 64,4k,1M (default: the preset's sizes;"
                   " connect cases carry no payload: size 0 always)")
    g.add_argument("--impl", help=f"{','.join(M.ALL_IMPLS)} (default: the twins and"
                   " asyncio-*; --full adds uvloop-* when installed)")
    g.add_argument("--batch", help="datagrams per syscall of datagram stream cases, e.g. 1,32"
                   " (default: the preset's; > 1 is compiled only: sendmmsg)")
    g.add_argument("--remote", metavar="HOST:PORT",
                   help="measure against `fastsock-bench serve` there (TCP and UDP cases)")
    pre = p.add_mutually_exclusive_group()
    pre.add_argument("--quick", action="store_const", dest="preset", const="quick",
                     help="smoke run: one small size, 1 process, 3 values")
    pre.add_argument("--full", action="store_const", dest="preset", const="full",
                     help="every size")
    p.set_defaults(preset="default")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, allow_abbrev=False,
                description="Measure fastsock's loops (compiled and pure Python) with pyperf.")
    add_selection_args(p)
    p.add_argument("--list", action="store_true", help="print the selected cases and exit")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="report path (default: results/<YYYYmmdd-HHMMSS>-<host>.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed case")
    p.add_argument("--no-html", action="store_true", help="do not write the HTML report")
    p.add_argument("--base-python", metavar="PYTHON",
                   help="also measure a base build: this interpreter's fastsock, in lockstep "
                   "with this one's, value by value; 16 processes a case and side unless -p "
                   "(or --quick, --fast, --rigorous) "
                   "(see docs/compare.md)")
    p.add_argument("--base-output", metavar="PATH",
                   help="the base's report with --base-python (default: OUTPUT with .base.json)")
    p.add_argument("--token", help="the --remote server's token (default: $FASTSOCK_TOKEN,"
                   " which keeps it out of the process list)")
    g = p.add_argument_group("pyperf settings (override the preset)")
    knobs = g.add_mutually_exclusive_group()
    knobs.add_argument("--fast", action="store_true", help="pyperf --fast")
    knobs.add_argument("--rigorous", action="store_true", help="pyperf --rigorous")
    g.add_argument("-p", "--processes", type=int, metavar="N", help="worker processes per case")
    g.add_argument("-n", "--values", type=int, metavar="N", help="values per process")
    g.add_argument("-w", "--warmups", type=int, metavar="N", help="warmup values per process")
    g.add_argument("--min-time", type=float, metavar="SECONDS", help="minimum time per value")
    g.add_argument("--affinity", metavar="CPUS", help="pin workers to these CPUs (e.g. 0 or 0-1)")
    g.add_argument("-v", "--verbose", action="store_true", help="pyperf's verbose output")
    return p


@dataclass
class Plan:
    selection: M.Selection
    cases: list[CaseKey]
    forward: list[str] = field(default_factory=list)  # selection flags for workers
    metadata: dict[str, Any] = field(default_factory=dict)  # for every benchmark


def make_plan(args: argparse.Namespace) -> Plan:
    from bench import _transports as T

    def lst(value: str | None, allowed: Sequence[str], what: str) -> tuple[str, ...]:
        return M.parse_list(value, allowed, what) if value else tuple(allowed)

    sel = M.Selection(
        scenarios=lst(args.scenario, M.SCENARIOS, "scenario"),
        transports=(M.parse_list(args.transport, M.TRANSPORTS, "transport") if args.transport
                    else M.PRESET_TRANSPORTS[args.preset]),
        modes=lst(args.mode, M.MODES, "mode"),
        impls=M.select_impls(args.impl, args.preset, M.uvloop_installed()),
        sizes=M.parse_sizes(args.size) if args.size else None,
        preset=args.preset,
        batches=M.parse_batches(args.batch) if args.batch else None,
    )
    available = T.available()
    if getattr(args, "remote", None):  # the server's address family; no Unix
        available = _remote.transports(args.remote, args.transport)
    # `--transport all` means every transport this machine has: only named
    # transports are "asked explicitly" (a missing one is then an error)
    explicit = bool(args.transport) and args.transport.strip() != "all"
    sel = _connect_is_local(sel, args)
    cases = M.cases(sel, max_dgram=T.max_datagrams(), available=available,
                    explicit_transports=explicit, batching=_batching(),
                    explicit_scenarios=_named(args.scenario), explicit_modes=_named(args.mode))
    forward: list[str] = []
    for flag in ("scenario", "transport", "mode", "size", "impl", "remote", "batch"):
        value = getattr(args, flag)
        if value:
            forward += [f"--{flag}", value]
    if args.preset != "default":
        forward.append(f"--{args.preset}")
    return Plan(sel, cases, forward)


def _named(value: str | None) -> bool:
    """A selection flag naming items, not left out or ``all``."""
    return bool(value) and value.strip() != "all"  # type: ignore[union-attr]


def _connect_is_local(sel: M.Selection, args: argparse.Namespace) -> M.Selection:
    """connect plays both ends in the measured process: nothing to do with
    a --remote server.  Asked for by name, an error; otherwise skipped."""
    if not getattr(args, "remote", None) or "connect" not in sel.scenarios:
        return sel
    if _named(args.scenario):
        raise M.MatrixError("connect cases run on one host only: not with --remote")
    from dataclasses import replace

    return replace(sel, scenarios=tuple(s for s in sel.scenarios if s != "connect"))


def _batching() -> bool:
    """The compiled loops are here and batch (sendmmsg/recvmmsg: Linux)."""
    return bool(getattr(fastsock.implementations().get("cython"), "HAVE_MMSG", False))


def case_metadata(key: CaseKey) -> dict[str, Any]:
    return {
        "scenario": key.scenario,
        "transport": key.transport,
        "mode": key.mode,
        "size": key.size,
        "impl": key.impl,
        "batch": key.batch,
        "fastsock_schema": SCHEMA_VERSION,
    }


def _make_runner(forward: list[str]) -> pyperf.Runner:
    from bench._worker import HookEntry

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


# ---------------------------------------------------------------- worker


def worker_main(argv: list[str]) -> int:
    """Inside a pyperf worker: enumerate the same cases, run task N."""
    from bench._worker import Case

    sel_parser = _Parser(prog=PROG, allow_abbrev=False, add_help=False)
    add_selection_args(sel_parser)
    args, rest = sel_parser.parse_known_args(argv)
    plan = make_plan(args)
    runner = _make_runner(plan.forward)
    runner.parse_args(rest)
    for key in plan.cases:
        case = Case(key, remote=args.remote)
        runner.bench_time_func(key.name, case.time_func, metadata=case_metadata(key))
    return 0


# ------------------------------------------------------------------ main


def default_output() -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    host = socket.gethostname().split(".")[0] or "host"
    return os.path.join("results", f"{stamp}-{host}.json")


def check_output(path: str, overwrite: bool, created_default: bool) -> None:
    # dirname before abspath: abspath("new/") drops the slash, and the
    # parent of a directory name must not pass for the report's directory
    parent = os.path.abspath(os.path.dirname(path) or os.curdir)
    if created_default:
        os.makedirs(parent, exist_ok=True)
    if os.path.isdir(path):
        raise UsageError(f"output {path} is a directory")
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"output {path} exists (use --overwrite to replace it)")
    if not os.path.isdir(parent):
        raise UsageError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"output directory {parent} is not writable")


def pyperf_args(args: argparse.Namespace) -> list[str]:
    out = list(PRESET_PYPERF[args.preset])
    if args.min_time is not None and "--loops" in out:
        # an explicit minimum time asks for calibration: drop fixed loops
        i = out.index("--loops")
        del out[i:i + 2]
    if args.base_python and args.preset != "quick":
        # a gate: enough lockstep slots for compare to call 10% in every case
        i = out.index("--processes")
        out[i + 1] = str(GATE_PROCESSES)
    if args.fast:
        out = ["--fast"]
    elif args.rigorous:
        out = ["--rigorous"]
    for flag in ("processes", "values", "warmups", "min_time"):
        value = getattr(args, flag)
        if value is not None:
            # 0 warmups is valid pyperf; every other knob must be positive
            # (and finite: --min-time nan would reach pyperf unchecked)
            low_ok = 0 if flag == "warmups" else None
            if not (math.isfinite(value) and (value > 0 or value == low_ok)):
                cmp = ">= 0" if flag == "warmups" else "> 0"
                raise UsageError(f"--{flag.replace('_', '-')} must be {cmp}")
            out += [f"--{flag.replace('_', '-')}", str(value)]
    if args.affinity:
        out += ["--affinity", args.affinity]
    out += ["--verbose"] if args.verbose else ["--quiet"]
    out += ["--hook", "fastsock", "--inherit-environ", ",".join(INHERIT)]
    return out


class _Interrupted(BaseException):
    pass


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def main_run(argv: list[str]) -> int:
    if "--worker" in argv:
        return worker_main(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        remote = None
        if args.remote:  # find the server first; workers get its numeric address
            if args.token is not None:
                os.environ[_remote.TOKEN_ENV] = args.token  # workers inherit it
            remote = _remote.prepare(args.remote, None)
            args.remote = remote.address
        plan = make_plan(args)
        if remote is not None:
            plan.metadata = _remote.check_plan(remote, plan.cases, args.transport)
        if "cython" in plan.selection.impls and fastsock.IMPLEMENTATION != "cython":
            raise UsageError(
                "the compiled extension is not loaded (FASTSOCK_PUREPYTHON set or not built); "
                "run with --impl python"
            )
        if args.list:
            for key in plan.cases:
                print(key.name)
            print(f"{len(plan.cases)} cases", file=sys.stderr)
            return 0
        pargs = pyperf_args(args)  # before check_output, which may create results/
        output = args.output or default_output()
        if args.base_output and not args.base_python:
            raise UsageError("--base-output needs --base-python")
        base = None
        outputs = {"new": output}
        if args.base_python:
            outputs["base"] = args.base_output or _interleave.base_output(output)
            if os.path.abspath(outputs["base"]) == os.path.abspath(output):
                raise UsageError("--base-output must differ from the report's path")
        for path in outputs.values():
            check_output(path, args.overwrite, created_default=args.output is None)
        if args.base_python:
            base = _interleave.prepare(args.base_python, plan.forward, plan.cases,
                                       need_compiled="cython" in plan.selection.impls)
    except (UsageError, M.MatrixError, _remote.RemoteError, _interleave.BaseError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return _execute(args, plan, outputs, pargs, base)


def _execute(args: argparse.Namespace, plan: Plan, outputs: dict[str, str], pargs: list[str],
             base: _interleave.Base | None = None) -> int:
    from bench import _fingerprint, _summary

    output = outputs["new"]
    fingerprints = {"new": _fingerprint.collect()}
    fingerprints["new"].update(plan.metadata)  # the remote server's (remote_*), if any
    if base is not None:
        pair = _interleave.new_id()
        fingerprints["base"] = dict(base.fingerprint, **plan.metadata)
        for side in fingerprints:
            fingerprints[side].update(interleaved=pair, interleaved_side=side)
    runner = _make_runner(plan.forward)
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

            def call() -> pyperf.Benchmark:
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
                    return 1
            elapsed = time.monotonic() - start
            eta = elapsed / k * (n - k)
            figures = fmt_value(key.scenario, key.size, got["new"].median())
            if "base" in got:
                figures = (f"base {fmt_value(key.scenario, key.size, got['base'].median())},"
                           f" new {figures}")
            print(
                f"[{k}/{n}] {key.name}: {figures}"
                f"  ({time.monotonic() - t_case:.1f} s; elapsed {_fmt_duration(elapsed)},"
                f" ETA {_fmt_duration(eta)})",
                flush=True,
            )
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    total = time.monotonic() - start  # every finished case is already saved
    done = len(benchmarks["new"])
    saved = " and ".join(outputs[side] for side in sorted(outputs, key=lambda s: s != "new"))
    if interrupted:
        name = signal.Signals(interrupted[0]).name
        print(f"fastsock-bench: interrupted by {name} after {done} of {n} cases;"
              f" {'saved ' + saved if done else 'nothing finished, no report'}",
              file=sys.stderr)
        return 128 + interrupted[0]
    if done:
        report = load_report(output)  # what is printed is what was stored
        print()
        print(_summary.render_report(report))
        if base is not None:
            print()
            print(_summary.render_interleaved(load_report(outputs["base"]), report))
        if not args.no_html:
            try:  # the HTML page is an extra: its failure must not hide the run
                _summary.write_html_beside(output, report)
            except Exception as exc:  # any plotting error
                print(f"{PROG}: warning: no HTML report ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})", file=sys.stderr)
    print(f"\n{done} of {n} cases in {_fmt_duration(total)}; "
          f"report{'s' if base is not None else ''}: {saved if done else '(none)'}")
    if failed:
        print(f"{len(failed)} case(s) failed:", file=sys.stderr)
        for name, reason in failed:
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    return 0


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
