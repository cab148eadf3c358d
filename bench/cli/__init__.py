"""``fastsock-bench``: the command line, one module per subcommand.

Design note: argparse subcommands, each an ``add_<name>_parser(subparsers)``
and a ``cmd_<name>(args) -> int`` in its own module (pyperf's shape); this
module wires them.  ``run`` owns its argument parsing
(:mod:`bench.cli.run`) because pyperf workers re-execute
``fastsock-bench run`` with pyperf's own flags appended.  Every error is one
line on stderr with exit status 2; never a traceback.  The subcommand
modules import their heavy dependencies (numpy, matplotlib, pyperf) only
when they run, so ``--help`` and a worker's start stay light.
"""

from __future__ import annotations

import argparse
import sys

from bench.cli import check_impl, compare, crosscheck, plot, report, serve, speedup
from bench.cli.common import PROG


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="fastsock: socket loops, compiled vs pure Python.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("run", help="measure the case matrix (see `run --help`)", add_help=False)
    compare.add_compare_parser(sub)
    speedup.add_speedup_parser(sub)
    plot.add_plot_parser(sub)
    report.add_report_parser(sub)
    serve.add_serve_parser(sub)
    crosscheck.add_crosscheck_parser(sub)
    check_impl.add_check_impl_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        from bench.cli.run import main_run

        return main_run(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    func = getattr(args, "func", None)
    if func is None:
        print(f"{PROG}: error: command {args.command!r} has no handler", file=sys.stderr)
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
