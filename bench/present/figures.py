"""Figures of a fastsock report: throughput, RTT, speedup, compare ratios.

Design note
-----------
Each figure has a builder that returns a matplotlib ``Figure`` (or None when
the report has nothing for it), so tests inspect axes, labels and lines on
the objects, and :func:`plot_report` saves them as PNG and SVG.  Figures are
built with the object-oriented API (``matplotlib.figure.Figure``), never
pyplot: no backend is selected, no display is touched, and nothing
accumulates in pyplot's global figure list when a long process plots many
reports.  ``savefig`` renders PNG with Agg and SVG with the SVG backend.

One encoding across figures, so a reader learns it once: colour = mode
(Okabe-Ito, colour-blind safe), line style and marker = impl (compiled
solid, Python dashed, the event-loop impls dotted or dash-dotted, each with
its own marker).  Legends sit below the panels, outside every axes.
Each figure's title says what was measured and where (CPU model and count,
kernel, Python, fastsock commit, from the report's fingerprint).

What is plotted per case is the median over worker processes of each
process's median (the worker process is the unit of analysis, DESIGN.md);
RTT percentiles and CPU time are means over processes of the per-process
figures the runner records.  Units come from :mod:`bench.analysis.units`.

The connect scenario has no size axis: its figure is bars of connections
per second, grouped by transport, a bar per mode (colour) and impl
(compiled filled, Python hatched), with the range of the worker
processes' figures as a whisker and the speedup over each pair.  No
connect speedup heatmap: the bars carry it.

A count report (``run --measure instructions``) has its own figure per
scenario (:func:`count_figure`): instructions per message of the measured
side's user space, said so in its title; the compare figure then shows
instruction ratios.

Known limits: throughput lines carry no error bars (process-to-process
spread is a few percent, invisible on log-log axes; the compare figure is
where uncertainty is shown); the compare figure shows at most
``COMPARE_MAX_CASES`` cases, the largest changes first, and says so.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.analysis import compare as _compare
from bench.analysis import units as _units
from bench.analysis.compare import Comparison
from bench.analysis.counts import count
from bench.analysis.report import (
    COMPILED,
    INSTRUCTIONS,
    PYTHON,
    Case,
    CaseKey,
    Report,
    write_atomic,
)
from bench.analysis.report import DGRAM_TRANSPORTS as DATAGRAM_TRANSPORTS
from bench.analysis.shaping import (
    DEFAULT_PAIR,
    IMPL_ORDER,
    MODE_ORDER,
    TRANSPORT_ORDER,
    axes_label,
    case_seconds,
    default_axes,
    fmt_sockbuf,
    granted_buffers,
    ordered,
    speedups,
    where,
)
from bench.analysis.stats import Verdict

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
MODE_COLOURS = {
    "blocking": "#0072B2",
    "timeout": "#E69F00",
    "nonblocking": "#009E73",
    "spin": "#D55E00",
}
_SPARE_COLOURS = ("#CC79A7", "#56B4E9", "#F0E442", "#000000")
# The event-loop impls: dotted (asyncio) and dash-dotted (uvloop) lines,
# a marker of their own each, so six impls in one panel stay apart; the
# idioms: Python's dashes, with markers of their own.
IMPL_STYLES = {COMPILED: ("-", "o"), PYTHON: ("--", "s"),
               "asyncio-streams": (":", "^"), "asyncio-sock": (":", "v"),
               "uvloop-streams": ("-.", "D"), "uvloop-sock": ("-.", "P"),
               "socket-sendall": ((0, (5, 1)), "X"), "socket-recv": ((0, (5, 1)), "h"),
               "socket-makefile": ((0, (5, 1)), "*"), "socket-sendmsg": ((0, (5, 1)), "d")}
# Impls from outside fastsock: handed out in the order they are first drawn,
# so that up to len(_SPARE_STYLES) of them in one process never share one.
_SPARE_STYLES: tuple[tuple[Any, str], ...] = (
    ((0, (3, 1, 1, 1, 1, 1)), "<"), ((0, (1, 1)), ">"), ((0, (8, 2)), "p"),
    ((0, (3, 1, 1, 1, 1, 1)), "8"), ((0, (1, 1)), "H"), ((0, (8, 2)), "1"))
_SPARE_GIVEN: dict[str, tuple[Any, str]] = {}
PANEL_W, PANEL_H = 4.8, 3.3  # inches per panel: 8 size ticks stay legible
RTT_MAX_COLS = 3  # RTT panels (one per impl) in a row before wrapping
SPEEDUP_COLOUR_CAP = 4.0  # heatmap colours saturate beyond 4× either way
COMPARE_MAX_CASES = 60  # rows in the compare figure; more stop being readable
PNG_DPI = 110


# ---------------------------------------------------------------- data


def _peer_note(cases: Iterable[Case]) -> str:
    peers = {str(c.metadata.get("peer_impl", COMPILED)) for c in cases}
    return "" if peers <= {COMPILED} else f" · peer: {'/'.join(sorted(peers))}"


def _title(fig: Figure, what: str, report: Report, cases: Iterable[Case]) -> None:
    fig.suptitle(f"{what}\n{where(report.fingerprint)}{_peer_note(cases)}",
                 fontsize=11)


def mode_colour(mode: str) -> str:
    if mode in MODE_COLOURS:
        return MODE_COLOURS[mode]
    return _SPARE_COLOURS[sum(map(ord, mode)) % len(_SPARE_COLOURS)]


def impl_style(impl: str) -> tuple[Any, str]:
    """(line style, marker) of an impl: the known ones' own, a spare one
    (the next not yet given) for an impl from outside."""
    if impl in IMPL_STYLES:
        return IMPL_STYLES[impl]
    if impl not in _SPARE_GIVEN:
        _SPARE_GIVEN[impl] = _SPARE_STYLES[len(_SPARE_GIVEN) % len(_SPARE_STYLES)]
    return _SPARE_GIVEN[impl]


def _series_label(mode: str, impl: str, batch: int) -> str:
    return f"{mode}, {impl}" + (f", batch {batch}" if batch != 1 else "")


@dataclass
class _Series:
    mode: str
    impl: str
    batch: int
    cases: list[Case]  # sorted by size

    @property
    def sizes(self) -> list[int]:
        return [c.key.size for c in self.cases]


def _series(cases: Iterable[Case]) -> list[_Series]:
    """Cases grouped into lines: one per (mode, impl, batch), by size."""
    groups: dict[tuple[str, str, int], list[Case]] = {}
    for c in cases:
        groups.setdefault((c.key.mode, c.key.impl, c.key.batch), []).append(c)
    modes = ordered((m for m, _, _ in groups), MODE_ORDER)
    impls = ordered((i for _, i, _ in groups), IMPL_ORDER)
    out = []
    for (mode, impl, batch), cs in sorted(
        groups.items(), key=lambda kv: (modes.index(kv[0][0]), impls.index(kv[0][1]), kv[0][2])
    ):
        out.append(_Series(mode, impl, batch, sorted(cs, key=lambda c: c.key.size)))
    return out


def _by_transport(cases: Iterable[Case]) -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.key.transport, []).append(c)
    return {t: groups[t] for t in ordered(groups, TRANSPORT_ORDER)}


def _panels(cases: list[Case]) -> tuple[dict[str, list[Case]], list[str], list[str]]:
    """A figure's panels (the cases by transport), its modes and impls, in
    the order every figure shows them."""
    return (_by_transport(cases), ordered((c.key.mode for c in cases), MODE_ORDER),
            ordered((c.key.impl for c in cases), IMPL_ORDER))


# ---------------------------------------------------------------- layout


def _grid(n: int, extra_h: float = 1.4) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` panels (3 columns from 5 panels on), room for the
    title above and the legend below."""
    ncols = 1 if n == 1 else 2 if n <= 4 else 3
    nrows = math.ceil(n / ncols)
    # At least 9 inches wide: the two-line title must fit.
    fig = Figure(figsize=(max(9.0, PANEL_W * ncols + 0.4), PANEL_H * nrows + extra_h),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)  # an empty slot in the last row
    return fig, axes[:n]


