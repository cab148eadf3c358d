"""The ``crosscheck`` subcommand of ``fastsock-bench``: argparse wiring.

Design note
-----------
pyperf's layout, like ``_cli_compare``: ``add_crosscheck_parser(subparsers)``
declares the subcommand, ``cmd_crosscheck(args) -> int`` runs it
(:mod:`bench.crosscheck.check` does the work).  Exit codes: 0 every selected
workload ran (a disagreement is shown, not an error: it is a finding), 1 a
tool or the suite failed on some workload, 2 usage error, the compiled
extension not loaded, or neither iperf3 nor sockperf installed (a workload
of one missing tool is skipped with a note).  Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from bench.cli.common import EXIT_FAILED, EXIT_OK, error
from bench.crosscheck import tools
from bench.run.peer import PLACEMENTS


def _error(message: str) -> int:
    return error("crosscheck", message)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be > 0: {text}")
        return value
    return parse


def add_crosscheck_parser(subparsers: Any) -> argparse.ArgumentParser:
    names = ", ".join(w.name for w in tools.WORKLOADS)
    p: argparse.ArgumentParser = subparsers.add_parser(
        "crosscheck",
        help="run iperf3 / sockperf beside the suite's compiled cases",
        description="Run iperf3 and sockperf (where installed) on the workloads they share "
        "with the suite, alternately with the suite's compiled case, and show both figures "
        "(MB/s with MB = 10^6 B, RTT in µs), the ratio suite/tool and a flag when they "
        "differ by more than 5%. Exit 0: all ran; 1: a workload failed; 2: usage error "
        "or no tool installed.",
    )
    p.add_argument("--workload", metavar="NAMES",
                   help=f"comma list of workloads (default: all): {names}")
    p.add_argument("-t", "--time", type=_positive(float), default=2.0, metavar="SECONDS",
                   help="each tool run's duration (iperf3/sockperf -t; default 2)")
    p.add_argument("-r", "--repeat", type=_positive(int), default=tools.REPEAT, metavar="N",
                   help="alternating tool/suite pairs per workload; the median of the pairs'"
                   f" ratios is shown with its 95%% interval (default {tools.REPEAT})")
    p.add_argument("-p", "--processes", type=_positive(int), default=1, metavar="N",
                   help="suite worker processes per run (default 1: one connection, measured "
                   "as long as the tool runs, in 0.1 s values as iperf3's -i 0.1)")
    p.add_argument("--placement", choices=PLACEMENTS, default="auto",
                   help="where both sides run, tool and suite alike (as run --placement): "
                   "auto (default: the kernel's choice, pinned apart for spin), apart (the "
                   "two ends pinned to two CPUs: iperf3 -A, sockperf's affinity), os")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table (default) or json")
    p.set_defaults(func=cmd_crosscheck)
    return p


def cmd_crosscheck(args: argparse.Namespace) -> int:
    import fastsock

    by_name = {w.name: w for w in tools.WORKLOADS}
    if args.workload:
        names = [n.strip() for n in args.workload.split(",")]
        unknown = [n for n in names if n not in by_name]
        if unknown or not all(names):
            return _error(f"unknown workload {', '.join(unknown) or repr(args.workload)}"
                          f" (expected: {', '.join(by_name)})")
        workloads = [by_name[n] for n in dict.fromkeys(names)]
    else:
        workloads = list(tools.WORKLOADS)
    missing = tools.missing_tools()
    if set(tools.TOOLS) <= set(missing):
        return _error("neither iperf3 nor sockperf is installed (e.g. apt-get install "
                      "iperf3 sockperf); nothing to cross-check")
    if fastsock.IMPLEMENTATION != "cython":
        return _error("the compiled extension is not loaded (not built, or "
                      "FASTSOCK_PUREPYTHON set): the suite's figures would be pure Python")
    needed = {w.tool for w in workloads}
    if needed <= set(missing):
        return _error(f"{' and '.join(sorted(needed))} not installed: no selected workload can run")
    for tool in missing:
        print(f"fastsock-bench crosscheck: {tool} is not installed: skipping its workloads",
              file=sys.stderr)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    from bench.crosscheck import check as X  # numpy: only when it runs

    result = X.crosscheck(workloads, seconds=args.time, repeat=args.repeat,
                          processes=args.processes, progress=progress,
                          placement=args.placement)
    print(X.render_json(result) if args.format == "json" else X.render_table(result))
    failed = [r for r in result.rows if r.error]
    for row in failed:
        print(f"fastsock-bench crosscheck: {row.workload.name}: {row.error}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
