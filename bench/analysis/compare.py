"""Comparing two reports (``compare``) and two impls inside one (``speedup``).

Design note
-----------
Cases are matched by their :class:`CaseKey` (metadata, never names); cases
in only one report are listed apart, not compared.  Per matched case the
figure compared is pyperf's value, seconds per message or round trip,
reduced to one median per worker process (:mod:`bench.analysis.stats` says why);
where both sides carry per-process ``rtt_p99`` run metadata, that is
compared too, as its own family of tests (own correction), shown but gating
only with ``gate_p99``: tails are noisier than means, and a red build
should be about the figure the case measures.

Machines: a different CPU model or count makes the numbers incomparable,
so :func:`machine_differences` is what ``compare`` refuses on (exit 3)
unless forced.  Every other fingerprint difference (Python, kernel,
fastsock commit, Cython, sysctls, host name) is what a comparison is often
about: it is listed on the "differs" line; so are per-case settings that
changed under the same key (peer implementation, socket buffers), since
they change what a case measures.  The load average always differs and is
left out.

This module computes; :mod:`bench.present.formats` renders.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.analysis import stats as _stats
from bench.analysis.report import (
    COMPILED,
    FINGERPRINT_KEYS,
    INSTRUCTIONS,
    PYTHON,
    TIME,
    Case,
    CaseKey,
    Report,
)
from bench.analysis.stats import Correction, Estimate, Verdict

MACHINE_KEYS = ("cpu_model_name", "cpu_count")
# Fingerprint keys that differ between any two runs and say nothing.
VOLATILE_KEYS = ("load_avg_1min",)
# How the reports were made, not what they measured: a note, not a "differs".
RUN_KEYS = ("interleaved", "interleaved_side")
DIFFERS_KEYS = tuple(k for k in FINGERPRINT_KEYS
                     if k not in MACHINE_KEYS + VOLATILE_KEYS + RUN_KEYS)
# Benchmark metadata that changes what a case measures without changing its key.
CASE_CONTEXT_KEYS = ("peer_impl", "tcp_nodelay", "sndbuf", "rcvbuf", "fastsock_loaded",
                     "placement")
# Where an impl came from (bench.run.impls): a change is what a comparison of
# an impl from commit to commit is about; compared only where both reports
# have it (older reports do not).
IMPL_CONTEXT_KEYS = ("impl_module", "impl_dist_version", "impl_version", "impl_contract")
P99_KEY = "rtt_p99"


@dataclass(frozen=True)
class Settings:
    threshold: float = _stats.THRESHOLD  # fraction: 0.05 is 5%
    alpha: float = _stats.ALPHA
    correction: Correction = Correction.BH
    gate_p99: bool = False


@dataclass(frozen=True)
class Difference:
    key: str
    base: Any
    new: Any


@dataclass(frozen=True)
class Metric:
    """One figure of one case, compared: medians are over process figures."""

    base: float  # seconds
    new: float
    est: Estimate  # ratio new/base
    p_adj: float
    verdict: Verdict


@dataclass(frozen=True)
class CaseResult:
    key: CaseKey
    time: Metric  # the case's figure: seconds, or instructions in a count comparison
    rtt_p99: Metric | None


@dataclass
class Comparison:
    base_path: str
    new_path: str
    settings: Settings
    cases: list[CaseResult]
    only_base: list[CaseKey]
    only_new: list[CaseKey]
    machine: dict[str, Any]  # the base report's machine keys
    machine_differs: list[Difference]
    differs: list[Difference]
    case_differs: dict[str, int]  # context key -> matched cases where it differs
    geomeans: dict[str, tuple[float, int]]  # scenario -> (time ratio, cases)
    notes: list[str] = field(default_factory=list)
    # what was compared: "time", or "instructions" (bench.analysis.counts)
    measure: str = TIME

    def regressions(self) -> list[CaseResult]:
        out = [c for c in self.cases if c.time.verdict is Verdict.SLOWER]
        if self.settings.gate_p99:
            out += [
                c for c in self.cases
                if c.rtt_p99 is not None and c.rtt_p99.verdict is Verdict.SLOWER
                and c.time.verdict is not Verdict.SLOWER
            ]
        return out

    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for c in self.cases:
            out[c.time.verdict.value] += 1
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions() else 0


def machine_differences(base: Report, new: Report) -> list[Difference]:
    """Differences that make two reports incomparable (CPU model, count).
    A key missing from one side is not refused on: it cannot be checked."""
    out = []
    for key in MACHINE_KEYS:
        b, n = base.fingerprint.get(key), new.fingerprint.get(key)
        if b is not None and n is not None and str(b) != str(n):
            out.append(Difference(key, b, n))
    return out


def _differs(base: Report, new: Report) -> list[Difference]:
    out = []
    for key in DIFFERS_KEYS:
        b, n = base.fingerprint.get(key), new.fingerprint.get(key)
        if (b is not None or n is not None) and str(b) != str(n):
            out.append(Difference(key, b, n))
    return out


def _case_differs(pairs: Iterable[tuple[Case, Case]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for b, n in pairs:
        for key in CASE_CONTEXT_KEYS:
            if str(b.metadata.get(key)) != str(n.metadata.get(key)):
                out[key] = out.get(key, 0) + 1
        for key in IMPL_CONTEXT_KEYS:
            if key in b.metadata and key in n.metadata and \
                    str(b.metadata[key]) != str(n.metadata[key]):
                out[key] = out.get(key, 0) + 1
    return out


differs = _differs  # for bench.analysis.counts
case_differs = _case_differs


def _p99(meta: dict[str, Any]) -> float | None:
    """A run's p99 RTT, or None when it has none (or a useless one)."""
    try:
        v = float(meta[P99_KEY])
    except (KeyError, TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _p99s(case: Case) -> list[float]:
    return [v for v in map(_p99, case.run_metadata) if v is not None]


def _slot_time(vals: list[float], other: list[float]) -> float | None:
    """log(new/base) of one lockstep slot: the median over its value pairs
    (value j of one side ran right after or before value j of the other);
    None when the two sides' value counts differ (no pairs)."""
    if len(vals) != len(other):
        return None
    return statistics.median(math.log(a / b) for a, b in zip(vals, other))


def _slot_p99(new_meta: dict[str, Any], base_meta: dict[str, Any]) -> float | None:
    a, b = _p99(new_meta), _p99(base_meta)
    return None if a is None or b is None else math.log(a / b)


def paired_diffs(base: Case, new: Case, p99: bool = False) -> list[float] | None:
    """Per-slot log ratios of a case measured in lockstep (both reports of
    one interleaved run), or None when the slots do not pair up one to one
    (other slot numbers or value counts on the two sides, fewer than 2)."""
    sb, sn = base.slots(), new.slots()
    if len(sb) < 2 or set(sb) != set(sn):
        return None
    out = []
    for slot in sorted(sb):
        (bv, bm), (nv, nm) = sb[slot], sn[slot]
        d = _slot_p99(nm, bm) if p99 else _slot_time(nv, bv)
        if d is None:
            return None
        out.append(d)
    return out


def _metrics(
    samples: list[tuple[list[float], list[float]]], settings: Settings,
    paired: list[list[float] | None] | None = None,
) -> list[Metric]:
    """Estimates for one family of tests, corrected together.  A case with
    per-slot log ratios in ``paired`` gets the paired test, the rest the
    two-group one."""
    paired = paired or [None] * len(samples)
    two = [i for i, d in enumerate(paired) if d is None]
    one = [(i, d) for i, d in enumerate(paired) if d is not None]
    ests: list[Estimate] = [None] * len(samples)  # type: ignore[list-item]
    if two:
        for i, e in zip(two, _stats.estimates([samples[i] for i in two])):
            ests[i] = e
    if one:
        for (i, _), e in zip(one, _stats.paired_estimates([d for _, d in one])):
            ests[i] = e
    p_adj = _stats.adjust([e.p for e in ests], settings.correction)
    return [
        Metric(
            statistics.median(b), statistics.median(n), e, p,
            _stats.verdict(e, p, settings.threshold, settings.alpha),
        )
        for (b, n), e, p in zip(samples, ests, p_adj)
    ]


def geomeans(ratios: Iterable[tuple[str, float]]) -> dict[str, tuple[float, int]]:
    """Geometric mean of ratios per scenario, with how many went in."""
    groups: dict[str, list[float]] = defaultdict(list)
    for scenario, ratio in ratios:
        groups[scenario].append(ratio)
    return {s: (_stats.geometric_mean(r), len(r)) for s, r in groups.items()}


def interleaved(base: Report, new: Report) -> bool:
    """True when both reports come from one ``run --base-python``."""
    b, n = base.fingerprint.get("interleaved"), new.fingerprint.get("interleaved")
    return b is not None and b == n and \
        base.fingerprint.get("interleaved_side") != new.fingerprint.get("interleaved_side")


def _notes(pairs: list[tuple[Case, Case]], metrics: list[Metric], settings: Settings,
           same_run: bool = True) -> list[str]:
    """Warnings about the comparison's power, in words a user can act on."""
    notes = []
    if not same_run:
        notes.append(
            "the reports come from separate runs: a shift of a whole run (other load, CPU "
            "frequency) counts as a change here; for a verdict to gate on, measure both in "
            "one run, interleaved: fastsock-bench run --base-python BASE_PYTHON"
        )
    lockstep = sum(x.est.paired for x in metrics)
    if lockstep:
        notes.append(
            f"{lockstep} of {len(metrics)} cases were measured in lockstep: compared slot by "
            "slot (t test on each slot's log time ratio, base and new timed in turn)"
        )
    # The rank test's floor; the paired (lockstep) test has none.
    ranked = [pair for pair, x in zip(pairs, metrics) if not x.est.paired]
    n = min((len(b.process_values) for b, _ in ranked), default=0)
    m = min((len(x.process_values) for _, x in ranked), default=0)
    floor = _stats.p_floor(n, m) if ranked else 0.0
    # BH and Holm both ask p < alpha / cases of a change that is alone.
    if floor >= settings.alpha / len(pairs):
        notes.append(
            f"with {n} and {m} worker processes a side the smallest possible p is "
            f"{floor:.2g}, over alpha/cases = {settings.alpha / len(pairs):.2g}: a change in "
            "a single case cannot be called; run more processes per case"
        )
    halves = [
        math.sqrt(x.est.high / x.est.low) - 1 for x in metrics if x.est.bounded
    ]
    if halves and statistics.median(halves) > settings.threshold:
        notes.append(
            f"the median 95% interval is ±{100 * statistics.median(halves):.1f}%, wider than "
            f"the ±{100 * settings.threshold:g}% threshold: most cases will be inconclusive; "
            "run more processes per case or quieten the machine"
        )
    return notes


def compare_reports(base: Report, new: Report, settings: Settings | None = None) -> Comparison:
    """Compare two loaded reports; raises ValueError if no case is in both or
    they hold different measures (counts: bench.analysis.counts).  Without
    ``settings``, the defaults, the threshold the measure's (1% for counts)."""
    from bench.analysis import counts as _counts

    _counts.check_same_measure(base, new)
    if settings is None:
        settings = Settings(threshold=_counts.default_threshold(base.measure))
    if base.measure == INSTRUCTIONS:
        return _counts.compare_counts(base, new, settings)
    base_cases, new_cases = base.by_key(), new.by_key()
    pairs = [(c, new_cases[c.key]) for c in base.cases if c.key in new_cases]
    if not pairs:
        raise ValueError(f"no case in common between {base.path} and {new.path}")
    same_run = interleaved(base, new)
    times = _metrics([(b.process_medians(), n.process_medians()) for b, n in pairs], settings,
                     [paired_diffs(b, n) if same_run else None for b, n in pairs])
    p99_index = [i for i, (b, n) in enumerate(pairs) if _p99s(b) and _p99s(n)]
    p99 = _metrics([(_p99s(pairs[i][0]), _p99s(pairs[i][1])) for i in p99_index], settings,
                   [paired_diffs(*pairs[i], p99=True) if same_run else None for i in p99_index])
    p99_by_case: dict[int, Metric] = dict(zip(p99_index, p99))
    results = [
        CaseResult(b.key, t, p99_by_case.get(i)) for i, ((b, _), t) in enumerate(zip(pairs, times))
    ]
    return Comparison(
        base_path=base.path,
        new_path=new.path,
        settings=settings,
        cases=results,
        only_base=[c.key for c in base.cases if c.key not in new_cases],
        only_new=[c.key for c in new.cases if c.key not in base_cases],
        machine={k: base.fingerprint[k] for k in MACHINE_KEYS if k in base.fingerprint},
        machine_differs=machine_differences(base, new),
        differs=_differs(base, new),
        case_differs=_case_differs(pairs),
        geomeans=geomeans((r.key.scenario, r.time.est.ratio) for r in results),
        notes=_notes(pairs, times, settings, same_run=same_run),
    )


# -- speedup: one impl against another (the twins by default), inside one report --


@dataclass(frozen=True)
class SpeedupResult:
    key: CaseKey  # the candidate impl's case key
    base_time: float  # median of the base impl's process medians, seconds
    impl_time: float  # the candidate's
    est: Estimate  # ratio base time / candidate time: > 1 means the candidate is faster


@dataclass
class Speedup:
    path: str
    machine: dict[str, Any]
    results: list[SpeedupResult]
    unpaired: list[CaseKey]  # cases of the two impls without the other's
    geomeans: dict[str, tuple[float, int]]
    base: str = PYTHON
    impl: str = COMPILED


def speedup(report: Report, base: str = PYTHON, impl: str = COMPILED) -> Speedup:
    """Per case, how many times faster ``impl`` is than ``base`` (by default
    the compiled loop than Python's): base time / impl time; raises
    ValueError if no case has both, or for a count report (a speedup is
    time: a count's twins' ratio is its own figure)."""
    if base == impl:
        raise ValueError(f"speedup of {impl} over itself: name two impls")
    if report.measure == INSTRUCTIONS:
        raise ValueError(
            f"{report.path} is an instruction-count report: speedup is about time; its "
            "twins' instruction ratio ('instr ratio py/cy') is in its summary and "
            "`fastsock-bench report`")
    cases = report.by_key()
    pairs = [
        (case, cases[case.key.other_impl(base)])
        for case in report.cases
        if case.key.impl == impl and case.key.other_impl(base) in cases
    ]
    if not pairs:
        have = sorted({c.key.impl for c in report.cases})
        raise ValueError(f"{report.path}: no case has both a {impl} and a {base} run "
                         f"(its impls: {', '.join(have)})")
    samples = [(new.process_medians(), old.process_medians()) for new, old in pairs]
    # Intervals only: nothing is decided on a speedup, so no test.
    ests = _stats.estimates(samples, test=False)
    results = [
        SpeedupResult(new.key, statistics.median(old_m), statistics.median(new_m), est)
        for (new, _), (new_m, old_m), est in zip(pairs, samples, ests)
    ]
    paired = {c.key for pair in pairs for c in pair}
    # a scenario one of the two never runs (an impl that only sends, say)
    # has nothing to miss; the other impls (event loops, idioms) neither
    shared = ({c.key.scenario for c in report.cases if c.key.impl == impl}
              & {c.key.scenario for c in report.cases if c.key.impl == base})
    return Speedup(
        path=report.path,
        machine={k: report.fingerprint[k] for k in MACHINE_KEYS if k in report.fingerprint},
        results=results,
        unpaired=[c.key for c in report.cases if c.key not in paired
                  and c.key.impl in (impl, base) and c.key.scenario in shared],
        geomeans=geomeans((r.key.scenario, r.est.ratio) for r in results),
        base=base,
        impl=impl,
    )
