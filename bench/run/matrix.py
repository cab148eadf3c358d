"""The case matrix: scenario x transport x mode x size x batch x impl (x axes).

Design note
-----------
One case is one pyperf benchmark, named ``scenario/transport/mode/size/impl``
plus ``/batchN`` when it batches (:class:`bench.analysis.report.CaseKey`); the same
fields go into its metadata, which is what every consumer reads.  This
module only enumerates and validates: it opens no socket (transport
availability is asked of ``bench.run.transports``, batching of the runner).

Order: the two impls of a case are adjacent, so slow drift of the machine
during a run affects both sides of a speedup alike; a size's batches follow
each other, batch 1 first.

Impls (:mod:`bench.run.impls`, the registry): the twins (``cython``,
``python``) run everywhere; every other impl only where it applies
(:func:`applies`: it provides the measured side's function of the case and
runs its mode), e.g. the event-loop comparators (``fastsock._asyncloops``)
stream and pingpong over TCP and Unix streams in ``nonblocking`` mode, the
idioms (``socket-*``) where each has a meaning, an impl from outside what
it declares.  Other combinations are left out of the enumeration, with a
note (:func:`left_out`) where a selection had them, and a selection left
with nothing says why.  By default (:func:`select_impls`) quick and default
runs add the asyncio pair, ``full`` the uvloop pair too when uvloop is
installed; ``--impl all`` is every impl this machine has: the built-ins
and the entry points of ``fastsock.impls``.

Presets:
``quick``   every scenario, transport, mode and impl at 64 B (smoke run),
            plus datagram stream at batch 32
``default`` no IPv6 (:data:`PRESET_TRANSPORTS`); representative sizes:
            stream 64 B and 64 KiB (16 KiB for datagrams), pingpong 64 B;
            plus datagram stream 64 B at batch 32
``full``    every size: stream powers of 4 from 64 B to 1 MiB (datagrams up
            to the transport's maximum), pingpong 64 B to 64 KiB; datagram
            stream at batch 1, 8 and 32 up to 16 KiB

The ``connect`` scenario (connect + accept + close per iteration, both ends
in the measured process) is the exception to the product: it carries no
payload, so its cases have size 0 and ``--size`` does not apply to them;
it runs over the connection transports only (tcp4, tcp6, unix-stream) and
in the modes of ``fastsock.connect_accept`` (no spin); quick and default
run it in blocking mode, full in each of its modes (an explicit ``--mode``
picks them instead).  Asking for it explicitly (``--scenario connect``)
together with an explicitly named mode or transport it does not have is
an error; otherwise those are skipped for it, as a missing IPv6 is.

Batch (datagrams per syscall: ``sendmmsg`` on the measured side) applies to
datagram *stream* cases only, the send loop; pingpong (one datagram per
round trip) and stream sockets (no message boundary to batch) are batch 1.
Batch > 1 is compiled only: Python's socket module has no
sendmmsg/recvmmsg, so those cases have no Python twin (no speedup; their
comparison is with batch 1 of the same compiled case).  ``full`` batches
sizes up to 16 KiB only: what a batch saves is the per-call cost (syscall
entry and exit), a fixed amount per datagram that the copy and the
protocol work dwarf as the size grows.  Measured on a 2-CPU Xeon VM
(Linux 6.18; udp4, one thread, sendmmsg of 32 vs send): 0.24 µs saved
per datagram, 12% at 64 B, 9% at 16 KiB, nothing at 64 KiB; larger sizes
would add cases that only show the copy.  ``--batch LIST`` replaces the
preset's batches for every datagram stream size selected.

The tuning axes (socket buffer, connections in threads, Nagle) multiply
the cases they apply to; which values, and the full preset's sweeps, are
:mod:`bench.run.axes`'s.  A combination's impls stay adjacent.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# The vocabulary is the report schema's; re-exported: the matrix is where
# the run stage looks for it.
from bench.analysis.report import ASYNC_IMPLS as ASYNC_IMPLS
from bench.analysis.report import DGRAM_TRANSPORTS as DGRAM_TRANSPORTS
from bench.analysis.report import IDIOM_IMPLS as IDIOM_IMPLS
from bench.analysis.report import MODES as MODES
from bench.analysis.report import SCENARIOS as SCENARIOS
from bench.analysis.report import TRANSPORTS as TRANSPORTS
from bench.analysis.report import TWIN_IMPLS, CaseKey
from bench.run import impls as _impls
from bench.run.axes import Axes, AxisError, case_axes, check_applied
from bench.run.impls import BUILTIN_IMPLS as BUILTIN_IMPLS
from bench.run.impls import UVLOOP_IMPLS as UVLOOP_IMPLS
from bench.run.impls import ImplError
from fastsock._common import MAX_BATCH

# Scenarios with a peer at the other end (the others play both ends).
PEER_SCENARIOS = ("stream", "pingpong")
IMPLS = TWIN_IMPLS
# The twins and the event loops (BUILTIN_IMPLS adds the idioms).
ALL_IMPLS = IMPLS + ASYNC_IMPLS
# Where the event-loop comparators apply.
ASYNC_SCENARIOS = ("stream", "pingpong")
ASYNC_TRANSPORTS = ("tcp4", "tcp6", "unix-stream")
ASYNC_MODES = ("nonblocking",)
UVLOOP_HINT = "pip install 'fastsock[uvloop]'"
PRESETS = ("quick", "default", "full")

IPV6_TRANSPORTS = frozenset({"tcp6", "udp6"})
# The transports a preset runs when --transport is not given.  The default
# run leaves IPv6 out: over loopback it makes the same socket calls as IPv4
# (only the address family differs), and its cases (about a third of the
# matrix) would push the default run past its 10-minute budget now that it
# also has batching, event loops and connect.  quick (the smoke run) and
# full keep it; --transport tcp6,udp6 asks for it.
PRESET_TRANSPORTS = {
    "quick": TRANSPORTS,
    "default": tuple(t for t in TRANSPORTS if t not in IPV6_TRANSPORTS),
    "full": TRANSPORTS,
}

MIN_SIZE = 1
# The connect scenario: its transports, its modes (fastsock.connect_accept's),
# the modes each preset runs, and the size of its cases (no payload).
CONNECT_TRANSPORTS = ("tcp4", "tcp6", "unix-stream")
CONNECT_MODES = ("blocking", "timeout", "nonblocking")
CONNECT_PRESET_MODES = {"quick": ("blocking",), "default": ("blocking",), "full": CONNECT_MODES}
CONNECT_SIZE = 0
# Largest stream message the suite sends (bytes): 64 MiB keeps a worker's
# buffers small while covering every size a user plausibly asks for.
MAX_STREAM_SIZE = 64 * 1024 * 1024

_POW4 = [64 * 4**k for k in range(8)]  # 64 B .. 1 MiB (bytes)


class MatrixError(ValueError):
    """A selection that names nothing valid; str() is one line."""


@dataclass(frozen=True)
class Selection:
    scenarios: tuple[str, ...] = SCENARIOS
    transports: tuple[str, ...] = TRANSPORTS
    modes: tuple[str, ...] = MODES
    impls: tuple[str, ...] = IMPLS
    sizes: tuple[int, ...] | None = None  # None: the preset's sizes
    preset: str = "default"
    batches: tuple[int, ...] | None = None  # None: the preset's batches
    # --sockbuf, --threads, --nodelay (None each: the preset's; bench.run.axes)
    axes: Axes = field(default_factory=Axes)


def preset_sizes(preset: str, scenario: str, transport: str, max_dgram: int) -> list[int]:
    """The sizes a preset runs for one scenario and transport (bytes)."""
    dgram = transport in DGRAM_TRANSPORTS
    if preset == "quick":
        return [64]
    if preset == "default":
        if scenario == "pingpong":
            return [64]
        return [64, 16384] if dgram else [64, 65536]
    # full
    top = 65536 if scenario == "pingpong" else _POW4[-1]
    sizes = [s for s in _POW4 if s <= top]
    if dgram:
        sizes = [s for s in sizes if s < max_dgram] + [max_dgram]
    return sizes


def applies(impl: str, scenario: str, transport: str, mode: str) -> bool:
    """Whether ``impl`` can run this combination (the twins run every one):
    the registry's answer (:meth:`bench.run.impls.Impl.applies`)."""
    return _impls.get(impl).applies(scenario, transport, mode)


