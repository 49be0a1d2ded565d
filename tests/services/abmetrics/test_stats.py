"""Statistics, in process: distributions, delta-method coverage, the mSPRT's false-positive rate
under continuous peeking (A/A), its power, and the SRM check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.abmetrics.stats import (
    RatioMoments,
    chi2_sf,
    compare,
    msprt_p_path,
    msprt_p_value,
    norm_ppf,
    ratio_arrays,
    ratio_estimate,
    srm_test,
    two_proportion_ztest,
)

ALPHA = 0.05


def test_distributions_match_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for p in (1e-6, 0.001, 0.025, 0.3, 0.5, 0.9, 0.975, 0.999999):
        assert norm_ppf(p) == pytest.approx(scipy_stats.norm.ppf(p), abs=1e-9)
    for x in (0.01, 0.5, 1.0, 3.84, 10.83, 25.0, 80.0):
        for dof in (1, 2, 3, 7):
            assert chi2_sf(x, dof) == pytest.approx(scipy_stats.chi2.sf(x, dof), rel=1e-8, abs=1e-15)
    z, p = two_proportion_ztest(500, 10_000, 600, 10_000)
    assert z == pytest.approx(3.1, abs=0.05) and p == pytest.approx(2 * scipy_stats.norm.sf(z), rel=1e-9)


def test_moments_from_arrays_give_the_sample_ctr_and_a_clustered_error() -> None:
    rng = np.random.default_rng(1)
    n = 1 + rng.poisson(4, 5000)
    c = rng.binomial(n, rng.beta(2, 38, 5000))
    est = ratio_estimate(RatioMoments.from_arrays(n, c))
    assert est.value == pytest.approx(c.sum() / n.sum())
    # bootstrap over users agrees with the delta method
    idx = rng.integers(0, 5000, (400, 5000))
    boot = c[idx].sum(1) / n[idx].sum(1)
    assert est.se == pytest.approx(boot.std(), rel=0.15)
    # ignoring the clustering (binomial on impressions) understates the error here
    naive = math.sqrt(est.value * (1 - est.value) / n.sum())
    assert est.se > naive


def _experiments(rng, n_exp: int, looks: int, users: int, p_mean: float, mult: float):
    """Moments per look (not cumulative) of one arm of `n_exp` simulated experiments."""
    n = 1 + rng.poisson(3, (n_exp, looks, users))
    p = np.clip(rng.beta(2, 2 / p_mean - 2, (n_exp, looks, users)) * mult, 0, 1)
    c = rng.binomial(n, p)
    return dict(users=np.full((n_exp, looks), users), impressions=n.sum(-1), clicks=c.sum(-1),
                sum_n2=(n * n).sum(-1), sum_c2=(c * c).sum(-1), sum_nc=(n * c).sum(-1))


def _cum(m):
    return {k: np.cumsum(v, axis=1) for k, v in m.items()}


def _sequential(rng, n_exp: int, looks: int, users: int, lift: float, tau: float):
    a = _cum(_experiments(rng, n_exp, looks, users, 0.05, 1.0))
    b = _cum(_experiments(rng, n_exp, looks, users, 0.05, 1.0 + lift))
    ra, va = ratio_arrays(**a)
    rb, vb = ratio_arrays(**b)
    diff, var = rb - ra, va + vb
    p_seq = msprt_p_path(diff, var, tau)
    z = diff / np.sqrt(var)
    p_naive = 2 * 0.5 * np.vectorize(math.erfc)(np.abs(z) / math.sqrt(2))
    return p_seq, p_naive, (rb / ra - 1), np.sqrt(vb / ra ** 2 + rb ** 2 * va / ra ** 4)


def test_sequential_test_keeps_false_positives_below_alpha_under_continuous_peeking() -> None:
    rng = np.random.default_rng(2026)
    n_exp, looks = 400, 20
    p_seq, p_naive, _, _ = _sequential(rng, n_exp, looks, users=250, lift=0.0, tau=0.1 * 0.05)
    fpr_seq = float((p_seq[:, -1] < ALPHA).mean())          # rejected at ANY of the 20 looks
    fpr_naive = float((p_naive < ALPHA).any(axis=1).mean())  # classic z-test, stopped at the first p < alpha
    fpr_fixed = float((p_naive[:, -1] < ALPHA).mean())        # classic z-test, one look at the end
    print(f"\nA/A, {n_exp} experiments x {looks} looks: mSPRT FPR {fpr_seq:.3f} (alpha {ALPHA}); "
          f"z-test with peeking {fpr_naive:.3f}; z-test single look {fpr_fixed:.3f}")
    assert fpr_seq <= ALPHA
    assert fpr_naive > ALPHA  # why the sequential test is needed
    # running minimum: p never goes back up
    assert (np.diff(p_seq, axis=1) <= 1e-15).all()


def test_sequential_test_detects_a_real_lift_and_intervals_cover_it() -> None:
    rng = np.random.default_rng(7)
    p_seq, _, lift, lift_se = _sequential(rng, 300, 20, users=400, lift=0.2, tau=0.1 * 0.05)
    power = float((p_seq[:, -1] < ALPHA).mean())
    z = norm_ppf(1 - ALPHA / 2)
    covered = float((np.abs(lift[:, -1] - 0.2) <= z * lift_se[:, -1]).mean())
    print(f"\ntrue lift 20%: mSPRT power {power:.3f} after 20 looks; 95% lift interval coverage {covered:.3f}")
    assert power > 0.9
    assert 0.92 <= covered <= 0.98


def test_msprt_p_value_is_the_running_minimum() -> None:
    assert msprt_p_value([0.0, 0.0], [1e-6, 1e-6], tau=0.01) == 1.0
    p_mid = msprt_p_value([0.004], [1e-6], tau=0.005)
    assert msprt_p_value([0.004, 0.0], [1e-6, 1e-6], tau=0.005) == p_mid < 0.01


def test_compare_lift_and_difference() -> None:
    rng = np.random.default_rng(3)
    n = 1 + rng.poisson(4, 20_000)
    a = RatioMoments.from_arrays(n[:10_000], rng.binomial(n[:10_000], 0.05))
    b = RatioMoments.from_arrays(n[10_000:], rng.binomial(n[10_000:], 0.06))
    cmp = compare(a, b)
    lo, hi = cmp.lift.ci(0.05)
    assert lo < 0.2 < hi and cmp.p_value < 1e-6
    assert cmp.diff.value == pytest.approx(b.clicks / b.impressions - a.clicks / a.impressions)


def test_srm_flags_a_skewed_split_not_a_balanced_one() -> None:
    balanced = srm_test({"control": 5030, "treatment": 4970}, {"control": 50, "treatment": 50})
    skewed = srm_test({"control": 4800, "treatment": 5200}, {"control": 50, "treatment": 50})
    weighted = srm_test({"a": 1010, "b": 2990}, {"a": 1, "b": 3})
    assert not balanced.mismatch and balanced.p_value > 0.5
    assert skewed.mismatch and skewed.p_value < 1e-3 and skewed.alpha == 0.001
    assert not weighted.mismatch
