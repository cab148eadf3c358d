"""bench.analysis.stats: the exact U distribution, the Hodges-Lehmann interval, the
corrections, the verdict rules, and their error rates on known noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import false_discovery_control, mannwhitneyu

from bench.analysis import stats as _stats
from bench.analysis.stats import Correction, Estimate, Verdict


@pytest.mark.parametrize("n, m", [(1, 1), (3, 3), (5, 9), (8, 8), (12, 7)])
def test_u_null_counts_match_scipy_exact(n: int, m: int) -> None:
    counts = _stats._u_null_counts(n, m)
    total = math.comb(n + m, n)
    assert sum(counts) == total and counts == counts[::-1]
    rng = np.random.default_rng(n * 100 + m)
    for _ in range(10):
        x, y = rng.normal(size=m), rng.normal(size=n)
        res = mannwhitneyu(x, y, alternative="less", method="exact")
        assert sum(counts[: int(res.statistic) + 1]) / total == pytest.approx(res.pvalue)


@pytest.mark.parametrize("n, m, a", [(8, 8, 13), (5, 5, 2), (6, 8, 8), (3, 3, -1), (4, 4, 0)])
def test_critical_u_matches_tables(n: int, m: int, a: int) -> None:
    # the two-tailed 5% critical values of U in the standard tables
    assert _stats._critical_u(n, m, 0.95) == a


def test_critical_u_normal_approximation_is_close() -> None:
    exact = _stats._critical_u(60, 60, 0.95)
    saved = _stats.EXACT_PAIRS_MAX
    try:
        _stats.EXACT_PAIRS_MAX = 100
        approx = _stats._critical_u(60, 60, 0.95)
    finally:
        _stats.EXACT_PAIRS_MAX = saved
    assert abs(exact - approx) <= 2


def test_p_floor() -> None:
    assert _stats.p_floor(3, 3) == pytest.approx(0.1)
    assert _stats.p_floor(8, 8) == pytest.approx(2 / 12870)
    assert _stats.p_floor(1, 1) == 1.0


def test_estimate_of_a_scaled_copy_is_the_scale() -> None:
    base = [1e-6 * (1 + 0.01 * i) for i in range(8)]
    est = _stats.estimate(base, [1.1 * v for v in base])
    assert est.ratio == pytest.approx(1.1)
    assert est.low < 1.1 < est.high
    assert (est.n_base, est.n_new) == (8, 8)


def test_complete_separation_reaches_the_floor() -> None:
    base = [1.0 + 0.001 * i for i in range(8)]
    est = _stats.estimate(base, [2.0 + 0.001 * i for i in range(8)])
    assert est.p == pytest.approx(_stats.p_floor(8, 8))
    assert est.low > 1.9


def test_unequal_process_counts() -> None:
    rng = np.random.default_rng(7)
    base, new = rng.lognormal(0, 0.02, 5), rng.lognormal(0.1, 0.02, 11)
    est = _stats.estimate(base, new)
    assert (est.n_base, est.n_new) == (5, 11)
    assert est.bounded and est.low < est.ratio < est.high
    assert est.p == pytest.approx(mannwhitneyu(new, base, method="exact").pvalue)


def test_too_few_processes_give_no_interval_and_no_call() -> None:
    est = _stats.estimate([1.0, 1.01, 1.02], [2.0, 2.01, 2.02])
    assert not est.bounded and est.p == pytest.approx(0.1)
    assert _stats.verdict(est, est.p) is Verdict.INCONCLUSIVE


def test_identical_values_are_same() -> None:
    est = _stats.estimate([1e-6] * 8, [1e-6] * 8)
    assert (est.ratio, est.low, est.high, est.p) == (1.0, 1.0, 1.0, 1.0)
    assert _stats.verdict(est, est.p) is Verdict.SAME


def test_ties_fall_back_to_the_asymptotic_test() -> None:
    est = _stats.estimate([1.0, 1.0, 1.1, 1.2] * 2, [1.1, 1.2, 1.3, 1.3] * 2)
    assert 0 < est.p < 1


def test_estimate_rejects_an_empty_side() -> None:
    with pytest.raises(ValueError):
        _stats.estimate([], [1.0])


def test_interval_and_test_are_duals() -> None:
    # The 95% interval excludes 1 exactly when the exact test rejects at 5%.
    rng = np.random.default_rng(11)
    samples = [(rng.lognormal(0, 0.03, 8), rng.lognormal(0.02, 0.03, 8)) for _ in range(300)]
    ests = _stats.estimates(samples)
    assert 30 < sum(e.p <= 0.05 for e in ests) < 270  # both sides exercised
    for est in ests:
        assert (est.low > 1 or est.high < 1) == (est.p <= 0.05)


def test_interval_coverage() -> None:
    rng = np.random.default_rng(5)
    samples = [(rng.lognormal(0, 0.04, 8), rng.lognormal(math.log(1.07), 0.04, 8))
               for _ in range(600)]
    covered = sum(e.low <= 1.07 <= e.high for e in _stats.estimates(samples))
    assert 0.93 <= covered / len(samples) <= 0.99  # exact: >= 95.0% nominal


def test_bh_is_scipys_and_so_is_the_fallback() -> None:
    rng = np.random.default_rng(3)
    for p in ([0.001, 0.02, 0.03, 0.5, 0.04], list(rng.uniform(0, 0.1, 40)), [0.7]):
        expected = list(false_discovery_control(p))
        assert _stats.adjust(p, "bh") == pytest.approx(expected)
        assert _stats._bh(np.asarray(p)) == pytest.approx(expected)


def test_holm_by_hand() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> 0.06 (monotone)
    assert _stats.adjust([0.01, 0.04, 0.03, 0.005], Correction.HOLM) == pytest.approx(
        [0.03, 0.06, 0.06, 0.02]
    )
    assert _stats.adjust([0.9, 0.8], "holm") == [1.0, 1.0]
    assert _stats.adjust([], "bh") == []


def _est(ratio: float, low: float, high: float) -> Estimate:
    return Estimate(ratio, low, high, 0.0, 8, 8)


@pytest.mark.parametrize(
    "est, p_adj, expected",
    [
        (_est(1.10, 1.06, 1.14), 0.001, Verdict.SLOWER),
        (_est(1.06, 1.01, 1.12), 0.01, Verdict.SLOWER),  # estimate beyond, CI not
        (_est(0.90, 0.86, 0.94), 0.001, Verdict.FASTER),
        (_est(1.10, 1.06, 1.14), 0.2, Verdict.INCONCLUSIVE),  # not significant
        (_est(1.03, 1.02, 1.04), 0.001, Verdict.SAME),  # real, under the threshold
        (_est(1.01, 0.97, 1.04), 0.5, Verdict.SAME),
        (_est(1.01, 0.93, 1.09), 0.5, Verdict.INCONCLUSIVE),  # too wide to say
        (_est(1.04, 1.01, 1.07), 0.01, Verdict.INCONCLUSIVE),  # CI crosses +5%
        (_est(1.00, 0.0, math.inf), 1.0, Verdict.INCONCLUSIVE),
    ],
)
def test_verdict_rules(est: Estimate, p_adj: float, expected: Verdict) -> None:
    assert _stats.verdict(est, p_adj, threshold=0.05, alpha=0.05) is expected


def test_threshold_and_alpha_are_honoured() -> None:
    est = _est(1.08, 1.05, 1.11)
    assert _stats.verdict(est, 0.01, threshold=0.10) is Verdict.INCONCLUSIVE
    assert _stats.verdict(est, 0.01, alpha=0.005) is Verdict.INCONCLUSIVE
    assert _stats.verdict(est, 0.01) is Verdict.SLOWER


def test_geometric_mean() -> None:
    assert _stats.geometric_mean([1.1, 1 / 1.1, 1.0]) == pytest.approx(1.0)
    assert _stats.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        _stats.geometric_mean([])


# -- error rates on the model of tests/synth.py: a process's level is
# mean * N(1, process_sd), its values scatter by N(1, 2%), 8 processes x 3
# values, 36 cases of which the first 12 are 10% slower in the A/B runs.

SEEDS, CASES, CHANGED = 50, 36, 12


def _calls(seed: int, process_sd: float, changed: int) -> list[Verdict]:
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(CASES) < changed, 1.10, 1.0)

    def medians(mult: np.ndarray) -> np.ndarray:
        level = mult[:, None] * rng.normal(1, process_sd, (CASES, 8))
        return np.median(level[..., None] * rng.normal(1, 0.02, (CASES, 8, 3)), axis=2)

    base, new = medians(np.ones(CASES)), medians(scale)
    ests = _stats.estimates(list(zip(base, new)))
    p_adj = _stats.adjust([e.p for e in ests])
    return [_stats.verdict(e, p) for e, p in zip(ests, p_adj)]


@pytest.mark.parametrize("process_sd, min_power", [(0.02, 1.0), (0.03, 0.97)])
def test_error_rates(process_sd: float, min_power: float) -> None:
    flagged = (Verdict.SLOWER, Verdict.FASTER)
    aa_seeds = sum(any(v in flagged for v in _calls(s, process_sd, 0)) for s in range(SEEDS))
    caught = others = 0
    for s in range(SEEDS):
        calls = _calls(1000 + s, process_sd, CHANGED)
        caught += sum(v is Verdict.SLOWER for v in calls[:CHANGED])
        others += sum(v in flagged for v in calls[CHANGED:])
    power = caught / (SEEDS * CHANGED)
    print(f"process sd {process_sd:.0%}: A/A seeds with a flag {aa_seeds}/{SEEDS}, "
          f"10% caught {power:.1%}, other cases flagged {others}/{SEEDS * (CASES - CHANGED)}")
    assert aa_seeds <= 0.05 * SEEDS  # no case flagged in >= 95% of seeds
    assert power >= min_power
    assert others <= 0.05 * SEEDS
