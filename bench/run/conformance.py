"""Conformance: the checks the twins pass, run against any impl before it is measured.

Design note
-----------
Nothing is measured from code that loses bytes.  :func:`checks_for` lists
the checks of an impl: for each contract function it provides
(:mod:`bench.run.checks` has the bodies, one list per function) and each
mode it runs, the loop tests the twins pass (counts, data integrity with
``pattern``/``verify``, bounded waits, a closed peer, a signal storm,
Ctrl-C), and once per function the bad arguments (refused before any
I/O, one line).  The other end of every check is the suite's compiled
loop (``fastsock._loops`` wherever it is built), in a process of its own,
over the suite's transports (:mod:`bench.run.transports`).

Each check runs in a forked child (:func:`run_one`): the impl's code never
runs in the process that judges it, and a check that does not end within
its bound (an impl that ignores the timeout, or hangs) is killed, its
peer with it (``PR_SET_PDEATHSIG``), and fails with one line saying so.
A crash (a segfault in an extension) fails the check the same way.  So
``check-impl`` and ``run`` never hang on an impl, and leave nothing
behind.

``fastsock-bench check-impl NAME`` runs every check and prints each
result; ``run`` runs those of the functions and modes its cases use,
stops at the first failure and refuses the impl with that one line.  The
built-in impls are not checked by ``run``: the test suite proves them.

Limits: the checks look at what an impl does, not how fast or with which
syscalls (that is the measurement's business); ``connect_accept`` gets no
wait or Ctrl-C check (it plays both ends, there is no peer to stall);
event-loop impls are not loop modules and are not checked here
(``tests/test_asyncloops.py`` proves the built-in ones).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.run.impls import Impl
from bench.run.peer import _set_pdeathsig

# Seconds a check's process may run past its own bound before it is killed.
KILL_SLACK = 1.0


class Failed(Exception):
    """A check's verdict against the impl; ``str()`` is one line."""


@dataclass(frozen=True)
class Check:
    """One check of one function in one mode."""

    function: str
    mode: str
    what: str  # "counts and integrity", "bounded wait", ...
    body: Callable[[Any, Check], str]  # (loops, check) -> one-line detail; raises Failed
    bound: float  # seconds the check takes at most when the impl keeps the contract
    modes: tuple[str, ...] = ()  # the impl's modes (bad arguments: the others are refused)
    batching: bool = False  # the impl batches datagrams (HAVE_MMSG)

    @property
    def label(self) -> str:
        return f"{self.function} {self.mode}: {self.what}"


@dataclass(frozen=True)
class Result:
    check: Check
    ok: bool
    detail: str  # one line
    seconds: float


@dataclass
class Outcome:
    """What a series of checks said."""

    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.ok]


def checks_for(impl: Impl, loops: Any, functions: Iterable[str] | None = None,
               modes: Iterable[str] | None = None) -> list[Check]:
    """The checks of ``impl`` (its ``loops`` module), in order: per
    function, per mode, then the function's bad arguments; restricted to
    ``functions`` and ``modes`` when given (what a run uses)."""
    from bench.run import checks as _checks

    wanted_f = set(functions) if functions is not None else None
    wanted_m = set(modes) if modes is not None else None
    batching = bool(getattr(loops, "HAVE_MMSG", False))
    out: list[Check] = []
    for function in _checks.FUNCTIONS:
        if function not in impl.functions or (wanted_f is not None and function not in wanted_f):
            continue
        fmodes = _checks.modes_of(function, impl.modes)
        run_modes = [m for m in fmodes if wanted_m is None or m in wanted_m]
        for mode in run_modes:
            for what, body, bound in _checks.PER_MODE[function]:
                out.append(Check(function, mode, what, body, bound, impl.modes, batching))
        if run_modes:  # argument checks do not depend on the mode: once, in the first
            what, body, bound = _checks.BAD_ARGUMENTS
            out.append(Check(function, run_modes[0], what, body, bound, impl.modes, batching))
    return out


def run_one(check: Check, loops: Any) -> Result:
    """Run ``check`` in a forked child, bounded: killed after ``check.bound``
    plus :data:`KILL_SLACK` seconds."""
    t0 = time.monotonic()
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: run, report one JSON line, leave without cleanup
        try:
            os.close(r)
            _set_pdeathsig()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                out = ["ok", check.body(loops, check)]
            except Failed as exc:
                out = ["fail", _one_line(exc)]
            except BaseException as exc:  # the impl's own error, whatever it is
                out = ["fail", f"raised {type(exc).__name__}: {_one_line(exc)}"]
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    limit = check.bound + KILL_SLACK
    deadline = t0 + limit
    chunks: list[bytes] = []
    killed = finished = False
    try:
        while True:
            rest = deadline - time.monotonic()
            if rest <= 0 or not select.select([r], [], [], rest)[0]:
                killed = True
                break
            chunk = os.read(r, 65536)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:  # also on Ctrl-C here: the check's process never outlives the call
        os.close(r)
        if not finished:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - t0
    if killed:
        return Result(check, False, f"no result within {limit:g} s: killed (a wait the "
                      "timeout does not bound, or a hang)", seconds)
    try:
        kind, detail = json.loads(b"".join(chunks))
    except ValueError:
        how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
               if os.WIFSIGNALED(status) else f"exit status {os.waitstatus_to_exitcode(status)}")
        return Result(check, False, f"the check's process died without a result ({how})",
                      seconds)
    return Result(check, kind == "ok", str(detail), seconds)


def run_checks(checks: Iterable[Check], loops: Any, *, stop_at_failure: bool = False,
               on_result: Callable[[Result], None] | None = None) -> Outcome:
    """Run checks one after the other (timing checks must not share the
    CPUs with each other); ``on_result`` sees each as it ends."""
    outcome = Outcome()
    t0 = time.monotonic()
    for check in checks:
        result = run_one(check, loops)
        outcome.results.append(result)
        if on_result is not None:
            on_result(result)
        if stop_at_failure and not result.ok:
            break
    outcome.seconds = time.monotonic() - t0
    return outcome


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