def _size_axis(ax: Any, sizes: Iterable[int]) -> None:
    """Log2 x axis ticked at the measured sizes, labelled in B/KiB/MiB."""
    ticks = sorted(set(sizes))
    ax.set_xscale("log", base=2)
    # Neighbouring sizes closer than a factor 1.5 (65507 next to 65536)
    # would print on top of each other: keep the first of such a pair.
    kept: list[int] = []
    for s in ticks:
        if not kept or s / kept[-1] >= 1.5:
            kept.append(s)
    rotate = len(kept) > 4
    ax.set_xticks(kept, [_units.fmt_size(s) for s in kept], rotation=40 if rotate else 0,
                  ha="right" if rotate else "center", rotation_mode="anchor")
    ax.minorticks_off()
    if len(ticks) == 1:
        ax.set_xlim(ticks[0] / 2, ticks[0] * 2)
    ax.set_xlabel("message size (bytes)")


def _log_y(ax: Any) -> None:
    """Log y axis labelled in plain numbers at 1-2-5 steps: '10²' makes a
    reader do arithmetic, and one labelled decade per panel is too few."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.yaxis.set_minor_formatter(NullFormatter())


POINTS_LOG_SPAN = 10  # points spanning more than this factor get a log y axis


def _points_y(axes: Sequence[Any], values: Sequence[float]) -> None:
    """One y scale for every panel of points.  Linear from zero while the
    values span less than POINTS_LOG_SPAN: honest for a few nearby points.
    Beyond, log: real RTT tails (p99 ~ 50 x p50 on a busy machine) and a
    stalled case would otherwise squash the other points onto the axis."""
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo > POINTS_LOG_SPAN:
        for ax in axes:
            _log_y(ax)
            ax.set_ylim(lo / 1.4, hi * 1.4)
        _densify_log_y(axes)
        return
    for ax in axes:
        ax.set_ylim(0, hi * 1.08)  # headroom: a point on the frame is half hidden


def _densify_log_y(axes: Sequence[Any]) -> None:
    """Where the final y range spans too little for 1-2-5 ticks (fewer than
    three visible), tick every integer multiple of the decade instead."""
    from matplotlib.ticker import LogLocator

    for ax in axes:
        lo, hi = ax.get_ylim()
        visible = [t for t in ax.get_yticks() if lo <= t <= hi]
        if len(visible) < 3:
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10))))


def _plain_number(value: float, _pos: Any = None) -> str:
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _share_limits(axes: Sequence[Any], x: bool = True, y: bool = True) -> None:
    """Same ranges on every panel, so transports compare at a glance; the
    ticks stay per panel (a UDP panel has no 1 MiB tick to show)."""
    if x:
        lo = min(ax.get_xlim()[0] for ax in axes)
        hi = max(ax.get_xlim()[1] for ax in axes)
        for ax in axes:
            ax.set_xlim(lo, hi)
    if y:
        lo = min(ax.get_ylim()[0] for ax in axes)
        hi = max(ax.get_ylim()[1] for ax in axes)
        for ax in axes:
            ax.set_ylim(lo, hi)


def _legend(fig: Figure, modes: Sequence[str], impls: Sequence[str],
            extra: Sequence[Any] = (), points: bool = False) -> None:
    """Below the panels: what the colours (mode) and styles (impl) mean; one
    row where it fits the figure's width, else a row for modes and as few
    rows for impls as fit (a legend wider than the figure is cut off)."""
    # Invisible handles act as headings, so the legend says which channel
    # (colour or style) encodes what.
    modes_row: list[Any] = [Patch(color="none", label="colour = mode:")]
    modes_row += [Patch(color=mode_colour(m), label=m) for m in modes]
    impls_row: list[Any] = [Patch(color="none",
                                  label="marker = impl:" if points else "line = impl:")]
    for impl in impls:
        ls, marker = impl_style(impl)
        impls_row.append(Line2D([], [], color="0.25", ls="none" if points else ls,
                                marker=marker, mfc="white" if points and impl != COMPILED
                                else "0.25", label=impl))
    impls_row.extend(extra)
    fontsize = 9
    em = fontsize / 72  # inches
    def width(h: Any) -> float:
        return (2.6 + 0.8 + 1.2 + 0.55 * len(h.get_label())) * em
    room = fig.get_figwidth() - 0.3
    if sum(map(width, modes_row + impls_row)) < room:
        handles, ncol = modes_row + impls_row, len(modes_row) + len(impls_row)
    else:
        # A row for modes, then the impls in as few rows as fit (six impls
        # and a note are wider than one figure); the rows share columns.
        blank = Patch(color="none", label="")
        heading, items = impls_row[0], impls_row[1:]
        for per_row in range(len(items), 0, -1):
            rows = [modes_row] + [[heading if k == 0 else blank] + items[k:k + per_row]
                                  for k in range(0, len(items), per_row)]
            ncol = max(map(len, rows))
            rows = [r + [blank] * (ncol - len(r)) for r in rows]
            if sum(max(width(r[c]) for r in rows) for c in range(ncol)) < room:
                break
        # Legend entries fill column by column: interleave to get the rows.
        handles = [r[c] for c in range(ncol) for r in rows]
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False,
               fontsize=fontsize, handlelength=2.6, columnspacing=1.2)


# ---------------------------------------------------------------- figures


def throughput_figure(report: Report) -> Figure | None:
    """(a) Stream throughput vs message size, a panel per transport."""
    cases = [c for c in report.cases if c.key.scenario == "stream" and default_axes(c.key)]
    if not cases:
        return None
    groups, modes, impls = _panels(cases)
    sizes = sorted({c.key.size for c in cases})
    fig, axes = _grid(len(groups))
    for ax, (transport, tcases) in zip(axes, groups.items()):
        if len(sizes) == 1:
            # A line through one x is no line: points per mode, from zero.
            _points(ax, tcases, modes, impls, lambda c: (
                _units.throughput_mbps(c.key.size, case_seconds(c)), None))
        else:
            for s in _series(tcases):
                ls, marker = impl_style(s.impl)
                mbps = [_units.throughput_mbps(c.key.size, case_seconds(c)) for c in s.cases]
                ax.plot(s.sizes, mbps, ls=ls, marker=marker, ms=4, lw=1.5,
                        color=mode_colour(s.mode),
                        label=_series_label(s.mode, s.impl, s.batch))
            _size_axis(ax, (c.key.size for c in tcases))
            _log_y(ax)
        ax.set_ylabel("throughput (MB/s)")
        note = " (delivered)" if transport in DATAGRAM_TRANSPORTS else ""
        ax.set_title(transport + note, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    if len(sizes) == 1:
        _points_y(axes, [_units.throughput_mbps(c.key.size, case_seconds(c)) for c in cases])
        what = f"Stream throughput, {_units.fmt_size(sizes[0])} messages"
    else:
        _share_limits(axes)
        _densify_log_y(axes)
        what = "Stream throughput vs message size"
    _title(fig, what + " (sender measured; MB = 10⁶ bytes)", report, cases)
    _legend(fig, modes, impls, points=len(sizes) == 1)
    return fig


def _rtt(case: Case) -> tuple[float, float | None, float | None]:
    """(centre, p50, p99) in µs; the centre is p50 where recorded, else the
    mean RTT (pyperf's value)."""
    p50, p99 = case.run_mean("rtt_p50"), case.run_mean("rtt_p99")
    centre = p50 if p50 is not None else case_seconds(case)
    return (_units.usec(centre),
            None if p50 is None else _units.usec(p50),
            None if p99 is None else _units.usec(p99))


def rtt_figure(report: Report) -> Figure | None:
    """(b) Ping-pong RTT.  Measured at one size (the default run): a panel
    per transport, x = mode, a point at p50 with a bar to p99.  At several
    sizes: a p50 line with a p50-p99 band vs size, a panel per transport and
    impl (eight overlapping bands in one panel read as a smear)."""
    cases = [c for c in report.cases if c.key.scenario == "pingpong" and default_axes(c.key)]
    if not cases:
        return None
    groups, modes, impls = _panels(cases)
    sizes = sorted({c.key.size for c in cases})
    band_note = Patch(color="0.6", alpha=0.35, label="band: p50 to p99")
    if len(sizes) == 1:
        fig, axes = _grid(len(groups))
        for ax, (transport, tcases) in zip(axes, groups.items()):
            _points(ax, tcases, modes, impls, lambda c: (_rtt(c)[0], _rtt(c)[2]))
            ax.set_title(transport, fontsize=10)
            ax.set_ylabel("RTT (µs)")
            ax.grid(True, axis="y", alpha=0.3)
        rtts = [_rtt(c) for c in cases]
        _points_y(axes, [r[0] for r in rtts] + [r[2] for r in rtts if r[2] is not None])
        what = f"Ping-pong round-trip time (RTT), {_units.fmt_size(sizes[0])} messages"
        extra: list[Any] = [Line2D([], [], color="0.25", marker="o", ms=5, ls="-", lw=1,
                                   label="point: p50, bar: to p99")]
        points = True
    else:
        # a transport's panels side by side, wrapped after RTT_MAX_COLS (the
        # event-loop impls make up to six): a figure stays readable in width
        n = len(impls)
        ncols = n if n <= RTT_MAX_COLS else 2 if n == 4 else RTT_MAX_COLS
        per_transport = math.ceil(n / ncols)
        nrows = len(groups) * per_transport
        fig = Figure(figsize=(PANEL_W * ncols + 0.4, 2.9 * nrows + 1.4), layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False)
        axes = []
        for t, (transport, tcases) in enumerate(groups.items()):
            slots = [grid[t * per_transport + k // ncols][k % ncols]
                     for k in range(per_transport * ncols)]
            for ax in slots[n:]:
                ax.set_visible(False)
            for ax, impl in zip(slots, impls):
                axes.append(ax)
                for s in _series(c for c in tcases if c.key.impl == impl):
                    _rtt_series(ax, s)
                _size_axis(ax, sizes)
                _log_y(ax)
                ax.set_title(f"{transport} · {impl}", fontsize=10)
                ax.set_ylabel("RTT (µs)")
                ax.grid(True, which="major", alpha=0.3)
        _share_limits(axes)
        _densify_log_y(axes)
        what = "Ping-pong round-trip time (RTT) vs message size"
        extra = [band_note]
        points = False
    _title(fig, what, report, cases)
    _legend(fig, modes, impls, extra, points=points)
    return fig


def _rtt_series(ax: Any, s: _Series) -> None:
    ls, marker = impl_style(s.impl)
    colour = mode_colour(s.mode)
    rtts = [_rtt(c) for c in s.cases]
    label = _series_label(s.mode, s.impl, s.batch)
    has_band = all(r[1] is not None and r[2] is not None for r in rtts)
    if len(rtts) == 1:  # one size: a point with a bar, a band needs two
        centre, _, p99 = rtts[0]
        yerr = [[0.0], [max(0.0, p99 - centre)]] if p99 is not None else None
        ax.errorbar(s.sizes, [centre], yerr=yerr, fmt=marker, ms=4, capsize=3,
                    color=colour, label=label)
        return
    ax.plot(s.sizes, [r[0] for r in rtts], ls=ls, marker=marker, ms=4, lw=1.5,
            color=colour, label=label)
    if has_band:
        ax.fill_between(s.sizes, [r[1] for r in rtts], [r[2] for r in rtts],
                        color=colour, alpha=0.15, lw=0)


def _points(ax: Any, cases: list[Case], modes: Sequence[str], impls: Sequence[str],
            value: Callable[[Case], tuple[float, float | None]]) -> None:
    """One size: x = mode, the impls side by side (compiled filled, Python
    hollow); a point at value()[0] with a bar up to value()[1] if given."""
    width = 0.6 / max(1, len(impls))
    present = [m for m in modes if any(c.key.mode == m for c in cases)]
    for c in cases:
        if c.key.mode not in present:
            continue
        x = present.index(c.key.mode) + (impls.index(c.key.impl) - (len(impls) - 1) / 2) * width
        centre, upper = value(c)
        yerr = [[0.0], [max(0.0, upper - centre)]] if upper is not None else None
        _, marker = impl_style(c.key.impl)
        ax.errorbar([x], [centre], yerr=yerr, fmt=marker, ms=6, capsize=4,
                    color=mode_colour(c.key.mode), mfc=mode_colour(c.key.mode)
                    if c.key.impl == COMPILED else "white",
                    label=_series_label(c.key.mode, c.key.impl, c.key.batch))
    ax.set_xticks(range(len(present)), present)
    ax.set_xlim(-0.6, len(present) - 0.4)
    ax.set_xlabel("mode")


def connect_figure(report: Report) -> Figure | None:
    """(e) Connections per second: bars grouped by transport, one per
    (mode, impl), a whisker over the worker processes' range, the speedup
    (Python time / compiled time) above each compiled/Python pair."""
    cases = [c for c in report.cases if c.key.scenario == "connect"]
    if not cases:
        return None
    groups, modes, impls = _panels(cases)
    slots = [(m, i) for m in modes for i in impls]
    width = 0.8 / len(slots)
    sp = speedups(report, "connect")
    fig = Figure(figsize=(max(9.0, 1.2 + len(groups) * (0.9 + 0.45 * len(slots))), 5.2),
                 layout="constrained")
    ax = fig.subplots()
    top = 0.0
    for g, (_transport, tcases) in enumerate(groups.items()):
        by = {(c.key.mode, c.key.impl): c for c in tcases}
        for j, (mode, impl) in enumerate(slots):
            case = by.get((mode, impl))
            if case is None:
                continue
            x = g + (j - (len(slots) - 1) / 2) * width
            rate = _units.msg_rate(case_seconds(case)) / 1e3
            procs = [_units.msg_rate(v) / 1e3 for v in case.process_medians()]
            colour = mode_colour(mode)
            compiled = impl == COMPILED
            ax.bar([x], [rate], width=width * 0.92, color=colour if compiled else "white",
                   edgecolor=colour, hatch=None if compiled else "///", lw=1.2, zorder=2)
            ax.errorbar([x], [rate], yerr=[[rate - min(procs)], [max(procs) - rate]],
                        fmt="none", ecolor="0.15", elinewidth=1, capsize=2.5, zorder=3)
            ax.annotate(f"{rate:,.1f}", (x, max(procs)), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        rotation=90 if len(slots) > 4 else 0)
            top = max(top, max(procs))
            if compiled and case.key in sp:
                pair = [j2 for j2, s2 in enumerate(slots) if s2[0] == mode]
                centre = g + ((pair[0] + pair[-1]) / 2 - (len(slots) - 1) / 2) * width
                ax.annotate(f"{_units.fmt_ratio(sp[case.key])}", (centre, 0), xytext=(0, -4),
                            textcoords="offset points", ha="center", va="top", fontsize=8,
                            color="0.2", annotation_clip=False)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.tick_params(axis="x", pad=16)  # room for the speedups under the bars
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel("connections per second (thousands)")
    ax.grid(True, axis="y", alpha=0.3)
    _title(fig, "Connections set up and torn down per second (connect + accept + close, "
                "both ends in one process)\nbars: median over worker processes; whisker: "
                "their range; under each pair: speedup (Python time / compiled time)",
           report, [])
    handles: list[Any] = [Patch(color="none", label="colour = mode:")]
    handles += [Patch(color=mode_colour(m), label=m) for m in modes]
    handles.append(Patch(color="none", label="fill = impl:"))
    handles += [Patch(facecolor="0.35" if i == COMPILED else "white", edgecolor="0.35",
                      hatch=None if i == COMPILED else "///", label=i) for i in impls]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False,
               fontsize=9)
    return fig


def count_figure(report: Report, scenario: str) -> Figure | None:
    """(f) A count report's instructions per message (round trip,
    connection) of the measured side's user space, a panel per transport:
    lines vs message size, or points per mode where one size was counted."""
    if report.measure != INSTRUCTIONS:
        return None
    cases = [c for c in report.cases if c.key.scenario == scenario and default_axes(c.key)]
    if not cases:
        return None
    groups, modes, impls = _panels(cases)
    sizes = sorted({c.key.size for c in cases})
    what = _units.count_what(scenario)
    fig, axes = _grid(len(groups))
    for ax, (transport, tcases) in zip(axes, groups.items()):
        if len(sizes) == 1:
            _points(ax, tcases, modes, impls, lambda c: (count(c), None))
        else:
            for s in _series(tcases):
                ls, marker = impl_style(s.impl)
                ax.plot(s.sizes, [count(c) for c in s.cases], ls=ls, marker=marker,
                        ms=4, lw=1.5, color=mode_colour(s.mode),
                        label=_series_label(s.mode, s.impl, s.batch))
            _size_axis(ax, (c.key.size for c in tcases))
            _log_y(ax)
        ax.set_ylabel(f"instructions per {what}")
        ax.set_title(transport, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    if len(sizes) == 1:
        _points_y(axes, [count(c) for c in cases])
        at = "" if scenario == "connect" else f", {_units.fmt_size(sizes[0])} messages"
    else:
        _share_limits(axes)
        _densify_log_y(axes)
        at = " vs message size"
    _title(fig, f"User-space instructions per {what}{at}\n(valgrind callgrind: the measured "
                "side's interpreter, extension and libc; not the kernel's work)", report, cases)
    _legend(fig, modes, impls, points=len(sizes) == 1)
    return fig


def speedup_figure(report: Report, scenario: str,
                   pair: tuple[str, str] = DEFAULT_PAIR) -> Figure | None:
    """(c) Speedup heatmap of ``pair`` = (base, impl), by default
    compiled/Python: rows transport, columns size, a panel per mode, cells
    annotated.  Measured at one size (ping-pong in the default run), one
    panel with a column per mode instead: four one-column panels waste the
    page."""
    # the axes have figures of their own (sockbuf_figure, threads_figure)
    sp = {k: v for k, v in speedups(report, scenario, pair).items() if default_axes(k)}
    if not sp:
        return None
    modes = ordered((k.mode for k in sp), MODE_ORDER)
    rows = [(t, b) for t in ordered((k.transport for k in sp), TRANSPORT_ORDER)
            for b in sorted({k.batch for k in sp if k.transport == t})]
    row_labels = [t if b == 1 else f"{t} batch {b}" for t, b in rows]
    sizes = sorted({k.size for k in sp})
    # Symmetric in log space around 1 (no change), so 2× faster and 2× slower
    # are equally strong: blue = compiled faster, red = compiled slower.
    # Capped: one wild case (a stalled quick run gave 1924×) would otherwise
    # wash every other cell out to white; beyond the cap colours saturate
    # and the annotation still gives the number.
    extreme = max(max(v, 1 / v) for v in sp.values())
    hi = min(max(1.1, extreme), SPEEDUP_COLOUR_CAP)
    norm = LogNorm(vmin=1 / hi, vmax=hi, clip=True)
    panels: list[tuple[str, np.ndarray, list[str], str]] = []
    if len(sizes) == 1:
        grid = np.full((len(rows), len(modes)), np.nan)
        for k, v in sp.items():
            grid[rows.index((k.transport, k.batch)), modes.index(k.mode)] = v
        panels.append((f"{_units.fmt_size(sizes[0])} messages", grid, modes, "mode"))
    else:
        for mode in modes:
            grid = np.full((len(rows), len(sizes)), np.nan)
            for k, v in sp.items():
                if k.mode == mode:
                    grid[rows.index((k.transport, k.batch)), sizes.index(k.size)] = v
            panels.append((mode, grid, [_units.fmt_size(x) for x in sizes],
                           "message size (bytes)"))
    ncolumns = len(panels[0][2])
    panel_w = max(3.4, 1.4 + 0.66 * ncolumns)
    panel_h = max(2.4, 1.3 + 0.36 * len(rows))
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    # At least wide enough for the two-line title.
    fig = Figure(figsize=(max(9.0, panel_w * ncols + 1.6), panel_h * nrows + 1.2),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes = axes[:len(panels)]
    image = None
    for ax, (title, grid, xlabels, xname) in zip(axes, panels):
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=_speedup_cmap(), norm=norm,
                          aspect="auto")
        # Cells not measured show the hatched background: a light grey
        # fill would read as a speedup of about 1.
        ax.patch.set_facecolor("white")
        ax.patch.set_hatch("///")
        ax.patch.set_edgecolor("0.75")
        for (i, j), v in np.ndenumerate(grid):
            if math.isnan(v):
                continue
            # Dark cells get white text; norm() is 0..1 along the colour map.
            dark = abs(float(norm(v)) - 0.5) > 0.3
            ax.text(j, i, f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center", va="center",
                    fontsize=8,
                    color="white" if dark else "black")
        rotate = len(xlabels) > 4
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=40 if rotate else 0,
                      ha="right" if rotate else "center", rotation_mode="anchor")
        ax.set_yticks(range(len(rows)), row_labels)
        ax.set_xlabel(xname)
        ax.set_ylabel("transport")
        ax.set_title(title, fontsize=10)
        ax.tick_params(length=0)
    if image is not None:
        base, impl = pair
        cbar = fig.colorbar(image, ax=axes, shrink=0.85, aspect=25,
                            extend="both" if extreme > hi else "neither",
                            # another pair's names would not fit: the title gives them
                            label="speedup (Python time / compiled time, ×)"
                            if pair == DEFAULT_PAIR else "speedup (×, see the title)")
        ticks = _colourbar_ticks(hi)
        cbar.set_ticks(ticks, labels=[f"{t:g}×" if t >= 1 else f"{t:.2g}×" for t in ticks])
        cbar.ax.minorticks_off()
        cbar.ax.axhline(1.0, color="0.2", lw=0.8)
    what = {"stream": "stream throughput", "pingpong": "ping-pong RTT"}.get(scenario, scenario)
    if pair == DEFAULT_PAIR:
        title = (f"Speedup of the compiled loops ({COMPILED}) over pure Python in {what}\n"
                 "(Python time / compiled time: > 1 compiled faster; hatched: not measured)")
    else:
        title = (f"Speedup of {impl} over {base} in {what}\n"
                 f"({base} time / {impl} time: > 1 {impl} faster; hatched: not measured)")
    _title(fig, title, report, [c for c in report.cases if c.key.scenario == scenario])
    return fig


def _axis_series(cases: Iterable[Case], axis: str) -> dict[tuple[Any, ...], list[Case]]:
    """Cases grouped into lines along one axis ('sockbuf' or 'threads'):
    every other field equal, at least two points, sorted along the axis."""
    groups: dict[tuple[Any, ...], list[Case]] = {}
    for c in cases:
        k = c.key
        rest = tuple(getattr(k, f) for f in ("scenario", "transport", "mode", "size", "impl",
                                             "batch", "sockbuf", "threads", "nodelay")
                     if f != axis)
        groups.setdefault(rest, []).append(c)
    return {rest: sorted(cs, key=lambda c: _axis_rank(c.key, axis))
            for rest, cs in groups.items()
            if len(cs) > 1 and any(getattr(c.key, axis) != (1 if axis == "threads" else 0)
                                   for c in cs)}


def _axis_rank(key: CaseKey, axis: str) -> float:
    value = getattr(key, axis)
    if axis == "sockbuf" and value == 0:
        return math.inf  # the kernel's default (autotuned) after every set size
    return float(value)


def sockbuf_figure(report: Report) -> Figure | None:
    """(f) Stream throughput vs socket buffer (``--sockbuf``), a panel per
    transport, a line per (mode, impl, size); each tick names the size
    asked and what the kernel granted (the measured end's send buffer)."""
    series = _axis_series((c for c in report.cases if c.key.scenario == "stream"), "sockbuf")
    if not series:
        return None
    cases = [c for cs in series.values() for c in cs]
    groups, modes, impls = _panels(cases)
    fig, axes = _grid(len(groups))
    for ax, (transport, tcases) in zip(axes, groups.items()):
        asked = sorted({c.key.sockbuf for c in tcases}, key=lambda b: math.inf if b == 0 else b)
        labels = []
        for b in asked:
            got = {granted_buffers(c) for c in tcases if c.key.sockbuf == b} - {None}
            snd = sorted({g[0] for g in got if g is not None})
            grant = "/".join(_units.fmt_size(x) for x in snd) if snd else "?"
            labels.append(f"{fmt_sockbuf(b)}\n(got {grant})")
        for rest, cs in series.items():
            if rest[1] != transport:
                continue
            key = cs[0].key
            ls, marker = impl_style(key.impl)
            ax.plot([asked.index(c.key.sockbuf) for c in cs],
                    [_units.throughput_mbps(c.key.size, case_seconds(c)) for c in cs],
                    ls=ls, marker=marker, ms=5, lw=1.5, color=mode_colour(key.mode),
                    label=f"{key.mode}, {key.impl}, {_units.fmt_size(key.size)}")
        ax.set_xticks(range(len(asked)), labels, fontsize=8)
        ax.set_xlim(-0.4, len(asked) - 0.6)
        ax.set_xlabel("socket buffer asked, both ends (got: send buffer granted)")
        ax.set_ylabel("throughput (MB/s)")
        sizes = ", ".join(_units.fmt_size(x) for x in sorted({c.key.size for c in tcases}))
        ax.set_title(f"{transport} · {sizes} messages", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(bottom=0)
    _share_limits(axes, x=False)
    _title(fig, "Stream throughput vs socket buffer (sender measured; MB = 10⁶ bytes; "
                "'default': the kernel's, autotuned)", report, cases)
    _legend(fig, modes, impls)
    return fig


def threads_figure(report: Report) -> Figure | None:
    """(g) N connections in N threads (``--threads``): a column per
    (scenario, transport); rows: the figure (stream: aggregate MB/s;
    pingpong: RTT per connection) and the measured process's CPU use
    (1.0 = one CPU's worth: where the GIL holds Python to one CPU)."""
    series = _axis_series(report.cases, "threads")
    if not series:
        return None
    cases = [c for cs in series.values() for c in cs]
    columns = ordered((f"{c.key.scenario} {c.key.transport}" for c in cases),
                      [f"{s} {t}" for s in ("stream", "pingpong") for t in TRANSPORT_ORDER])
    modes = ordered((c.key.mode for c in cases), MODE_ORDER)
    impls = ordered((c.key.impl for c in cases), IMPL_ORDER)
    ncols = len(columns)
    fig = Figure(figsize=(max(9.0, PANEL_W * ncols + 0.4), PANEL_H * 2 + 1.4),
                 layout="constrained")
    grid = fig.subplots(2, ncols, squeeze=False)
    threads = sorted({c.key.threads for c in cases})
    for j, column in enumerate(columns):
        top, bottom = grid[0][j], grid[1][j]
        for rest, cs in series.items():
            if f"{rest[0]} {rest[1]}" != column:
                continue
            key = cs[0].key
            ls, marker = impl_style(key.impl)
            style = dict(ls=ls, marker=marker, ms=5, lw=1.5, color=mode_colour(key.mode))
            xs = [c.key.threads for c in cs]
            if key.scenario == "stream":
                ys = [_units.throughput_mbps(c.key.size, case_seconds(c)) for c in cs]
            else:
                ys = [_units.usec(case_seconds(c)) for c in cs]
            top.plot(xs, ys, **style)
            uses = [(c.key.threads, c.run_mean("cpu_use")) for c in cs]
            bottom.plot([x for x, u in uses if u is not None],
                        [u for _, u in uses if u is not None], **style)
        scenario = column.split(" ")[0]
        sizes = sorted({c.key.size for c in cases if f"{c.key.scenario} {c.key.transport}"
                        == column})
        top.set_title(f"{column} · {', '.join(_units.fmt_size(x) for x in sizes)}", fontsize=10)
        top.set_ylabel("aggregate throughput (MB/s)" if scenario == "stream"
                       else "RTT per connection (µs)")
        bottom.set_ylabel("CPU use of the measured process\n(1 = one CPU's worth)")
        bottom.axhline(1.0, color="0.4", lw=0.8, ls=":")
        for ax in (top, bottom):
            ax.set_xticks(threads, [str(t) for t in threads])
            ax.set_xlabel("connections (a thread each)")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
    _share_limits([grid[1][j] for j in range(ncols)], x=False)
    _title(fig, "Connections in threads: what the threads of one process reach (compiled "
                "loops release the GIL; Python's hold it)", report, cases)
    _legend(fig, modes, impls)
    return fig


def _colourbar_ticks(hi: float) -> list[float]:
    """Round ratios t and 1/t (symmetric, as the colours are) within
    [1/hi, hi], at least 1/7 of the bar apart in log space, and 1."""
    span = 2 * math.log(hi)
    kept = [1.0]
    for t in (2, 4, 1.5, 1.25, 3, 10, 5, 1.1):  # the roundest first
        if t <= hi * 1.0001 and all(abs(math.log(t / k)) >= span / 7 for k in kept):
            kept += [t, 1 / t]
    return sorted(kept)


def _speedup_cmap() -> Any:
    from matplotlib import colormaps

    # transparent: cells not measured show the axes' hatching
    return colormaps["RdBu"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


# ---------------------------------------------------------------- output


def _count_builders(report: Report) -> list[tuple[str, Callable[[], Figure | None]]]:
    return [(f"counts_{sc}", partial(count_figure, report, sc))
            for sc in ("stream", "pingpong", "connect")]


def figures(report: Report, base: Report | None = None,
            comparison: Comparison | None = None,
            pair: tuple[str, str] = DEFAULT_PAIR,
            counts: Report | None = None) -> dict[str, Figure]:
    """Every figure the report supports, by file-name stem; with a base,
    the compare figure (``comparison``: an already computed one); the
    speedup heatmaps are ``pair``'s (base impl, impl); with ``counts`` (a
    count report beside a time report), its count figures after the time
    figures (beside them, never in their place)."""
    builders: list[tuple[str, Callable[[], Figure | None]]]
    if report.measure == INSTRUCTIONS:
        builders = _count_builders(report)
    else:
        builders = [
            ("throughput", lambda: throughput_figure(report)),
            ("rtt", lambda: rtt_figure(report)),
            ("speedup_stream", lambda: speedup_figure(report, "stream", pair)),
            ("speedup_pingpong", lambda: speedup_figure(report, "pingpong", pair)),
            ("connect", lambda: connect_figure(report)),
            ("sockbuf", lambda: sockbuf_figure(report)),
            ("threads", lambda: threads_figure(report)),
        ]
        if counts is not None:
            builders += _count_builders(counts)
    if base is not None:
        builders.insert(0, ("compare", lambda: compare_figure(report, base, comparison)))
    out = {}
    for name, build in builders:
        fig = build()
        if fig is not None:
            out[name] = fig
    return out


def render(fig: Figure, fmt: str, dpi: int = PNG_DPI) -> bytes:
    """The figure's bytes in ``fmt`` (png or svg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi,
                metadata={"Software": "fastsock-bench"} if fmt == "png" else None)
    return buf.getvalue()


def plot_report(
    report: Report,
    outdir: str | Path,
    base: Report | None = None,
    formats: Sequence[str] = ("png", "svg"),
    prefix: str | None = None,
    comparison: Comparison | None = None,
    pair: tuple[str, str] = DEFAULT_PAIR,
    counts: Report | None = None,
) -> list[Path]:
    """Write every figure in every format to ``outdir`` (created if needed),
    named ``<prefix>_<figure>.<fmt>`` (prefix: the report's file stem);
    each file is written atomically.  Returns the paths written."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if prefix is None:
        prefix = Path(report.path).stem
    written = []
    for name, fig in figures(report, base, comparison, pair, counts).items():
        for fmt in formats:
            path = outdir / f"{prefix}_{name}.{fmt}"
            write_atomic(path, render(fig, fmt))
            written.append(path)
    return written


VERDICT_COLOURS = {
    Verdict.SLOWER: "#C0392B",  # the one to see: a regression
    Verdict.FASTER: "#1E8449",
    Verdict.INCONCLUSIVE: "#D4A017",
    Verdict.SAME: "#8C8C8C",
}


def case_label(key: CaseKey) -> str:
    """A case as a person reads it: 'stream tcp4 blocking 4 KiB cython'."""
    batch = f" batch {key.batch}" if key.batch != 1 else ""
    size = _units.fmt_size(key.size)
    axes = axes_label(key)
    return (f"{key.scenario} {key.transport} {key.mode} {size} {key.impl}{batch}"
            + (f" ({axes})" if axes else ""))


def compare_figure(report: Report, base: Report, comparison: Comparison | None = None,
                   max_cases: int = COMPARE_MAX_CASES) -> Figure | None:
    """(d) Time ratio new/base per case, a bar from 1 to the estimate with
    its 95% interval, coloured by verdict (regressions red), a line at 1 and
    the threshold band.  Past ``max_cases`` cases only the largest changes
    are drawn (the title says how many of how many)."""
    if comparison is None:
        comparison = _compare.compare_reports(base, report)
    results = comparison.cases
    if not results:
        return None
    t = comparison.settings.threshold
    # Calls first (slower, faster, inconclusive), then the largest changes.
    rank = {Verdict.SLOWER: 0, Verdict.FASTER: 1, Verdict.INCONCLUSIVE: 2, Verdict.SAME: 3}
    chosen = sorted(results, key=lambda r: (rank[r.time.verdict], -abs(math.log(r.time.est.ratio))))
    chosen = chosen[:max_cases]
    # Top to bottom: most slowed down first, most sped up last.
    chosen.sort(key=lambda r: -r.time.est.ratio)
    n = len(chosen)
    fig = Figure(figsize=(10.0, 2.3 + 0.24 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    ratios = np.array([r.time.est.ratio for r in chosen])
    colours = [VERDICT_COLOURS[r.time.verdict] for r in chosen]
    ax.axvspan(1 - t, 1 + t, color="0.88", zorder=0)
    ax.axvline(1.0, color="0.2", lw=1, zorder=1)
    ax.barh(y, ratios - 1, left=1, height=0.6, color=colours, zorder=2)
    for yi, r in zip(y, chosen):
        est = r.time.est
        if est.bounded:
            ax.errorbar([est.ratio], [yi], xerr=[[est.ratio - est.low], [est.high - est.ratio]],
                        fmt="none", ecolor="0.1", elinewidth=1, capsize=2.5, zorder=3)
    # A dot at each estimate: a bar of a ratio near 1 has no visible length.
    ax.plot(ratios, y, "o", ms=2.5, color="0.1", zorder=4)
    lows = [r.time.est.low for r in chosen if r.time.est.bounded] + list(ratios) + [1 - t]
    highs = [r.time.est.high for r in chosen if r.time.est.bounded] + list(ratios) + [1 + t]
    pad = 0.15 * (max(highs) - min(lows))
    ax.set_xlim(max(0.0, min(lows) - pad), max(highs) + pad)
    ax.set_yticks(y, [case_label(r.key) + ("" if r.time.est.bounded else " (no interval)")
                      for r in chosen], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ratio = "instruction ratio" if comparison.measure == INSTRUCTIONS else "time ratio"
    ax.set_xlabel(f"{ratio} new / base (×; > 1: slower, < 1: faster)")
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:g}×")
    ax.grid(True, axis="x", alpha=0.3)
    total = len(results)
    shown = f"all {total} cases" if n == total else f"the {n} largest changes of {total} cases"
    base_name, new_name = Path(base.path).name, Path(report.path).name
    what = (f"{new_name} vs base {base_name}: {ratio} with 95% interval, {shown}\n"
            f"(grey band: ±{100 * t:g}% threshold; "
            f"{comparison.settings.correction.value.upper()}-corrected verdicts)")
    if comparison.machine_differs:
        what += "\nWARNING: different machines (" + ", ".join(
            f"{d.key}: {d.base} vs {d.new}" for d in comparison.machine_differs) + ")"
    _title(fig, what, report, report.cases)
    counts = comparison.counts()
    handles: list[Any] = [
        Patch(color=VERDICT_COLOURS[v], label=f"{v.value} ({counts[v.value]})")
        for v in (Verdict.SLOWER, Verdict.FASTER, Verdict.INCONCLUSIVE, Verdict.SAME)]
    handles.append(Patch(color="0.88", label=f"±{100 * t:g}% threshold"))
    handles.append(Line2D([], [], color="0.1", marker="|", ms=8, lw=1, label="95% interval"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False,
               fontsize=9)
    return fig
