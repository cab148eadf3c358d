"""The case matrix: scenario x transport x mode x size x batch x impl.

Design note
-----------
One case is one pyperf benchmark, named ``scenario/transport/mode/size/impl``
plus ``/batchN`` when it batches (:class:`bench._report.CaseKey`); the same
fields go into its metadata, which is what every consumer reads.  This
module only enumerates and validates: it opens no socket (transport
availability is asked of ``bench._transports``, batching of the runner).

Order: the two impls of a case are adjacent, so slow drift of the machine
during a run affects both sides of a speedup alike; a size's batches follow
each other, batch 1 first.

Presets:
``quick``   every scenario, transport, mode and impl at 64 B (smoke run),
            plus datagram stream at batch 32
``default`` representative sizes: stream 64 B and 64 KiB (16 KiB for
            datagrams), pingpong 64 B; plus datagram stream 64 B at batch 32
``full``    every size: stream powers of 4 from 64 B to 1 MiB (datagrams up
            to the transport's maximum), pingpong 64 B to 64 KiB; datagram
            stream at batch 1, 8 and 32 up to 16 KiB

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from bench._report import CaseKey
from fastsock._common import MAX_BATCH

SCENARIOS = ("stream", "pingpong")
TRANSPORTS = ("tcp4", "tcp6", "udp4", "udp6", "unix-stream", "unix-dgram")
MODES = ("blocking", "timeout", "nonblocking", "spin")
IMPLS = ("cython", "python")
PRESETS = ("quick", "default", "full")

DGRAM_TRANSPORTS = frozenset({"udp4", "udp6", "unix-dgram"})
IPV6_TRANSPORTS = frozenset({"tcp6", "udp6"})

MIN_SIZE = 1
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
    parts = [p for p in text.split(",")]
    if any(not p.strip() for p in parts):
        raise MatrixError(f"empty item in --size {text!r}")
    return tuple(dict.fromkeys(parse_size(p) for p in parts))


def cases(
    sel: Selection,
    *,
    max_dgram: dict[str, int],
    available: Iterable[str] = TRANSPORTS,
    explicit_transports: bool = False,
    batching: bool = True,
) -> list[CaseKey]:
    """Enumerate the selected cases.

    ``max_dgram``: the largest datagram of each datagram transport here.
    ``available``: transports this machine has (no IPv6: no tcp6/udp6);
    asking explicitly for a missing one is an error, the default drops it.
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
                        for impl in sel.impls:
                            if batch == 1 or impl == "cython":
                                out.append(CaseKey(scenario, transport, mode, size, impl,
                                                   batch))
    if not out:
        raise MatrixError("the selection names no case")
    if asked and all(k.batch == 1 for k in out):
        raise MatrixError(f"--batch {','.join(map(str, sel.batches or ()))}: batches apply "
                          "to datagram stream cases (--scenario stream with udp4, udp6 or "
                          "unix-dgram); the selection has none")
    return out
