"""``fastsock-bench``: run, compare, speedup, plot, report.

Design note: argparse subcommands, one ``cmd_<name>`` each (pyperf's
shape).  ``run`` owns its argument parsing because pyperf workers
re-execute ``python -m bench run`` with pyperf's own flags appended.  Every
error is one line on stderr with exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

PROG = "fastsock-bench"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _optional(module: str, adders: list[str]) -> list[Callable]:
    try:
        mod = __import__(f"bench.{module}", fromlist=adders)
    except ImportError:
        return []
    return [getattr(mod, a) for a in adders if hasattr(mod, a)]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="fastsock: socket loops, compiled vs pure Python.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("run", help="measure the case matrix (see `run --help`)", add_help=False)
    for add in _optional("_cli_compare", ["add_compare_parser", "add_speedup_parser"]):
        add(sub)
    for add in _optional("_cli_plot", ["add_plot_parser", "add_report_parser"]):
        add(sub)
    for add in _optional("_serve", ["add_serve_parser"]):
        add(sub)
    for add in _optional("_cli_crosscheck", ["add_crosscheck_parser"]):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        from bench._runner import main_run

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
