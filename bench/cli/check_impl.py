"""``fastsock-bench check-impl NAME``: an impl against the checks the twins pass.

Design note: pyperf's layout (``add_check_impl_parser`` / ``cmd_check_impl``).
NAME is what ``run --impl`` takes (a built-in impl, an entry point's name,
``pkg.module`` or ``label=pkg.module``); the registry
(:mod:`bench.run.impls`) resolves it and the conformance checks
(:mod:`bench.run.conformance`) run one by one, each in a process of its
own and bounded in time, each result printed as it ends: ``pass`` or
``FAIL``, the check, one line of detail.  Exit 0 when every check passed,
1 when one failed, 2 on bad input (an unknown impl, a module that does not
import or does not declare the contract: one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.cli.common import EXIT_FAILED, EXIT_OK, error

CMD = "check-impl"


def add_check_impl_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        CMD,
        help="run the loop contract's conformance checks against an impl",
        description="Run the checks the twins pass (counts, data integrity, bounded waits, "
        "a closed peer, signals and Ctrl-C, bad arguments) against an impl, each function "
        "it provides in each mode it runs, against the compiled peer; print what passes "
        "and fails.  Exit 0: all passed; 1: a check failed; 2: bad input.",
    )
    p.add_argument("impl", metavar="NAME",
                   help="a built-in impl, an entry point's name (group fastsock.impls), "
                   "pkg.module, or label=pkg.module (as run --impl takes)")
    p.add_argument("--mode", help="only these modes (comma list; default: the impl's)")
    p.add_argument("--function", help="only these contract functions (comma list)")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed check")
    p.set_defaults(func=cmd_check_impl)
    return p


def _listed(text: str | None, allowed: tuple[str, ...], what: str) -> set[str] | None:
    if not text:
        return None
    items = [t.strip() for t in text.split(",")]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad[0]!r} (expected one of: {', '.join(allowed)})")
    return set(items)


def cmd_check_impl(args: argparse.Namespace) -> int:
    import fastsock
    from bench.run import conformance
    from bench.run.impls import ImplError, resolve

    try:
        impl = resolve(args.impl)
        if impl.kind == "event loop":
            raise ImplError(f"{impl.name} runs on an event loop, not as a loop module: "
                            "check-impl checks loop modules (tests/test_asyncloops.py "
                            "proves the event-loop impls)")
        functions = _listed(args.function, fastsock.LOOP_NAMES, "function")
        modes = _listed(args.mode, fastsock.MODES, "mode")
        loops = impl.load()
        meta = impl.metadata()
    except (ImplError, ValueError) as exc:
        return error(CMD, exc)
    checks = conformance.checks_for(impl, loops, functions, modes)
    if not checks:
        return error(CMD, f"{impl.name} has no check for that selection "
                     f"(it provides {', '.join(sorted(impl.functions))} "
                     f"in {', '.join(impl.modes)})")
    dist = (f"; {meta['impl_dist']} {meta['impl_dist_version']}"
            if "impl_dist" in meta else "")
    named = impl.name if impl.name == impl.module else f"{impl.name} = {impl.module}"
    print(f"{named} ({impl.source}{dist}), contract {impl.contract}")
    print(f"  file: {meta.get('impl_origin', '(unknown)')}")
    print(f"  provides {', '.join(f for f in fastsock.LOOP_NAMES if f in impl.functions)}: "
          f"runs {impl.scope()}")
    print(f"  {len(checks)} checks against the compiled peer, each in a process of its own",
          flush=True)

    def show(result: conformance.Result) -> None:
        verdict = "pass" if result.ok else "FAIL"
        print(f"{verdict}  {result.check.label}: {result.detail} ({result.seconds:.2f} s)",
              flush=True)

    outcome = conformance.run_checks(checks, loops, stop_at_failure=args.fail_fast,
                                     on_result=show)
    failed = outcome.failed
    ran = len(outcome.results)
    print(f"{ran} checks: {ran - len(failed)} passed, {len(failed)} failed "
          f"({outcome.seconds:.1f} s)" + ("" if ran == len(checks) else
                                          f"; stopped at the first failure, {len(checks) - ran}"
                                          " not run"))
    if failed:
        print(f"fastsock-bench {CMD}: {impl.name} fails: {failed[0].check.label}: "
              f"{failed[0].detail}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