def uvloop_installed() -> bool:
    """Whether uvloop is installed here.  Found, not imported: every pyperf
    worker enumerates the cases, and importing uvloop (and asyncio) would
    cost each one tens of milliseconds at start."""
    return importlib.util.find_spec("uvloop") is not None


def select_impls(text: str | None, preset: str, uvloop: bool) -> tuple[str, ...]:
    """The ``--impl`` value (None: the preset's default) as impl names.

    ``uvloop``: whether uvloop is installed here (:func:`uvloop_installed`).
    The default is the twins and the asyncio pair, plus the uvloop pair in ``full`` when installed;
    ``all`` is every impl available (the built-ins, the idioms included,
    and the entry points); a uvloop impl named without uvloop is an error
    with the install hint; so is every item the registry cannot resolve
    (:func:`bench.run.impls.select`).
    """
    if not text:
        chosen: tuple[str, ...] = IMPLS + ASYNC_IMPLS
        if preset != "full" or not uvloop:
            chosen = tuple(i for i in chosen if i not in UVLOOP_IMPLS)
        return chosen
    try:
        chosen = _impls.select(text, uvloop)
    except ImplError as exc:
        raise MatrixError(str(exc)) from None
    if not uvloop:
        named = [i for i in chosen if i in UVLOOP_IMPLS]
        if named:
            raise MatrixError(f"{named[0]} needs uvloop, which is not installed ({UVLOOP_HINT})")
    return chosen


