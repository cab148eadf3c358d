"""A case's counted intervals, to instructions per message: the difference, the fit.

Design note
-----------
A case is counted over intervals of N and 2N messages (:mod:`bench.run.count`
plans them, :mod:`bench.run.count_worker` runs them under callgrind); each
interval has its instructions and the calls it made of a few libc
functions (:data:`bench.run.callgrind.CALLS`), which tell timing-dependent
work from the work per message:

* *retries*: a wait after EAGAIN (``poll``; ``epoll_wait`` on an event
  loop), then the call again;
* *continuations*: send/recv/sendmmsg calls beyond the retries and the
  nominal ones (a partial send);
* *resends*: turns of the datagram stream's end-marker loop, which resends
  its empty datagram until the peer answers (two ``select`` calls a turn).

Each is counted beyond its nominal number per message (:func:`_nominal`).
Where nearly every message retries (a compiled datagram ping-pong on a
quiet machine: 99.5%), the retry-free count is poorly determined by the
intervals' few differences: the fit says so with a wide standard error,
and ``compare`` with ``inconclusive``.

Deterministic modes (blocking, timeout) do the same work for every
message.  :func:`solve` takes the *difference* of an N and a 2N interval
over N, for every steady pair (:func:`_unsteady`: the same resends on both
sides, every call count grown by a whole number per message) and returns
their median: exact, every per-call cost cancels.  Where no pair is steady
only because the end-marker loop turned unequally, the resends are taken
out by their count (a least-squares fit on them alone: method ``fit``);
anything else raises :class:`Unsteady` (the run counts the case again).

Other modes (nonblocking) are *fitted*: least squares of
``I = a * messages + sum(b_j * event_j) + c`` over the events that vary
apart from the messages; ``a`` is the retry-free count per message, with
the fit's standard error, the events per message and the instructions per
event beside it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from bench.analysis.report import CaseKey
from bench.run.callgrind import CALLS

EVENTS = ("retries", "continuations", "resends")
EVENT_SINGULAR = {"retries": "retry", "continuations": "continuation", "resends": "resend"}
# Below a whole number of continuations per message by up to this, their
# count is that number: the unit's own polls per call, taken from them with
# the retries, count against the message's (~10 over >= 300 messages).
NOMINAL_SLACK = 0.05
# An event varies when, apart from the messages and the events already in
# the fit, it still moves by this much (events are whole; half a resend is
# one select).
VARIES = 0.5


@dataclass
class Interval:
    msgs: int
    instructions: int
    calls: dict[str, int]


@dataclass
class Count:
    """A case's count: instructions per message (retry-free when fitted)."""

    value: float
    method: str  # difference | fit
    se: float = 0.0  # standard error of value (fit)
    dof: int = 0  # the fit's residual degrees of freedom (intervals - unknowns)
    per_msg: dict[str, float] = field(default_factory=dict)  # events per message
    cost: dict[str, float] = field(default_factory=dict)  # instructions per event


class Unsteady(ValueError):
    """Timing-dependent work in a case whose intervals cannot separate it."""


def _events(key: CaseKey, iv: Interval) -> dict[str, float]:
    """The calls that may depend on timing, in one interval (nominal ones
    included: :func:`_timing` takes them out)."""
    c = iv.calls
    resends = c["select"] / 2
    if key.impl in ("cython", "python"):
        retries = c["poll"]
        cont = c["send"] + c["recv"] + c["sendmmsg"] - retries - resends
    else:  # an event loop waits in epoll_wait
        retries = c["epoll_wait"]
        cont = c["send"] + c["recv"] - resends
    return {"retries": retries, "continuations": cont, "resends": resends}


def _nominal(key: CaseKey, name: str, ivs: list[Interval], x: list[float]) -> float:
    """The calls of event ``name`` that every message makes (per message):

    * retries: none for the twins, whose nonblocking loops poll only after
      EAGAIN (their stream and ping-pong loops; connect's may poll for a
      connection in progress); for an event loop, the whole number of its
      waits per message in its fewest interval (asyncio-streams waits twice
      per round trip whatever the timing), never rounded up: on a quiet
      machine 99.5% of a compiled datagram ping-pong's round trips retried,
      and rounding that up made the retries part of the count (+86%);
    * continuations: the whole number per message (a send, a send and a
      recv), allowing for the unit's own polls taken off with the retries;
    * resends: none (they are per call, never per message).

    What timing adds only ever comes on top of these."""
    fewest = min(v / iv.msgs for v, iv in zip(x, ivs))
    if name == "resends":
        return 0.0
    if name == "retries":
        if key.impl in ("cython", "python") and key.scenario != "connect":
            return 0.0
        return max(0, math.floor(fewest * key.batch)) / key.batch
    return max(0, math.floor(fewest * key.batch + NOMINAL_SLACK)) / key.batch


