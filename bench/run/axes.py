"""The tuning axes of a case: socket buffer, connections in threads, Nagle.

Design note
-----------
Three knobs people who tune sockets reach for first (iperf3's ``-w``,
``-P``, ``-N``; netperf's ``-s``/``-S``), each a field of
:class:`bench.analysis.report.CaseKey` whose default is what the suite
measured before it had the knob, so a default case keeps its name:

``sockbuf``  bytes asked of ``SO_SNDBUF`` and ``SO_RCVBUF`` on both ends
             before they connect (0: the kernel's defaults, and for TCP its
             autotuning, which a set size turns off).  What the kernel
             granted is recorded, not assumed (:mod:`bench.run.transports`);
             it doubles a request and caps it at ``net.core.wmem_max`` /
             ``rmem_max``.  ``SO_SNDBUFFORCE`` (root only) is not used: a
             benchmark measures the machine as configured.
``threads``  N connections, each driven by its own thread of the measured
             process and served by a thread of one peer process
             (:mod:`bench.run.threads`); the event-loop impls run the N
             connections on their one loop instead.
``nodelay``  stream over TCP: the sender runs with ``TCP_NODELAY`` on (Nagle
             off).  Off by default, as before; ping-pong always has it on.

They apply to the cases with a peer (stream, pingpong); ``nodelay`` only
to stream over TCP.  A case they do not apply to runs at their defaults,
as a stream socket runs at batch 1.

Which values a run takes (:func:`case_axes`): with none of ``--sockbuf``,
``--threads``, ``--nodelay`` given, the preset's: quick and default none
(their budgets), full a sweep of one axis at a time on a representative
slice (:data:`FULL_SOCKBUFS`, :data:`FULL_THREADS`, :data:`FULL_NODELAY`,
in blocking mode for the twins; the event loops sweep only threads, in
their nonblocking mode), not their product, which would multiply the whole
matrix.  With any of them given,
the product of the given lists (the default for an axis not given) applies
to every case the axes apply to, and the preset's sweeps are off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.analysis.report import ASYNC_IMPLS, CaseKey

# Largest socket buffer asked for (bytes): setsockopt takes a C int, and
# the kernel doubles it (2 GiB would overflow); 512 MiB is far above any
# sysctl cap in use.
MAX_SOCKBUF = 1 << 29
# Most connections (threads) per case: a thread and two sockets each on
# both sides; beyond 64 a 2-CPU machine measures its scheduler.
MAX_THREADS = 64
NODELAY_WORDS = {"off": False, "on": True}
TCP = ("tcp4", "tcp6")
# The scenarios the axes apply to: those with a peer.
AXIS_SCENARIOS = ("stream", "pingpong")

# The full preset's sweeps (one axis at a time, the others at default).
# Socket buffer: 64 KiB stream over the stream transports, where the
# buffer is what bounds a burst (4 KiB, 64 KiB, the kernel's, 4 MiB).
FULL_SOCKBUFS = (4096, 65536, 0, 4 * 1024 * 1024)
FULL_SOCKBUF_SIZE = 65536
FULL_SOCKBUF_TRANSPORTS = ("tcp4", "tcp6", "unix-stream")
# Connections in threads: 64 B, where the per-message cost (the
# interpreter's, under the GIL) is most of the whole; stream and pingpong.
FULL_THREADS = (1, 2, 4)
FULL_THREADS_SIZE = 64
FULL_THREADS_TRANSPORTS = ("tcp4", "tcp6", "unix-stream")
# Nagle off: small stream messages over TCP, where Nagle coalesces.
FULL_NODELAY = (False, True)
FULL_NODELAY_SIZES = (64, 1024)
# The mode of the sweeps for the twins (the event loops have only theirs).
FULL_AXIS_MODE = "blocking"


class AxisError(ValueError):
    """A bad axis value; str() is one line."""


@dataclass(frozen=True)
class Axes:
    """The values of the three axes a selection asked for (None: not given)."""

    sockbufs: tuple[int, ...] | None = None
    threads: tuple[int, ...] | None = None
    nodelays: tuple[bool, ...] | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.sockbufs, self.threads, self.nodelays))


def _items(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise AxisError(f"empty item in --{flag} {text!r}")
    return items


def parse_sockbufs(text: str) -> tuple[int, ...]:
    """'4k,64k,default,4m' -> (4096, 65536, 0, 4194304); 'default' is 0."""
    from bench.run.matrix import MatrixError, parse_size

    out = []
    for item in _items(text, "sockbuf"):
        if item.lower() == "default":
            out.append(0)
            continue
        try:
            value = parse_size(item)
        except MatrixError:
            raise AxisError(f"socket buffer {item!r} is not a number of bytes"
                            " (or 'default')") from None
        if value > MAX_SOCKBUF:
            raise AxisError(f"socket buffer {item!r} is over {MAX_SOCKBUF} bytes")
        out.append(value)
    return tuple(dict.fromkeys(out))


def parse_threads(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): connections, 1 to MAX_THREADS."""
    out = []
    for item in _items(text, "threads"):
        try:
            value = int(item, 10)
        except ValueError:
            raise AxisError(f"threads {item!r} is not a whole number of connections") from None
        if not 1 <= value <= MAX_THREADS:
            raise AxisError(f"threads {item!r} must be 1 to {MAX_THREADS} connections")
        out.append(value)
    return tuple(dict.fromkeys(out))


