"""``fastsock-bench speedup``: one impl against another inside one report.

Design note: the estimate is :func:`bench.analysis.compare.speedup`'s (per
case, base time / impl time over worker processes, with its interval);
this module only wires the subcommand (pyperf's ``add_<name>_parser`` /
``cmd_<name>`` shape).  ``--base`` and ``--impl`` name the two impls
(default: python and cython, the twins), any two the report has: an idiom
against the Python loop, a user's module against the compiled one.  Exit
0, or 2 with one line for a bad report or a pair without a common case.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.analysis.report import COMPILED, PYTHON, ReportError, load_report
from bench.cli.common import EXIT_OK, EXIT_USAGE, add_output_options, emit, error


def add_pair_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--base`` and ``--impl``: the two impls a speedup compares."""
    parser.add_argument("--base", default=PYTHON, metavar="IMPL",
                        help=f"the impl {what} is measured against (default: {PYTHON})")
    parser.add_argument("--impl", default=COMPILED, metavar="IMPL",
                        help=f"the impl whose {what} is shown (default: {COMPILED})")


def add_speedup_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "speedup",
        help="one impl against another (compiled vs pure Python), per case, inside one report",
        description="For each case of a report measured with both impls: base time / impl "
        "time, with a 95% confidence interval over worker processes (above 1: the impl is "
        "faster).  By default the compiled loop against the Python one.",
    )
    parser.add_argument("report", metavar="REPORT.json")
    add_pair_options(parser, "the speedup")
    add_output_options(parser)
    parser.set_defaults(func=cmd_speedup)
    return parser


def cmd_speedup(args: argparse.Namespace) -> int:
    from bench.analysis.compare import speedup
    from bench.present.formats import render_speedup

    try:
        sp = speedup(load_report(args.report), args.base, args.impl)
    except (ReportError, ValueError) as exc:
        error("speedup", exc)
        return EXIT_USAGE
    if not emit("speedup", args, lambda colour: render_speedup(sp, args.format, colour)):
        return EXIT_USAGE
    return EXIT_OK
