"""``fastsock-bench run``: the flags, the plan, the checks, the closing summary.

Design note
-----------
This module turns a command line into a :class:`bench.run.runner.Plan`
(the cases, the flags workers need to enumerate them again), checks
everything that can be wrong before anything is measured (selection,
pyperf knobs, output paths, the remote server, the base interpreter), hands
the plan to :func:`bench.run.runner.execute`, and prints the summary read
back from the saved report.  Bad input is one line on stderr and exit 2.

pyperf workers re-execute ``fastsock-bench run`` with ``--worker`` and
pyperf's flags: :func:`worker_main` parses only the selection flags, builds
the same plan and registers every case; pyperf's task index picks one.  A
``--remote`` worker gets :func:`bench.remote.client.open_case` as its
case's opener: the run stage itself never imports the remote stage.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from functools import partial

import fastsock
from bench.analysis.report import load_report
from bench.remote import client as _remote
from bench.run import axes as A
from bench.run import callgrind as _callgrind
from bench.run import count as _count
from bench.run import lockstep as _interleave
from bench.run import matrix as M
from bench.run import transports as T
from bench.run.peer import PLACEMENTS
from bench.run.runner import (
    GATE_PROCESSES,
    INHERIT,
    PRESET_PYPERF,
    Outcome,
    Plan,
    case_metadata,
    execute,
    fmt_duration,
    make_runner,
)

PROG = "fastsock-bench run"


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
    g.add_argument("--impl", help=f"{','.join(M.BUILTIN_IMPLS)}, an entry point's name "
                   "(group fastsock.impls), pkg.module or label=pkg.module (default: the "
                   "twins and asyncio-*; --full adds uvloop-* when installed; all: every one)")
    g.add_argument("--batch", help="datagrams per syscall of datagram stream cases, e.g. 1,32"
                   " (default: the preset's; > 1 is compiled only: sendmmsg)")
    g.add_argument("--sockbuf", metavar="LIST",
                   help="SO_SNDBUF and SO_RCVBUF asked of both ends, bytes, e.g."
                   " 4k,64k,default,4m ('default': the kernel's; what it grants is recorded)")
    g.add_argument("--threads", metavar="LIST",
                   help="connections, each driven by its own thread, e.g. 1,2,4 (default 1)")
    g.add_argument("--nodelay", metavar="on|off",
                   help="stream over TCP: the sender's TCP_NODELAY (default off: Nagle on)")
    g.add_argument("--placement", choices=PLACEMENTS, default="auto",
                   help="where a case's two processes run: apart (a CPU each, pinned), os"
                   " (the kernel's choice, as any program), auto (default: apart for spin,"
                   " os otherwise)")
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
    p.add_argument("--measure", choices=("time", "instructions"), default="time",
                   help="time (pyperf's wall time, the default) or instructions: user-space "
                   "instructions per message of the measured side, counted under valgrind "
                   "(not the kernel's work; see docs/compare.md)")
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
    timing = g.add_mutually_exclusive_group()
    timing.add_argument("--min-time", type=float, metavar="SECONDS",
                        help="minimum time per value (pyperf calibrates the loops to it)")
    timing.add_argument("-l", "--loops", type=int, metavar="N",
                        help="messages (round trips, connections) per value, fixed: no "
                        "calibration, the value's length is N times the case's unit")
    g.add_argument("--affinity", metavar="CPUS", help="pin workers to these CPUs (e.g. 0 or 0-1)")
    g.add_argument("-v", "--verbose", action="store_true", help="pyperf's verbose output")
    return p


def make_plan(args: argparse.Namespace) -> Plan:
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
        axes=A.Axes(
            sockbufs=A.parse_sockbufs(args.sockbuf) if args.sockbuf else None,
            threads=A.parse_threads(args.threads) if args.threads else None,
            nodelays=A.parse_nodelays(args.nodelay) if args.nodelay else None),
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
    if getattr(args, "remote", None):
        # --full's sweeps of socket buffers and threads need both ends here
        # (see _check_remote_axes): a remote run measures the rest
        cases = [k for k in cases if k.sockbuf == 0 and k.threads == 1]
    forward: list[str] = []
    for flag in ("scenario", "transport", "mode", "size", "impl", "remote", "batch",
                 "sockbuf", "threads", "nodelay"):
        value = getattr(args, flag)
        if value:
            forward += [f"--{flag}", value]
    if args.preset != "default":
        forward.append(f"--{args.preset}")
    if args.placement != "auto":
        forward += ["--placement", args.placement]
    return Plan(sel, cases, forward)


def _check_remote_axes(args: argparse.Namespace) -> None:
    """--sockbuf and --threads need both ends here: the remote server makes
    its end and its peer, one connection at the kernel's buffers."""
    if not getattr(args, "remote", None):
        return
    sockbufs = A.parse_sockbufs(args.sockbuf) if args.sockbuf else ()
    threads = A.parse_threads(args.threads) if args.threads else ()
    if any(sockbufs) or any(n != 1 for n in threads):
        raise M.MatrixError("--sockbuf and --threads are not available with --remote (the "
                            "server's peer takes one connection at the kernel's buffers)")


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


