"""``fastsock-bench plot`` and ``fastsock-bench report``: argparse wiring.

Design note
-----------
Each subcommand is an ``add_<name>_parser(subparsers)`` that registers it
and a ``cmd_<name>(args) -> int`` that runs it (pyperf's layout), wired into
``bench/cli.py``.  Every failure is one line on stderr,
``fastsock-bench <cmd>: error: ...``, and exit 2 (usage or input error, the
code compare uses too): a bad report (``ReportError``), a base sharing no
case with the report, an output that exists (``report`` without
``--overwrite``) or cannot be written.  Reports from different machines
are drawn and rendered with a warning, not refused: gating is
``compare``'s job (exit 3), a picture of the mismatch is still useful.  Plot
files are derived artefacts and are replaced; the HTML report is what a
person keeps, so it is not.

matplotlib is imported only when a command runs, so ``fastsock-bench
--help`` and the other subcommands do not pay for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bench._report import ReportError, load_report

EXIT_OK = 0
EXIT_USAGE = 2  # usage or input error (DESIGN.md, exit codes)


def _error(cmd: str, message: str) -> int:
    print(f"fastsock-bench {cmd}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "plot",
        help="draw a report's figures (PNG and SVG)",
        description="Draw throughput vs size, RTT and compiled/Python speedup figures "
        "of a report, and with --compare the new/base ratios, as PNG and SVG files "
        "named <report stem>_<figure>.<format>.",
    )
    p.add_argument("report", metavar="REPORT.json", help="a fastsock report")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="directory for the figures (default: the report's directory)")
    p.add_argument("--compare", metavar="BASE.json",
                   help="also draw the ratio of each case to this base report")
    p.add_argument("--format", dest="formats", action="append", choices=("png", "svg"),
                   help="only this format (repeatable; default: png and svg)")
    p.set_defaults(func=cmd_plot)
    return p


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
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output file if it exists")
    p.set_defaults(func=cmd_report)
    return p


def _load(path: str, base_path: str | None) -> tuple[Any, Any, Any]:
    """The report, the base and their comparison (None without a base).
    Raises ReportError for a bad file, ValueError (bench._compare) for two
    reports that share no case."""
    report = load_report(path)
    if not base_path:
        return report, None, None
    base = load_report(base_path)
    from bench._compare import compare_reports

    return report, base, compare_reports(base, report)


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        report, base, comparison = _load(args.report, args.compare)
    except (ReportError, ValueError) as exc:
        return _error("plot", _one_line(exc))
    outdir = Path(args.output) if args.output else Path(os.path.abspath(args.report)).parent
    if outdir.exists() and not outdir.is_dir():
        return _error("plot", f"{outdir}: exists and is not a directory")
    formats = tuple(dict.fromkeys(args.formats)) if args.formats else ("png", "svg")
    from bench._plot import plot_report

    try:
        written = plot_report(report, outdir, base=base, formats=formats, comparison=comparison)
    except OSError as exc:
        return _error("plot", f"{exc.filename or outdir}: cannot write: {exc.strerror}")
    for path in written:
        print(path)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(args.report).with_suffix(".html")
    if output.is_dir():
        return _error("report", f"{output}: is a directory; give a file name")
    if output.exists() and not args.overwrite:
        return _error("report", f"{output}: exists; use --overwrite to replace it")
    if not output.parent.is_dir():
        return _error("report", f"{output.parent}: no such directory")
    try:
        report, base, comparison = _load(args.report, args.compare)
    except (ReportError, ValueError) as exc:
        return _error("report", _one_line(exc))
    from bench._html import write_html

    try:
        write_html(report, output, base=base, comparison=comparison)
    except OSError as exc:
        return _error("report", f"{output}: cannot write: {exc.strerror}")
    print(output)
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