def parse_nodelays(text: str) -> tuple[bool, ...]:
    """'on', 'off' or 'off,on' -> (False, True)."""
    out = []
    for item in _items(text, "nodelay"):
        if item.lower() not in NODELAY_WORDS:
            raise AxisError(f"--nodelay {item!r}: expected on or off")
        out.append(NODELAY_WORDS[item.lower()])
    return tuple(dict.fromkeys(out))


def _sweeps(scenario: str, transport: str, mode: str, size: int, impl_mode: bool
            ) -> list[tuple[int, int, bool]]:
    """The full preset's (sockbuf, threads, nodelay) combinations of one
    (scenario, transport, mode, size) besides the default (0, 1, False).
    ``impl_mode``: the mode is the sweeps' (blocking, or an event loop's)."""
    if not impl_mode:
        return []
    out: list[tuple[int, int, bool]] = []
    if scenario == "stream" and size == FULL_SOCKBUF_SIZE and \
            transport in FULL_SOCKBUF_TRANSPORTS:
        out += [(b, 1, False) for b in FULL_SOCKBUFS if b]
    if size == FULL_THREADS_SIZE and transport in FULL_THREADS_TRANSPORTS:
        out += [(0, n, False) for n in FULL_THREADS if n != 1]
    if scenario == "stream" and transport in TCP and size in FULL_NODELAY_SIZES:
        out += [(0, 1, d) for d in FULL_NODELAY if d]
    return out


def case_axes(axes: Axes, preset: str, scenario: str, transport: str, mode: str, size: int,
              impl: str) -> list[tuple[int, int, bool]]:
    """The (sockbuf, threads, nodelay) combinations one case runs, the
    default first; see the design note."""
    if scenario not in AXIS_SCENARIOS:
        return [(0, 1, False)]
    nodelay_applies = scenario == "stream" and transport in TCP
    if axes.given:
        sockbufs = axes.sockbufs or (0,)
        threads = axes.threads or (1,)
        nodelays = (axes.nodelays or (False,)) if nodelay_applies else (False,)
        return [(b, n, d) for b in sockbufs for n in threads for d in nodelays]
    out = [(0, 1, False)]
    if preset == "full":
        if impl in ASYNC_IMPLS:  # N connections on one loop; the rest is the twins'
            out += [c for c in _sweeps(scenario, transport, mode, size, True) if c[1] != 1]
        else:
            out += _sweeps(scenario, transport, mode, size, mode == FULL_AXIS_MODE)
    return list(dict.fromkeys(out))


def check_applied(axes: Axes, cases: Sequence[CaseKey]) -> None:
    """An axis asked off its default where no selected case takes it is an
    error, as --batch is (one line)."""
    for flag, asked, got in (
        ("sockbuf", any(axes.sockbufs or ()), any(k.sockbuf for k in cases)),
        ("threads", any(n != 1 for n in axes.threads or ()), any(k.threads != 1 for k in cases)),
        ("nodelay", any(axes.nodelays or ()), any(k.nodelay for k in cases)),
    ):
        if asked and not got:
            where = ("stream cases over TCP (--scenario stream with tcp4 or tcp6)"
                     if flag == "nodelay" else
                     "stream and pingpong cases (a peer at the other end)")
            raise AxisError(f"--{flag}: applies to {where}; the selection has none")
