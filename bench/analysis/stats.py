"""The statistics behind ``compare`` and ``speedup``: ratio, interval, verdict.

Design note
-----------
Unit of analysis: the worker process.  Values inside one process share its
CPU placement, its heap layout and its peer, so they are not independent;
each process contributes one number, the median of its values.

Statistic: a Mann-Whitney U test (scipy, exact null distribution when
there are no ties) on the process medians, with the Hodges-Lehmann
estimate of the shift of their logarithms (the median of all pairwise
differences ``log new_j - log base_i``) and its distribution-free
confidence interval (order statistics of the same differences, at the
exact critical value of U), exponentiated into a time ratio new/base.
Chosen over a bootstrap over processes because, with 8 processes a side,
a percentile bootstrap's interval is too narrow (it cannot see beyond the
8 values it resamples; nominal 95% covers about 90%) and its p-value is
not a test; the rank test is exact at any size, one process that landed
on a busy core moves one rank rather than the mean, and interval and
p-value are duals (the 95% interval excludes 1 exactly when p < 0.05).
scipy has the test but no Hodges-Lehmann interval, so :func:`_u_null_counts`
computes U's exact null distribution (checked against scipy's p-values).

Its limit is discreteness: with n and m processes no two-sided p-value is
below ``2 / C(n+m, n)`` (:func:`p_floor`): 8 + 8 gives 1.6e-4, 3 + 3 gives
0.1, where nothing can ever be called.  ``compare`` says so when the floor
is above what the correction asks of a lone change.

Correction: Benjamini-Hochberg (``scipy.stats.false_discovery_control``) by
default, Holm on request.  Under A/A every null is true, and then BH's false
discovery rate is its family-wise error rate: a whole A/A comparison is
flagged with probability at most alpha.  When a change touches many cases
(a third of them, say) BH's step-up thresholds grow with the discoveries
and it calls cases Holm would miss.

Verdict (see :func:`verdict`), with threshold t and adjusted p:
  slower        p_adj < alpha and ratio > 1 + t
  faster        p_adj < alpha and ratio < 1 - t
  same          neither, and the whole interval lies within [1 - t, 1 + t]
  inconclusive  anything else: the data cannot rule out a change beyond t
Requiring both a corrected significance and an estimate beyond t keeps
small real changes (a 2% shift measured very precisely) out of the gate;
requiring the interval, not the estimate, inside the band for "same" keeps
noisy cases from being reported as unchanged.

Known limits: the test sees process-to-process noise, not drift between
the base run and the new run (a machine warming up, a neighbour starting):
interleave runs (``examples/ci-regression.yml``).  Intervals are per case,
95%, not simultaneous.
"""

from __future__ import annotations

import enum
import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95  # two-sided confidence of every interval shown
ALPHA = 0.05  # family-wise (Holm) or false-discovery (BH) level
THRESHOLD = 0.05  # a change below 5% is "same"
# Above this many (base x new) pairs, U's critical value comes from the
# normal approximation instead of the exact distribution (cost ~ n * n*m).
EXACT_PAIRS_MAX = 10_000


class Verdict(str, enum.Enum):
    SLOWER = "slower"
    FASTER = "faster"
    SAME = "same"
    INCONCLUSIVE = "inconclusive"


class Correction(str, enum.Enum):
    BH = "bh"  # Benjamini-Hochberg, false discovery rate
    HOLM = "holm"  # Holm-Bonferroni, family-wise error rate


@dataclass(frozen=True)
class Estimate:
    """new/base ratio of two groups of per-process figures."""

    ratio: float  # Hodges-Lehmann estimate, exponentiated
    low: float  # interval bounds; 0 and inf when too few processes
    high: float
    p: float  # two-sided p-value, uncorrected (nan: not tested)
    n_base: int
    n_new: int
    paired: bool = False  # from lockstep slots (paired_estimates), not two groups

    @property
    def bounded(self) -> bool:
        return self.low > 0 and math.isfinite(self.high)


def p_floor(n: int, m: int) -> float:
    """The smallest two-sided p-value a U test on n + m values can give."""
    return min(1.0, 2.0 / math.comb(n + m, n))


