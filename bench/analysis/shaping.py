"""Shaping a report's data for the people who read it: orders, headline
figures, speedups (of any impl over another), where it was measured.

Design note: what the figures (:mod:`bench.present.figures`), the HTML
report and the summary table all need, computed once, here, so that they
cannot disagree on a number and so that drawing code holds no arithmetic
the HTML would have to borrow from matplotlib's side.  A case's headline
figure is the median over worker processes of each process's median (the
unit of analysis of :mod:`bench.analysis.stats`); a speedup is
:func:`bench.analysis.compare.speedup`'s estimate.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from bench.analysis import compare as _compare
from bench.analysis.compare import SpeedupResult
from bench.analysis.report import (
    ASYNC_IMPLS,
    COMPILED,
    IDIOM_IMPLS,
    MODES,
    PYTHON,
    TRANSPORTS,
    TWIN_IMPLS,
    Case,
    CaseKey,
    Report,
)

# Known values first, in this order; others (a newer report's, impls from
# outside fastsock) after them.
TRANSPORT_ORDER = TRANSPORTS
MODE_ORDER = MODES
IMPL_ORDER = (*TWIN_IMPLS, *ASYNC_IMPLS, *IDIOM_IMPLS)
# The impls a speedup compares unless told: (base, candidate).
DEFAULT_PAIR = (PYTHON, COMPILED)


def case_seconds(case: Case) -> float:
    """The case's headline value in seconds: median of process medians."""
    return statistics.median(case.process_medians())


def ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """``values`` deduplicated, known names in ``order`` first, then the rest."""
    seen = set(values)
    return [v for v in order if v in seen] + sorted(seen - set(order))


# speedup_results is asked for by several figures and tables of one report:
# its estimates cost a rank test per case, so the last few are kept.
_SPEEDUP_CACHE: list[tuple[Report, tuple[str, str], dict[CaseKey, SpeedupResult]]] = []


def speedup_results(report: Report, pair: tuple[str, str] = DEFAULT_PAIR
                    ) -> dict[CaseKey, SpeedupResult]:
    """bench.analysis.compare's speedup of ``pair`` = (base, impl) per case
    (estimate and 95% interval of base time / impl time; by default Python
    time / compiled time), keyed by the impl's case; empty when no case has
    both."""
    for cached, cached_pair, results in _SPEEDUP_CACHE:
        if cached is report and cached_pair == pair:
            return results
    try:
        results = {r.key: r for r in _compare.speedup(report, *pair).results}
    except ValueError:  # no case has both
        results = {}
    _SPEEDUP_CACHE.append((report, pair, results))
    del _SPEEDUP_CACHE[:-8]
    return results


def speedups(report: Report, scenario: str | None = None,
             pair: tuple[str, str] = DEFAULT_PAIR) -> dict[CaseKey, float]:
    """Speedup estimates (base time / impl time) per case of the pair's impl."""
    return {k: r.est.ratio for k, r in speedup_results(report, pair).items()
            if scenario is None or k.scenario == scenario}


def speedups_over(report: Report, base: str = PYTHON) -> dict[CaseKey, float]:
    """Every other impl's speedup over ``base`` (base time / its time) per
    case: the summary's column, > 1 where that impl is faster than the
    Python loop."""
    out: dict[CaseKey, float] = {}
    for impl in ordered((c.key.impl for c in report.cases), IMPL_ORDER):
        if impl != base:
            out.update(speedups(report, pair=(base, impl)))
    return out


def pair_title(pair: tuple[str, str]) -> str:
    """How a speedup of ``pair`` is named: 'compiled / Python' for the
    twins, else 'impl / base'."""
    return "compiled / Python" if pair == DEFAULT_PAIR else f"{pair[1]} / {pair[0]}"