def _timing(key: CaseKey, ivs: list[Interval]) -> dict[str, tuple[list[float], float]]:
    """Per event: its count per interval beyond the nominal calls
    (:func:`_nominal`), and its rate per message."""
    per_interval = [_events(key, iv) for iv in ivs]
    total = sum(iv.msgs for iv in ivs)
    out = {}
    for name in EVENTS:
        x = [e[name] for e in per_interval]
        nominal = _nominal(key, name, ivs, x)
        extra = [v - nominal * iv.msgs for v, iv in zip(x, ivs)]
        out[name] = (extra, max(0.0, sum(extra) / total))
    return out


def _unsteady(key: CaseKey, a: Interval, b: Interval) -> str | None:
    """Why the difference of intervals ``a`` (N) and ``b`` (2N) would not
    cancel the per-call work, or None: the end-marker loop turned a
    different number of times, or a socket call count grew by other than
    a whole number per message (a partial send, an EAGAIN, a timeout)."""
    dm = b.msgs - a.msgs
    if a.calls["select"] != b.calls["select"]:
        return "end-marker resends differ"
    for name in CALLS:
        d = (b.calls[name] - a.calls[name]) * key.batch
        if d % dm:
            return f"{name} calls per message not whole ({d / key.batch / dm:.4f})"
    return None


def _difference(key: CaseKey, ivs: list[Interval]) -> Count:
    """The median over the steady (N, 2N) pairs of (count of 2N - count of
    N) / N; when none is steady only because of the end-marker loop, the
    resends taken out by a fit on them; else :class:`Unsteady`."""
    values, why = [], None
    for a in ivs:
        for b in ivs:
            if b.msgs != 2 * a.msgs:
                continue
            problem = _unsteady(key, a, b)
            if problem is None:
                values.append((b.instructions - a.instructions) / (b.msgs - a.msgs))
            why = why or problem
    if values:
        return Count(statistics.median(values), "difference")
    timing = _timing(key, ivs)
    others = [timing[name][0] for name in EVENTS if name != "resends"]
    if why == "end-marker resends differ" and all(max(x) - min(x) < VARIES for x in others):
        count = _fit(key, ivs, ("resends",))
        if "resends" in count.cost:  # they could be told from the messages
            return count
    raise Unsteady(f"timing-dependent work in a {key.mode} case ({why})")


def _fit(key: CaseKey, ivs: list[Interval], events: tuple[str, ...] = EVENTS) -> Count:
    import numpy as np

    msgs = np.array([iv.msgs for iv in ivs], dtype=float)
    y = np.array([iv.instructions for iv in ivs], dtype=float)
    timing = _timing(key, ivs)
    cols, used = [msgs, np.ones_like(msgs)], []
    for name in events:
        x = np.array(timing[name][0], dtype=float)
        # only what varies apart from the messages and the events already in
        # (a constant is the intercept's)
        base = np.column_stack(cols)
        resid = x - base @ np.linalg.lstsq(base, x, rcond=None)[0]
        if float(np.abs(resid).max()) >= VARIES:
            cols.append(x)
            used.append(name)
    design = np.column_stack(cols)
    dof = len(y) - design.shape[1]
    sol, *_ = np.linalg.lstsq(design, y, rcond=None)
    se = 0.0
    if dof > 0:
        resid = y - design @ sol
        cov = float(resid @ resid) / dof * np.linalg.pinv(design.T @ design)
        se = math.sqrt(max(0.0, float(cov[0, 0])))
    return Count(float(sol[0]), "fit", se, max(0, dof),
                 {name: timing[name][1] for name in events},
                 {name: float(v) for name, v in zip(used, sol[2:])})


def solve(key: CaseKey, ivs: list[Interval], deterministic: bool) -> Count:
    """Instructions per message from a case's intervals (see the note)."""
    return _difference(key, ivs) if deterministic else _fit(key, ivs)