# Largest datagram the full preset batches (bytes); see the design note.
FULL_BATCH_UP_TO = 16384
# The batch presets add (datagrams per syscall).
PRESET_BATCH = 32
FULL_BATCHES = (1, 8, 32)


def preset_batches(preset: str, size: int) -> tuple[int, ...]:
    """The batches a preset runs for one datagram stream size."""
    if preset == "full":
        return FULL_BATCHES if size <= FULL_BATCH_UP_TO else (1,)
    return (1, PRESET_BATCH) if size == 64 else (1,)


def case_batches(sel: Selection, scenario: str, transport: str, size: int,
                 batching: bool) -> tuple[int, ...]:
    """The batches of one (scenario, transport, size): datagram stream only."""
    if scenario != "stream" or transport not in DGRAM_TRANSPORTS:
        return (1,)
    wanted = sel.batches if sel.batches is not None else preset_batches(sel.preset, size)
    return tuple(b for b in wanted if b == 1 or batching)


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32): datagrams per syscall, 1 to MAX_BATCH."""
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise MatrixError(f"empty item in --batch {text!r}")
    out = []
    for item in items:
        try:
            value = int(item, 10)
        except ValueError:
            raise MatrixError(f"batch {item!r} is not a whole number of datagrams") from None
        if not 1 <= value <= MAX_BATCH:
            raise MatrixError(f"batch {item!r} must be 1 to {MAX_BATCH} datagrams per call")
        out.append(value)
    return tuple(dict.fromkeys(out))


def parse_list(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each checked against ``allowed``; 'all' = every."""
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise MatrixError(f"empty item in --{what} {text!r}")
    if items == ["all"]:
        return tuple(allowed)
    for item in items:
        if item not in allowed:
            raise MatrixError(
                f"unknown {what} {item!r} (expected one of: {', '.join(allowed)})"
            )
    return tuple(dict.fromkeys(items))