def where(fp: dict[str, Any]) -> str:
    """One line saying where a report was measured, from its fingerprint."""
    parts = []
    cpu = str(fp.get("cpu_model_name", "unknown CPU")).strip()
    if "cpu_count" in fp:
        cpu += f" ({fp['cpu_count']} CPUs)"
    parts.append(cpu)
    kernel = fp.get("kernel") or fp.get("platform")
    if kernel:
        parts.append(f"Linux {kernel}" if str(kernel)[:1].isdigit() else str(kernel))
    if "python_version" in fp:
        parts.append("Python " + str(fp["python_version"]).split(" ")[0])
    if "fastsock_version" in fp:
        commit = fp.get("fastsock_commit")
        parts.append(f"fastsock {fp['fastsock_version']}"
                     + (f" @ {str(commit)[:10]}" if commit and commit != "unknown" else ""))
    return " · ".join(parts)


# ------------------------------------------------ the tuning axes (schema 2)


def table_rows(cases: Iterable[Case]) -> list[CaseKey]:
    """A table's rows when its impls sit side by side: each case key
    without its impl (``impl`` ''), in the order tables show them
    (transport, mode, size, batch, then the tuning axes)."""
    def rank(value: str, order: Sequence[str]) -> tuple[int, str]:
        return (order.index(value), "") if value in order else (len(order), value)

    return sorted({c.key.other_impl("") for c in cases},
                  key=lambda k: (rank(k.transport, TRANSPORT_ORDER), rank(k.mode, MODE_ORDER),
                                 k.size, k.batch, k.sockbuf, k.threads, k.nodelay))


def default_axes(key: CaseKey) -> bool:
    """The case runs at the kernel's buffers, one connection, Nagle as the
    scenario has it: what every figure by message size shows (the axes
    have figures of their own)."""
    return key.sockbuf == 0 and key.threads == 1 and not key.nodelay


def fmt_sockbuf(sockbuf: int) -> str:
    """A ``sockbuf`` as a person reads it: 'default' (the kernel's) or a size."""
    from bench.analysis.units import fmt_size

    return "default" if sockbuf == 0 else fmt_size(sockbuf)


def axes_label(key: CaseKey) -> str:
    """The case's axes off their defaults, e.g. 'sockbuf 4 KiB, 4 threads,
    nodelay on'; '' for a case at its defaults."""
    parts = []
    if key.sockbuf:
        parts.append(f"sockbuf {fmt_sockbuf(key.sockbuf)}")
    if key.threads != 1:
        parts.append(f"{key.threads} threads")
    if key.nodelay:
        parts.append("nodelay on")
    return ", ".join(parts)


def granted_buffers(case: Case) -> tuple[int, int] | None:
    """(send, receive) buffer the kernel granted the measured end, bytes."""
    snd, rcv = case.metadata.get("sndbuf"), case.metadata.get("rcvbuf")
    return (int(snd), int(rcv)) if snd is not None and rcv is not None else None


def capped_sockbufs(report: Report) -> list[str]:
    """One line per socket buffer size asked for and capped by the kernel
    (it grants at most twice net.core.wmem_max / rmem_max): a capped case
    measured a smaller buffer than its name says, and must say so."""
    from bench.analysis.units import fmt_size

    capped: dict[int, list[Case]] = {}
    for c in report.cases:
        if c.key.sockbuf and c.metadata.get("sockbuf_capped"):
            capped.setdefault(c.key.sockbuf, []).append(c)
    lines = []
    fp = report.fingerprint
    caps = ", ".join(f"{k.replace('_', '.', 2)} = {fmt_size(int(fp[k]))}"
                     for k in ("net_core_wmem_max", "net_core_rmem_max") if k in fp)
    for sockbuf, cases in sorted(capped.items()):
        grants = sorted({g for c in cases for g in (
            c.metadata.get("sndbuf"), c.metadata.get("rcvbuf"),
            c.metadata.get("peer_sndbuf"), c.metadata.get("peer_rcvbuf")) if g is not None})
        granted = "/".join(fmt_size(int(g)) for g in grants)
        lines.append(f"sockbuf {fmt_size(sockbuf)} asked ({len(cases)} case"
                     f"{'s' if len(cases) != 1 else ''}): the kernel granted {granted}, "
                     f"less than the {fmt_size(2 * sockbuf)} it grants below its cap"
                     f"{' (' + caps + ')' if caps else ''}; "
                     "raising the cap needs root (SO_SNDBUFFORCE is not used)")
    return lines