def worker_main(argv: list[str]) -> int:
    """Inside a pyperf worker: enumerate the same cases, run task N."""
    from bench.remote.client import open_case
    from bench.run.worker import Case

    sel_parser = _Parser(prog=PROG, allow_abbrev=False, add_help=False)
    add_selection_args(sel_parser)
    args, rest = sel_parser.parse_known_args(argv)
    plan = make_plan(args)
    runner = make_runner(plan.forward)
    runner.parse_args(rest)
    for key in plan.cases:
        case = Case(key, opener=partial(open_case, args.remote) if args.remote else None,
                    placement=args.placement)
        runner.bench_time_func(key.name, case.time_func, metadata=case_metadata(key))
    return 0


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
    # An explicit minimum time asks for calibration, explicit loops for none:
    # either replaces the preset's own (fixed loops or a calibration target).
    if args.min_time is not None or args.loops is not None:
        for flag in ("--loops", "--min-time"):
            if flag in out:
                i = out.index(flag)
                del out[i:i + 2]
    if args.base_python and args.preset != "quick":
        # a gate: enough lockstep slots for compare to call 10% in every case
        i = out.index("--processes")
        out[i + 1] = str(GATE_PROCESSES)
    if args.fast:
        out = ["--fast"]
    elif args.rigorous:
        out = ["--rigorous"]
    for flag in ("processes", "values", "warmups", "min_time", "loops"):
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


def main_run(argv: list[str]) -> int:
    if "--worker" in argv:
        return worker_main(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_remote_axes(args)
        counting = args.measure == "instructions"
        if counting:
            _count.refuse(args)  # before --remote would contact its server
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
        for note in M.left_out(plan.selection, plan.cases):
            print(f"{PROG}: note: {note}", file=sys.stderr)
        tasks, left = _count.plan(plan.cases, args.preset) if counting else ([], [])
        if counting and not tasks:
            raise UsageError("nothing to count: " + "; ".join(
                _count.left_out_reason(m) for m in sorted({k.mode for k in left})))
        if args.list:
            for key in (t.key for t in tasks) if counting else plan.cases:
                print(key.name)
            for mode in sorted({k.mode for k in left}):
                print(f"left out: {sum(k.mode == mode for k in left)} {mode} cases "
                      f"({_count.left_out_reason(mode)})", file=sys.stderr)
            print(f"{len(tasks) if counting else len(plan.cases)} cases", file=sys.stderr)
            return 0
        version = _callgrind.version() if counting else ""
        pargs = [] if counting else pyperf_args(args)  # before check_output (results/)
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
        try:
            check_outside_impls(plan)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted while checking impls; nothing measured",
                  file=sys.stderr)
            return 128 + signal.SIGINT
    except (UsageError, M.MatrixError, A.AxisError, _remote.RemoteError,
            _interleave.BaseError, _count.CountError, _callgrind.CallgrindError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if counting:
        outcome = _count.execute(args, tasks, left, output, version)
    else:
        outcome = execute(args, plan, outputs, pargs, base)
    return _finish(args, outcome, base is not None)


def check_outside_impls(plan: Plan) -> None:
    """Nothing is measured from code that loses bytes: every impl from
    outside fastsock must pass the conformance checks of the functions and
    modes its cases use (the built-ins are proved by the test suite), or
    the run is refused with its first failure (UsageError: exit 2)."""
    from bench.run import conformance
    from bench.run import impls as _impls

    for name in plan.selection.impls:
        impl = _impls.get(name)
        keys = [k for k in plan.cases if k.impl == name]
        if impl.builtin or not keys:
            continue
        functions = {_impls.function_for(k.scenario, k.transport) for k in keys}
        try:
            loops = impl.load()
        except _impls.ImplError as exc:
            raise UsageError(str(exc)) from None
        checks = conformance.checks_for(impl, loops, functions, {k.mode for k in keys})
        print(f"fastsock-bench: checking impl {name} ({len(checks)} conformance checks)",
              flush=True)
        outcome = conformance.run_checks(checks, loops, stop_at_failure=True)
        if outcome.failed:
            first = outcome.failed[0]
            again = name if impl.source != "--impl" or name == impl.module \
                else f"{name}={impl.module}"
            raise UsageError(f"impl {name} fails its conformance check, nothing of it is "
                             f"measured: {first.check.label}: {first.detail} (all checks: "
                             f"fastsock-bench check-impl {again})")
        print(f"fastsock-bench: impl {name} passed {len(checks)} conformance checks "
              f"({outcome.seconds:.1f} s)", flush=True)


def _finish(args: argparse.Namespace, outcome: Outcome, with_base: bool) -> int:
    """After the run: the summary read back from the saved report (what is
    printed is what was stored), the HTML page, the exit status."""
    if outcome.write_error:
        return 1
    outputs, done, n = outcome.outputs, outcome.done, outcome.total
    output = outputs["new"]
    saved = " and ".join(outputs[side] for side in sorted(outputs, key=lambda s: s != "new"))
    if outcome.signal is not None:
        name = signal.Signals(outcome.signal).name
        print(f"fastsock-bench: interrupted by {name} after {done} of {n} cases;"
              f" {'saved ' + saved if done else 'nothing finished, no report'}",
              file=sys.stderr)
        return 128 + outcome.signal
    if done:
        from bench.present import summary  # numpy and the figures: not in workers

        report = load_report(output)
        print()
        print(summary.render_report(report))
        if with_base:
            print()
            print(summary.render_interleaved(load_report(outputs["base"]), report))
        if not args.no_html:
            try:  # the HTML page is an extra: its failure must not hide the run
                summary.write_html_beside(output, report)
            except Exception as exc:  # any plotting error
                print(f"{PROG}: warning: no HTML report ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})", file=sys.stderr)
    print(f"\n{done} of {n} cases in {fmt_duration(outcome.seconds)}; "
          f"report{'s' if with_base else ''}: {saved if done else '(none)'}")
    if outcome.failed:
        print(f"{len(outcome.failed)} case(s) failed:", file=sys.stderr)
        for name, reason in outcome.failed:
            print(f"  {name}: {reason}", file=sys.stderr)
        return 1
    return 0


