"""Count reports (``run --measure instructions``): their figures and their comparison.

Design note
-----------
A count report's value is the measured process's user-space instructions
per message, round trip or connection (interpreter, extension, libc; not
the kernel's work), one exact figure per case (:mod:`bench.run.count`).
There is no sample of worker processes to test, so :func:`compare_counts`
needs no noise model of the machine:

* a case counted by *difference* (blocking, timeout) repeats to about
  0.005% between separate runs: it is exact, its interval the point;
* a *fitted* case (nonblocking: retry-free count from a least-squares fit)
  carries the fit's standard error ``count_se``, from the residuals of six
  intervals: 1 to 4 degrees of freedom (``count_dof``), so the ratio's
  interval is Student's t's (``exp(±t se)``, se of the log ratio from both
  sides, the fewer degrees of freedom of the two), and so is its p-value,
  corrected over the cases like a time comparison's (Benjamini-Hochberg
  or Holm).  With the normal's 1.96 instead, an event loop's 64 KiB stream
  (whose partial writes copy a timing-dependent number of bytes, which no
  call count sees) came within a p of 0.056 of a false call at 1.5%.

The verdict is :func:`bench.analysis.stats.verdict`'s with that estimate:
``slower`` / ``faster`` beyond the threshold (default :data:`THRESHOLD`,
1%: two runs of one build differ by far less, a real change of one
attribute lookup per message by more) and significant; ``same`` when the
interval is inside the threshold; ``inconclusive`` otherwise (a fit too
loose to tell).  The result is a :class:`bench.analysis.compare.Comparison`
with ``measure`` set, so every format and figure renders it, in counts.

Two measures are never compared: :func:`check_same_measure`.
The twins' instruction ratio (Python's count / the compiled one's) is
:func:`instr_ratios`: its own figure, never called a speedup (a speedup is
time, and the kernel's work, which a count leaves out, is most of a
syscall's time).
"""

from __future__ import annotations

import math
import statistics

from bench.analysis import compare as _compare
from bench.analysis import stats as _stats
from bench.analysis.report import COMPILED, INSTRUCTIONS, PYTHON, TIME, Case, CaseKey, Report

THRESHOLD = 0.01  # a count change below 1% is "same"
Z95 = statistics.NormalDist().inv_cdf(0.975)
MEASURE_NAMES = {TIME: "a time report", INSTRUCTIONS: "an instruction-count report"}


def default_threshold(measure: str) -> float:
    """The threshold ``compare`` uses for a measure unless told."""
    return THRESHOLD if measure == INSTRUCTIONS else _stats.THRESHOLD


def check_same_measure(base: Report, new: Report) -> None:
    """ValueError, one line, when the two reports hold different measures."""
    if base.measure != new.measure:
        raise ValueError(
            f"cannot compare {MEASURE_NAMES.get(base.measure, base.measure)} ({base.path}) "
            f"with {MEASURE_NAMES.get(new.measure, new.measure)} ({new.path}): "
            "compare reports of one measure")


def count(case: Case) -> float:
    """A case's count: instructions per message (its one value)."""
    return statistics.median(case.values)


def count_se(case: Case) -> float:
    """Standard error of a fitted count; 0 for a difference."""
    try:
        se = float(case.metadata.get("count_se", 0.0))
    except (TypeError, ValueError):
        return 0.0
    return se if math.isfinite(se) and se > 0 else 0.0


def count_dof(case: Case) -> int:
    """Residual degrees of freedom of a fitted count (0: not fitted):
    ``count_dof``, or intervals - 2 - events fitted from older metadata."""
    meta = case.metadata
    try:
        if "count_dof" in meta:
            return max(0, int(meta["count_dof"]))
        intervals = len(str(meta.get("count_msgs", "")).split(","))
        events = sum(1 for k in meta if str(k).startswith("instr_per_"))
        return max(0, intervals - 2 - events) if count_se(case) else 0
    except (TypeError, ValueError):
        return 0


def instr_ratios(report: Report) -> dict[CaseKey, float]:
    """Python's count / the compiled loop's, per compiled case with a twin."""
    cases = report.by_key()
    out = {}
    for case in report.cases:
        if case.key.impl == COMPILED:
            twin = cases.get(case.key.other_impl(PYTHON))
            if twin is not None:
                out[case.key] = count(twin) / count(case)
    return out


def estimate(base: Case, new: Case) -> _stats.Estimate:
    """Ratio new/base of two counts, its interval and p-value."""
    b, n = count(base), count(new)
    ratio = n / b
    se_log = math.hypot(count_se(base) / b, count_se(new) / n)
    if se_log == 0.0:  # both exact
        p = 1.0 if ratio == 1.0 else 0.0
        return _stats.Estimate(ratio, ratio, ratio, p, 1, 1)
    z = abs(math.log(ratio)) / se_log
    dofs = [count_dof(c) for c in (base, new) if count_se(c)]
    dof = min(dofs) if dofs and min(dofs) > 0 else 0
    if dof:  # few intervals: Student's t, not the normal
        from scipy.stats import t as student

        crit = float(student.ppf(0.975, dof))
        p = float(2.0 * student.sf(z, dof))
    else:
        crit, p = Z95, 2.0 * (1.0 - statistics.NormalDist().cdf(z))
    return _stats.Estimate(ratio, ratio * math.exp(-crit * se_log),
                           ratio * math.exp(crit * se_log), p, 1, 1)


def compare_counts(base: Report, new: Report,
                   settings: _compare.Settings) -> _compare.Comparison:
    """Two count reports, case by case; ValueError when no case is in both."""
    base_cases, new_cases = base.by_key(), new.by_key()
    pairs = [(c, new_cases[c.key]) for c in base.cases if c.key in new_cases]
    if not pairs:
        raise ValueError(f"no case in common between {base.path} and {new.path}")
    ests = [estimate(b, n) for b, n in pairs]
    p_adj = _stats.adjust([e.p for e in ests], settings.correction)
    results = [
        _compare.CaseResult(b.key, _compare.Metric(
            count(b), count(n), e, p,
            _stats.verdict(e, p, settings.threshold, settings.alpha)), None)
        for (b, n), e, p in zip(pairs, ests, p_adj)
    ]
    notes = ["counts are the measured process's user-space instructions (valgrind "
             "callgrind): the interpreter, the extension and libc, not the kernel's work; "
             "separate runs compare directly (no lockstep needed)"]
    fitted = sum(1 for b, n in pairs if count_se(b) or count_se(n))
    if fitted:
        notes.append(f"{fitted} of {len(pairs)} cases are fitted (nonblocking: retry-free "
                     "count, interval from the fit's standard error); the others are exact")
    # a different valgrind is in `differs` (valgrind_version is a fingerprint key)
    return _compare.Comparison(
        base_path=base.path, new_path=new.path, settings=settings, cases=results,
        only_base=[c.key for c in base.cases if c.key not in new_cases],
        only_new=[c.key for c in new.cases if c.key not in base_cases],
        machine={k: base.fingerprint[k] for k in _compare.MACHINE_KEYS
                 if k in base.fingerprint},
        machine_differs=_compare.machine_differences(base, new),
        differs=_compare.differs(base, new),
        case_differs=_compare.case_differs(pairs),
        geomeans=_compare.geomeans((r.key.scenario, r.time.est.ratio) for r in results),
        notes=notes, measure=INSTRUCTIONS)
