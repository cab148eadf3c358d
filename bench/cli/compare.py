"""``fastsock-bench compare``: two reports, case by case, and the CI verdict.

Design note
-----------
pyperf style: ``add_<name>_parser(subparsers)`` declares a subcommand and
``cmd_<name>(args) -> int`` runs it and returns the exit code; ``bench.cli``
wires them.  Exit codes are the CI contract: 0 no regression, 1 at least one
regression, 2 usage or input error, 3 reports from different machines
(without ``--force``).  Two reports of different measures (time, an
instruction count) are an input error: there is no ratio between them.
Every input error is one line on stderr,
``fastsock-bench <cmd>: error: ...``, never a traceback: the loader turns
every bad file into a :class:`ReportError`, and argparse's own usage
errors already exit 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.analysis.report import ReportError, load_report
from bench.cli.common import EXIT_MACHINE, EXIT_USAGE, add_output_options, emit, error


def _percent(text: str) -> float:
    """--threshold: a percentage in [0, 100), returned as a fraction."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in [0, 100): {text}")
    return value / 100


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text}")
    return value


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="compare two reports; exit 1 on a regression",
        description="Compare two fastsock reports case by case: time ratio new/base with "
        "a 95% confidence interval over worker processes and a verdict (faster, slower, "
        "same, inconclusive). Exit 0: no regression; 1: at least one case slower; "
        "2: usage or input error; 3: reports from different machines (see --force).",
    )
    parser.add_argument("base", metavar="BASE.json", help="the reference report")
    parser.add_argument("new", metavar="NEW.json", help="the candidate report")
    parser.add_argument("--threshold", type=_percent, default=None, metavar="PCT",
                        help="changes below this many percent count as same (default 5 for "
                        "time, 1 for instruction counts)")
    parser.add_argument("--alpha", type=_probability, default=0.05,
                        help="significance level after correction (default 0.05)")
    parser.add_argument("--correction", choices=("bh", "holm"), default="bh",
                        help="for testing many cases at once: bh (Benjamini-Hochberg, "
                        "the default) or holm (fewer false flags, less power)")
    parser.add_argument("--gate-p99", action="store_true",
                        help="a slower p99 RTT is a regression too (default: shown only)")
    parser.add_argument("--force", action="store_true",
                        help="compare reports from different machines (CPU model or count)")
    add_output_options(parser)
    parser.set_defaults(func=cmd_compare)
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.analysis.compare import Settings, compare_reports, machine_differences
    from bench.analysis.counts import check_same_measure, default_threshold
    from bench.analysis.stats import Correction
    from bench.present.formats import render_comparison

    try:
        base, new = load_report(args.base), load_report(args.new)
        check_same_measure(base, new)  # a time and a count: never one verdict
    except (ReportError, ValueError) as exc:
        error("compare", exc)
        return EXIT_USAGE
    if args.threshold is None:
        args.threshold = default_threshold(base.measure)
    mismatch = machine_differences(base, new)
    if mismatch and not args.force:
        what = "; ".join(f"{d.key} {d.base!r} vs {d.new!r}" for d in mismatch)
        error("compare", f"reports from different machines ({what}); --force to compare anyway")
        return EXIT_MACHINE
    settings = Settings(args.threshold, args.alpha, Correction(args.correction), args.gate_p99)
    try:
        cmp = compare_reports(base, new, settings)
    except ValueError as exc:
        error("compare", exc)
        return EXIT_USAGE
    if not emit("compare", args, lambda colour: render_comparison(cmp, args.format, colour)):
        return EXIT_USAGE
    return cmp.exit_code


