"""What every subcommand of ``fastsock-bench`` shares: the program name, the
exit codes, the one-line error, writing output.

Design note: exit codes are the CI contract (DESIGN.md): 0 done (no
regression), 1 a regression or a failed case, 2 usage or input error, 3
reports from different machines (``compare`` without ``--force``).  Every
error is one line on stderr, ``fastsock-bench <cmd>: error: ...``, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from bench.analysis.report import write_atomic

PROG = "fastsock-bench"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MACHINE = 0, 1, 2, 3


def error(cmd: str, message: object) -> int:
    """Print ``fastsock-bench CMD: error: MESSAGE``; return the usage exit code."""
    print(f"{PROG} {cmd}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def one_line(exc: BaseException) -> str:
    """An exception's first line (its type's name when it has no text)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


FORMATS = ("table", "markdown", "json")  # as bench.present.formats.FORMATS


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (terminal, the default), markdown (a pull request "
                        "comment) or json (machines)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write there (atomically) instead of stdout")


def emit(cmd: str, args: argparse.Namespace, render: Callable[[bool], str]) -> bool:
    """Render (with colour only on a terminal) and write; False on failure."""
    from bench.present.formats import use_colour

    try:
        if args.output:
            write_atomic(args.output, render(False))
        else:
            sys.stdout.write(render(args.format == "table" and use_colour(sys.stdout)))
            sys.stdout.flush()
    except BrokenPipeError:
        pass  # `| head`: the reader has what it wanted; the exit code still counts
    except OSError as exc:
        error(cmd, f"cannot write {args.output}: {exc.strerror}")
        return False
    return True