@functools.lru_cache(maxsize=64)
def _u_null_counts(n: int, m: int) -> tuple[int, ...]:
    """How many of the C(n+m, n) orderings give U = 0 .. n*m: the
    coefficients of the Gaussian binomial (n+m choose n)_q, that is the
    product over i = 1..n of (1 - q^(m+i)) / (1 - q^i), as exact integers."""
    size = n * m + 1
    c = [0] * size
    c[0] = 1
    for i in range(1, n + 1):
        for u in range(size - 1, m + i - 1, -1):  # times (1 - q^(m+i))
            c[u] -= c[u - m - i]
        for u in range(i, size):  # divided by (1 - q^i), a power series
            c[u] += c[u - i]
    return tuple(c)


def _critical_u(n: int, m: int, confidence: float) -> int:
    """The largest a with P(U <= a) <= (1 - confidence) / 2, or -1 if even
    U = 0 is more likely than that (too few values for the interval)."""
    tail = (1.0 - confidence) / 2.0
    if n * m > EXACT_PAIRS_MAX:
        sd = math.sqrt(n * m * (n + m + 1) / 12.0)
        z = statistics.NormalDist().inv_cdf(tail)
        return max(-1, math.floor(n * m / 2.0 + z * sd - 0.5))
    counts = _u_null_counts(n, m)
    total = math.comb(n + m, n)
    cum, a = 0, -1
    for u, c in enumerate(counts):
        cum += c
        if cum / total > tail:
            break
        a = u
    return a


def _mwu_pvalues(bases: Sequence[np.ndarray], news: Sequence[np.ndarray]) -> list[float]:
    """Two-sided Mann-Whitney p-values, one scipy call per group of cases
    with the same sizes and method (a call costs ~0.5 ms, 36 cases or one)."""
    from scipy.stats import mannwhitneyu

    out = [1.0] * len(bases)
    groups: dict[tuple[int, int, Literal["asymptotic", "exact"]], list[int]] = {}
    for i, (b, x) in enumerate(zip(bases, news)):
        pooled = np.concatenate([b, x])
        if np.all(pooled == pooled[0]):
            continue  # no spread at all: nothing to test (scipy gives nan)
        ties = len(np.unique(pooled)) < len(pooled)
        # scipy's 'auto' goes asymptotic above 8 a side, where its p is
        # several times too large for complete separation; exact is cheap.
        method: Literal["asymptotic", "exact"] = (
            "asymptotic" if ties or b.size * x.size > EXACT_PAIRS_MAX else "exact")
        groups.setdefault((b.size, x.size, method), []).append(i)
    for (_, _, method), idx in groups.items():
        res = mannwhitneyu(
            np.stack([news[i] for i in idx]), np.stack([bases[i] for i in idx]),
            alternative="two-sided", method=method, axis=1,
        )
        for i, p in zip(idx, np.atleast_1d(res.pvalue)):
            out[i] = 1.0 if math.isnan(p) else min(1.0, float(p))
    return out


def estimates(
    samples: Sequence[tuple[ArrayLike, ArrayLike]],
    confidence: float = CONFIDENCE,
    test: bool = True,
) -> list[Estimate]:
    """Ratio new/base for each (base, new) pair of groups of positive
    per-process figures: Hodges-Lehmann estimate, interval and p-value
    (nan when ``test`` is false: the speedup view shows only intervals,
    and skipping the test spares importing scipy.stats, ~1.5 s)."""
    bases = [np.log(np.asarray(b, dtype=float)) for b, _ in samples]
    news = [np.log(np.asarray(x, dtype=float)) for _, x in samples]
    if any(b.size == 0 for b in bases) or any(x.size == 0 for x in news):
        raise ValueError("estimate needs at least one value on each side")
    out = []
    pvalues = _mwu_pvalues(bases, news) if test else [math.nan] * len(bases)
    for b, x, p in zip(bases, news, pvalues):
        diffs = np.sort((x[None, :] - b[:, None]).ravel())
        a = _critical_u(b.size, x.size, confidence)
        if a < 0:
            low, high = 0.0, math.inf
        else:
            low, high = math.exp(diffs[a]), math.exp(diffs[diffs.size - 1 - a])
        ratio = math.exp(float(np.median(diffs)))
        out.append(Estimate(ratio, low, high, p, int(b.size), int(x.size)))
    return out


