"""``fastsock-bench report``: one self-contained HTML file of a report.

Design note: pyperf's layout, as ``plot`` (whose :func:`load_pair` and
:func:`load_counts` it shares: ``--counts`` puts a count report's tables
and figures beside a time report's).  The HTML report is what a person
keeps, so an existing file is not replaced without ``--overwrite``.
Every failure is one line and exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.analysis.report import ReportError
from bench.cli.common import EXIT_OK, error, one_line
from bench.cli.plot import check_pair, load_counts, load_pair
from bench.cli.speedup import add_pair_options


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report",
        description="Write one self-contained HTML file (figures and styles inline, "
        "nothing fetched) with the environment, summary tables, figures and, with "
        "--compare, the regression verdict.",
    )
    p.add_argument("report", metavar="REPORT.json", help="a fastsock report")
    p.add_argument("-o", "--output", metavar="report.html",
                   help="HTML file to write (default: REPORT.html beside the report)")
    p.add_argument("--compare", metavar="BASE.json",
                   help="compare with this base report and show the verdict")
    p.add_argument("--counts", metavar="COUNTS.json",
                   help="an instruction-count report (run --measure instructions) whose "
                   "tables and figures go beside this time report's")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output file if it exists")
    add_pair_options(p, "speedup columns and heatmaps")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(args.report).with_suffix(".html")
    if output.is_dir():
        return error("report", f"{output}: is a directory; give a file name")
    if output.exists() and not args.overwrite:
        return error("report", f"{output}: exists; use --overwrite to replace it")
    if not output.parent.is_dir():
        return error("report", f"{output.parent}: no such directory")
    try:
        report, base, comparison = load_pair(args.report, args.compare)
        pair = check_pair(report, args)
        counts = load_counts(report, args.counts)
    except (ReportError, ValueError) as exc:
        return error("report", one_line(exc))
    from bench.present.html import write_html

    try:
        write_html(report, output, base=base, comparison=comparison, pair=pair,
                   counts=counts)
    except OSError as exc:
        return error("report", f"{output}: cannot write: {exc.strerror}")
    print(output)
    return EXIT_OK