def parse_size(text: str) -> int:
    """'64', '4k', '4KiB', '1M' -> bytes (k/K = 1024)."""
    t = text.strip().lower().replace("ib", "").replace("b", "")
    mult = 1
    if t.endswith("k"):
        mult, t = 1024, t[:-1]
    elif t.endswith("m"):
        mult, t = 1024 * 1024, t[:-1]
    try:
        value = int(t) * mult
    except ValueError:
        raise MatrixError(f"size {text!r} is not a number of bytes") from None
    if value < MIN_SIZE:
        raise MatrixError(f"size {text!r} must be at least {MIN_SIZE} byte")
    return value


def parse_sizes(text: str) -> tuple[int, ...]:
    parts = list(text.split(","))
    if any(not p.strip() for p in parts):
        raise MatrixError(f"empty item in --size {text!r}")
    return tuple(dict.fromkeys(parse_size(p) for p in parts))


def cases(
    sel: Selection,
    *,
    max_dgram: dict[str, int],
    available: Iterable[str] = TRANSPORTS,
    explicit_transports: bool = False,
    explicit_scenarios: bool = False,
    explicit_modes: bool = False,
    batching: bool = True,
) -> list[CaseKey]:
    """Enumerate the selected cases.

    ``max_dgram``: the largest datagram of each datagram transport here.
    ``available``: transports this machine has (no IPv6: no tcp6/udp6);
    asking explicitly for a missing one is an error, the default drops it.
    ``explicit_*``: the user named those (not the defaults, not ``all``):
    see :func:`connect_cases`.
    ``batching``: the compiled loops have sendmmsg/recvmmsg (Linux); without
    it the presets' batch > 1 cases are dropped and ``--batch`` > 1 is an
    error.  Batch > 1 cases are compiled only (see the design note).
    """
    asked = [b for b in sel.batches or () if b > 1]
    if asked:
        flag = f"--batch {','.join(map(str, sel.batches or ()))}"
        if "cython" not in sel.impls:
            raise MatrixError(f"{flag}: Python's socket module has no sendmmsg/recvmmsg, so "
                              "batch > 1 cases are compiled only (--impl cython)")
        if not batching:
            raise MatrixError(f"{flag}: batch > 1 needs sendmmsg/recvmmsg, which only the "
                              "compiled loops on Linux have (not here)")
    avail = set(available)
    transports = []
    for t in sel.transports:
        if t not in avail:
            if explicit_transports:
                raise MatrixError(f"transport {t} is not available on this machine (no IPv6?)")
            continue
        transports.append(t)
    out: list[CaseKey] = []
    for scenario in sel.scenarios:
        if scenario == "connect":
            out += connect_cases(sel, transports, explicit_scenario=explicit_scenarios,
                                 explicit_modes=explicit_modes,
                                 explicit_transports=explicit_transports)
            continue
        for transport in transports:
            limit = max_dgram.get(transport, MAX_STREAM_SIZE)
            if sel.sizes is not None:
                for size in sel.sizes:
                    if size > limit:
                        what = "datagram" if transport in DGRAM_TRANSPORTS else "message"
                        raise MatrixError(
                            f"size {size} exceeds {transport}'s largest {what} ({limit} bytes)"
                        )
                sizes = list(sel.sizes)
            else:
                sizes = preset_sizes(sel.preset, scenario, transport, limit)
            for mode in sel.modes:
                for size in sizes:
                    for batch in case_batches(sel, scenario, transport, size, batching):
                        out += _axis_cases(sel, scenario, transport, mode, size, batch)
    if not out:
        limited = [i for i in sel.impls if i not in IMPLS]
        if limited and len(limited) == len(sel.impls):
            raise MatrixError(f"the selection names no case: {scopes(limited)}")
        raise MatrixError("the selection names no case")
    if asked and all(k.batch == 1 for k in out):
        raise MatrixError(f"--batch {','.join(map(str, sel.batches or ()))}: batches apply "
                          "to datagram stream cases (--scenario stream with udp4, udp6 or "
                          "unix-dgram); the selection has none")
    try:
        check_applied(sel.axes, out)
    except AxisError as exc:
        raise MatrixError(str(exc)) from None
    return out