def estimate(base: ArrayLike, new: ArrayLike, confidence: float = CONFIDENCE) -> Estimate:
    """Ratio new/base of two groups of positive per-process figures."""
    return estimates([(base, new)], confidence)[0]


def paired_estimates(
    diffs: Sequence[ArrayLike], confidence: float = CONFIDENCE
) -> list[Estimate]:
    """Ratio new/base from paired figures: per case, one log ratio
    ``log new - log base`` per lockstep slot.  A one-sample t test on their
    mean (scipy), its t interval exponentiated.  Fewer than 2 slots: p 1,
    no interval.  Every slot the same ratio (no spread, no t): the interval
    is that point, and p the exact sign test's, 2 / 2**n (1 at ratio 1)."""
    from scipy.stats import ttest_1samp

    out = []
    for d in diffs:
        d = np.asarray(d, dtype=float)
        if d.size == 0:
            raise ValueError("a paired estimate needs at least one slot")
        mean = float(d.mean())
        if d.size < 2:
            out.append(Estimate(math.exp(mean), 0.0, math.inf, 1.0, d.size, d.size, True))
            continue
        if float(np.ptp(d)) < 1e-12:  # rounding is no spread
            p = 1.0 if abs(mean) < 1e-12 else min(1.0, 2.0 ** (1 - d.size))
            out.append(Estimate(math.exp(mean), math.exp(mean), math.exp(mean), p,
                                d.size, d.size, True))
            continue
        res = ttest_1samp(d, 0.0)
        low, high = res.confidence_interval(confidence)
        out.append(Estimate(math.exp(mean), math.exp(low), math.exp(high), float(res.pvalue),
                            d.size, d.size, True))
    return out


def adjust(pvalues: Sequence[float], method: Correction | str = Correction.BH) -> list[float]:
    """p-values adjusted for testing them all at once."""
    method = Correction(method)
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return []
    if method is Correction.BH:
        try:
            from scipy.stats import false_discovery_control
        except ImportError:  # scipy < 1.11
            return _bh(p)
        return [float(v) for v in false_discovery_control(p, method="bh")]
    # Holm's step-down (scipy has no Holm): the i-th smallest p times
    # (m - i), made monotone, capped at 1.
    order = np.argsort(p)
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(v) for v in adjusted]


def _bh(p: np.ndarray) -> list[float]:
    """Benjamini-Hochberg's step-up, for scipy older than 1.11 (the same
    numbers as its ``false_discovery_control``): the i-th smallest p times
    m / i, made monotone from the largest down, capped at 1."""
    order = np.argsort(p)
    scaled = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return [float(v) for v in adjusted]


def verdict(
    est: Estimate, p_adj: float, threshold: float = THRESHOLD, alpha: float = ALPHA
) -> Verdict:
    """The call for one case; see the module's design note."""
    if p_adj < alpha and est.ratio > 1.0 + threshold:
        return Verdict.SLOWER
    if p_adj < alpha and est.ratio < 1.0 - threshold:
        return Verdict.FASTER
    if est.bounded and est.low >= 1.0 - threshold and est.high <= 1.0 + threshold:
        return Verdict.SAME
    return Verdict.INCONCLUSIVE


def geometric_mean(ratios: Sequence[float]) -> float:
    if not ratios:
        raise ValueError("geometric mean of nothing")
    return math.exp(float(np.mean(np.log(np.asarray(ratios, dtype=float)))))


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE
                    ) -> tuple[float, float, float] | None:
    """The median's distribution-free interval: order statistics
    ``x(r)`` and ``x(n+1-r)`` with the largest r for which the sign test
    (Binomial(n, 1/2)) still covers ``confidence``.  Returns (low, high,
    coverage), coverage being the exact one (>= ``confidence``); None when
    ``n`` is too small for any such interval (n < 6 at 95%).  No
    assumption about the values' distribution: what a few noisy paired
    ratios on a shared machine need."""
    xs = sorted(values)
    n = len(xs)
    best: tuple[float, float, float] | None = None
    for r in range(1, n // 2 + 1):
        tail = sum(math.comb(n, k) for k in range(r)) / 2**n  # P(B <= r - 1)
        coverage = 1 - 2 * tail
        if coverage < confidence:
            break
        best = (xs[r - 1], xs[n - r], coverage)
    return best
