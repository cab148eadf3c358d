"""``fastsock-bench plot``: a report's figures as PNG and SVG files.

Design note
-----------
pyperf's layout: ``add_plot_parser(subparsers)`` registers the subcommand,
``cmd_plot(args) -> int`` runs it.  Every failure is one line on stderr and
exit 2: a bad report, a base sharing no case with the report, an output
folder that is a file or cannot be written.  Reports from different
machines are drawn with a warning, not refused: gating is ``compare``'s job
(exit 3); a picture of the mismatch is still useful.  Plot files are
derived artefacts and are replaced.  matplotlib is imported only when the
command runs, so ``fastsock-bench --help`` and the other subcommands do not
pay for it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.analysis.report import COMPILED, PYTHON, Report, ReportError, load_report
from bench.cli.common import EXIT_OK, error, one_line
from bench.cli.speedup import add_pair_options

DEFAULT_PAIR = (PYTHON, COMPILED)  # as bench.analysis.shaping's (numpy: not imported here)

if TYPE_CHECKING:  # compare imports numpy: only when a command runs
    from bench.analysis.compare import Comparison


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "plot",
        help="draw a report's figures (PNG and SVG)",
        description="Draw throughput vs size, RTT and speedup figures (compiled/Python, or "
        "--impl over --base) of a report, and with --compare the new/base ratios, as PNG and "
        "SVG files named <report stem>_<figure>.<format>.",
    )
    p.add_argument("report", metavar="REPORT.json", help="a fastsock report")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="directory for the figures (default: the report's directory)")
    p.add_argument("--compare", metavar="BASE.json",
                   help="also draw the ratio of each case to this base report")
    p.add_argument("--counts", metavar="COUNTS.json",
                   help="also draw this instruction-count report's figures (run --measure "
                   "instructions), beside the time report's")
    p.add_argument("--format", dest="formats", action="append", choices=("png", "svg"),
                   help="only this format (repeatable; default: png and svg)")
    add_pair_options(p, "speedup heatmaps")
    p.set_defaults(func=cmd_plot)
    return p


def load_pair(path: str, base_path: str | None
              ) -> tuple[Report, Report | None, Comparison | None]:
    """The report, the base and their comparison (None without a base).
    Raises ReportError for a bad file, ValueError (bench.analysis.compare) for two
    reports that share no case."""
    report = load_report(path)
    if not base_path:
        return report, None, None
    base = load_report(base_path)
    from bench.analysis.compare import compare_reports

    return report, base, compare_reports(base, report)


def load_counts(report: Report, path: str | None) -> Report | None:
    """The count report to show beside a time report, or None; ValueError
    when either is of the wrong measure."""
    if not path:
        return None
    from bench.analysis.report import INSTRUCTIONS

    counts = load_report(path)
    if report.measure == INSTRUCTIONS:
        raise ValueError(f"--counts goes with a time report; {report.path} is a count report")
    if counts.measure != INSTRUCTIONS:
        raise ValueError(f"--counts {path}: not an instruction-count report "
                         "(run --measure instructions)")
    return counts


def check_pair(report: Report, args: argparse.Namespace) -> tuple[str, str]:
    """The (base, impl) of ``--base``/``--impl``: two impls, each with a
    case in the report when named (the default pair may be absent: no
    heatmap then).  ValueError, one line, otherwise."""
    pair = (args.base, args.impl)
    if pair[0] == pair[1]:
        raise ValueError(f"--base and --impl are both {pair[0]}: name two impls")
    have = {c.key.impl for c in report.cases}
    if pair != DEFAULT_PAIR:
        for name in pair:
            if name not in have:
                raise ValueError(f"{report.path} has no case of impl {name} (its impls: "
                                 f"{', '.join(sorted(have))})")
    return pair


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        report, base, comparison = load_pair(args.report, args.compare)
        pair = check_pair(report, args)
        counts = load_counts(report, args.counts)
    except (ReportError, ValueError) as exc:
        return error("plot", one_line(exc))
    outdir = Path(args.output) if args.output else Path(os.path.abspath(args.report)).parent
    if outdir.exists() and not outdir.is_dir():
        return error("plot", f"{outdir}: exists and is not a directory")
    formats = tuple(dict.fromkeys(args.formats)) if args.formats else ("png", "svg")
    from bench.present.figures import plot_report

    try:
        written = plot_report(report, outdir, base=base, formats=formats, comparison=comparison,
                              pair=pair, counts=counts)
    except OSError as exc:
        return error("plot", f"{exc.filename or outdir}: cannot write: {exc.strerror}")
    for path in written:
        print(path)
    return EXIT_OK