def _axis_cases(sel: Selection, scenario: str, transport: str, mode: str, size: int,
                batch: int) -> list[CaseKey]:
    """One (scenario, transport, mode, size, batch) at each of its
    (sockbuf, threads, nodelay) combinations (bench.run.axes), the impls
    of a combination adjacent."""
    out: list[CaseKey] = []
    combos: dict[tuple[int, int, bool], list[str]] = {}
    for impl in sel.impls:
        if (batch == 1 or impl == "cython") and applies(impl, scenario, transport, mode):
            for combo in case_axes(sel.axes, sel.preset, scenario, transport, mode, size, impl):
                combos.setdefault(combo, []).append(impl)
    for (sockbuf, threads, nodelay), impls in combos.items():
        out += [CaseKey(scenario, transport, mode, size, impl, batch, sockbuf=sockbuf,
                        threads=threads, nodelay=nodelay) for impl in impls]
    return out


def connect_cases(sel: Selection, transports: Sequence[str], *, explicit_scenario: bool,
                  explicit_modes: bool, explicit_transports: bool) -> list[CaseKey]:
    """The connect scenario's cases (size CONNECT_SIZE; ``sel.sizes`` does
    not apply).  With ``--scenario`` naming it, a mode or transport named
    explicitly that it does not have is an error, not a silent skip."""
    if explicit_scenario:
        for what, named, allowed in (("mode", sel.modes, CONNECT_MODES),
                                     ("transport", sel.transports, CONNECT_TRANSPORTS)):
            explicit = explicit_modes if what == "mode" else explicit_transports
            bad = [x for x in named if x not in allowed]
            if explicit and bad:
                raise MatrixError(f"{what} {bad[0]} does not apply to scenario connect "
                                  f"(its {what}s: {', '.join(allowed)})")
    if explicit_modes:
        modes = [m for m in sel.modes if m in CONNECT_MODES]
    else:
        modes = list(CONNECT_PRESET_MODES[sel.preset])
    return [CaseKey("connect", t, m, CONNECT_SIZE, impl)
            for t in transports if t in CONNECT_TRANSPORTS
            for m in modes for impl in sel.impls if applies(impl, "connect", t, m)]


def scopes(names: Sequence[str]) -> str:
    """What each impl runs, impls of one scope together: 'asyncio-sock,
    uvloop-sock run only stream and pingpong over ... in nonblocking mode'."""
    by_scope: dict[str, list[str]] = {}
    for name in names:
        by_scope.setdefault(_impls.get(name).scope(), []).append(name)
    return "; ".join(f"{', '.join(ns)} run{'s' if len(ns) == 1 else ''} only {scope}"
                     for scope, ns in by_scope.items())


def left_out(sel: Selection, out: Sequence[CaseKey]) -> list[str]:
    """One line per impl left out of cases that other impls of the selection
    run: what it runs and how many of those cases it misses (batch > 1,
    compiled only, is not counted: the design note says why)."""
    combos = {(k.scenario, k.transport, k.mode, k.size) for k in out}
    have: dict[str, set[tuple[str, str, str, int]]] = {}
    for k in out:
        have.setdefault(k.impl, set()).add((k.scenario, k.transport, k.mode, k.size))
    notes = []
    for name in sel.impls:
        missed = len(combos - have.get(name, set()))
        if missed:
            notes.append(f"{scopes([name])}: left out of {missed} of the selection's "
                         f"{len(combos)} cases")
    return notes
