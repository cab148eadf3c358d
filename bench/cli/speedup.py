"""``fastsock-bench speedup``: compiled vs pure Python inside one report.

Design note: the estimate is :func:`bench.analysis.compare.speedup`'s (per
case, python time / cython time over worker processes, with its interval);
this module only wires the subcommand (pyperf's ``add_<name>_parser`` /
``cmd_<name>`` shape).  Exit 0, or 2 with one line for a bad report.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.analysis.report import ReportError, load_report
from bench.cli.common import EXIT_OK, EXIT_USAGE, add_output_options, emit, error


def add_speedup_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "speedup",
        help="compiled vs pure Python, per case, inside one report",
        description="For each case of a report measured with both implementations: "
        "python time / cython time, with a 95%% confidence interval over worker processes.",
    )
    parser.add_argument("report", metavar="REPORT.json")
    add_output_options(parser)
    parser.set_defaults(func=cmd_speedup)
    return parser


def cmd_speedup(args: argparse.Namespace) -> int:
    from bench.analysis.compare import speedup
    from bench.present.formats import render_speedup

    try:
        sp = speedup(load_report(args.report))
    except (ReportError, ValueError) as exc:
        error("speedup", exc)
        return EXIT_USAGE
    if not emit("speedup", args, lambda colour: render_speedup(sp, args.format, colour)):
        return EXIT_USAGE
    return EXIT_OK
