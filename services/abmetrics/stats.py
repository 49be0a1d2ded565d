"""Experiment statistics, pure math/numpy (no scipy needed).

- `RatioMoments` / `ratio_estimate`: CTR = sum(clicks) / sum(impressions) with the unit of
  randomisation (the user) as the cluster: delta-method variance
      Var(R) ~= (s_c^2 - 2 R s_cn + R^2 s_n^2) / (N * mean_n^2)
  from the per-user sums the aggregator keeps (sum n, sum c, sum n^2, sum c^2, sum n*c).
- `compare`: absolute CTR difference and relative lift (delta method for the ratio of two
  independent ratios) with (1 - alpha) intervals.
- `two_proportion_ztest`: the classic pooled test on item impressions (ignores clustering;
  reported beside the delta-method z for comparison).
- `msprt_p_value`: always-valid p-value of the mixture sequential probability ratio test
  (Johari, Pekelis, Walsh, "Always valid inference", 2017) for a normal estimate with a
  N(0, tau^2) mixture over the effect; the running minimum over looks stays valid under
  continuous peeking (Ville's inequality).
- `srm_test`: chi-square goodness of fit of the units per variant against the configured
  weights; the report warns when p < 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


# ---- distributions -------------------------------------------------------------------------

def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_sf(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """Inverse normal CDF (Acklam's rational approximation, refined by one Halley step)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    elif p > 1 - lo:
        q = math.sqrt(-2 * math.log(1 - p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    e = norm_cdf(x) - p
    u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square(dof): the regularised upper incomplete gamma Q(dof/2, x/2)."""
    if x <= 0:
        return 1.0
    a, z = dof / 2.0, x / 2.0
    gln = math.lgamma(a)
    if z < a + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - gln))
    # continued fraction for Q (Lentz)
    tiny = 1e-300
    b = z + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-z + a * math.log(z) - gln) * h)


# ---- ratio metrics (delta method) ----------------------------------------------------------

@dataclass(frozen=True)
class RatioMoments:
    """Per-unit sums for a ratio metric sum(c)/sum(n): N units, sums and sums of squares/products."""

    users: int
    impressions: int  # sum n
    clicks: int  # sum c
    sum_n2: int
    sum_c2: int
    sum_nc: int

    @classmethod
    def from_counts(cls, m: Mapping[str, int]) -> RatioMoments:
        return cls(int(m.get("users", 0)), int(m.get("impressions", 0)), int(m.get("clicks", 0)),
                   int(m.get("sum_n2", 0)), int(m.get("sum_c2", 0)), int(m.get("sum_nc", 0)))

    @classmethod
    def from_arrays(cls, n: Sequence[float], c: Sequence[float]) -> RatioMoments:
        n_arr, c_arr = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
        return cls(int(len(n_arr)), int(n_arr.sum()), int(c_arr.sum()), int((n_arr * n_arr).sum()),
                   int((c_arr * c_arr).sum()), int((n_arr * c_arr).sum()))

    def __add__(self, o: RatioMoments) -> RatioMoments:
        return RatioMoments(self.users + o.users, self.impressions + o.impressions, self.clicks + o.clicks,
                            self.sum_n2 + o.sum_n2, self.sum_c2 + o.sum_c2, self.sum_nc + o.sum_nc)


@dataclass(frozen=True)
class Estimate:
    value: float
    se: float

    def ci(self, alpha: float = 0.05) -> tuple[float, float]:
        z = norm_ppf(1 - alpha / 2)
        return self.value - z * self.se, self.value + z * self.se


def ratio_estimate(m: RatioMoments) -> Estimate:
    """CTR and its delta-method (user-clustered) standard error; nan when undefined."""
    if m.impressions <= 0 or m.users <= 0:
        return Estimate(math.nan, math.nan)
    r = m.clicks / m.impressions
    if m.users < 2:
        return Estimate(r, math.nan)
    n_users = m.users
    mean_n, mean_c = m.impressions / n_users, m.clicks / n_users
    var_n = (m.sum_n2 - n_users * mean_n ** 2) / (n_users - 1)
    var_c = (m.sum_c2 - n_users * mean_c ** 2) / (n_users - 1)
    cov = (m.sum_nc - n_users * mean_n * mean_c) / (n_users - 1)
    var_r = max(0.0, (var_c - 2 * r * cov + r * r * var_n) / (n_users * mean_n ** 2))
    return Estimate(r, math.sqrt(var_r))


def ratio_arrays(users, impressions, clicks, sum_n2, sum_c2, sum_nc) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `ratio_estimate`: (CTR, delta-method variance) for arrays of moments (simulations)."""
    n_users = np.asarray(users, dtype=float)
    s_n, s_c = np.asarray(impressions, dtype=float), np.asarray(clicks, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = s_c / s_n
        mean_n, mean_c = s_n / n_users, s_c / n_users
        var_n = (np.asarray(sum_n2, dtype=float) - n_users * mean_n ** 2) / (n_users - 1)
        var_c = (np.asarray(sum_c2, dtype=float) - n_users * mean_c ** 2) / (n_users - 1)
        cov = (np.asarray(sum_nc, dtype=float) - n_users * mean_n * mean_c) / (n_users - 1)
        var_r = np.maximum(0.0, (var_c - 2 * r * cov + r * r * var_n) / (n_users * mean_n ** 2))
    return r, var_r


def mean_per_unit(m: RatioMoments) -> Estimate:
    """Clicks per user and its standard error."""
    if m.users <= 0:
        return Estimate(math.nan, math.nan)
    mean = m.clicks / m.users
    if m.users < 2:
        return Estimate(mean, math.nan)
    var = max(0.0, (m.sum_c2 - m.users * mean ** 2) / (m.users - 1))
    return Estimate(mean, math.sqrt(var / m.users))


@dataclass(frozen=True)
class Comparison:
    control: Estimate
    treatment: Estimate
    diff: Estimate
    lift: Estimate  # relative: treatment / control - 1

    @property
    def z(self) -> float:
        return self.diff.value / self.diff.se if self.diff.se and self.diff.se > 0 else math.nan

    @property
    def p_value(self) -> float:
        return 2 * norm_sf(abs(self.z)) if not math.isnan(self.z) else math.nan


def compare(control: RatioMoments, treatment: RatioMoments) -> Comparison:
    a, b = ratio_estimate(control), ratio_estimate(treatment)
    diff = Estimate(b.value - a.value, math.sqrt(a.se ** 2 + b.se ** 2))
    if a.value and a.value > 0 and not math.isnan(a.se):
        lift_se = math.sqrt(b.se ** 2 / a.value ** 2 + (b.value ** 2) * a.se ** 2 / a.value ** 4)
        lift = Estimate(b.value / a.value - 1, lift_se)
    else:
        lift = Estimate(math.nan, math.nan)
    return Comparison(a, b, diff, lift)


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of p2 - p1; returns (z, two-sided p)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / se
    return z, 2 * norm_sf(abs(z))


# ---- sequential test ------------------------------------------------------------------------

def msprt_lambda(theta_hat, var, tau: float):
    """Mixture likelihood ratio for H0: theta = 0 given an estimate ~ N(theta, var), mixture N(0, tau^2).

    Vectorised (numpy arrays or floats). Lambda = sqrt(V/(V+t^2)) * exp(t^2 th^2 / (2 V (V+t^2)))."""
    theta_hat = np.asarray(theta_hat, dtype=float)
    var = np.asarray(var, dtype=float)
    t2 = tau * tau
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_lam = 0.5 * np.log(var / (var + t2)) + t2 * theta_hat ** 2 / (2 * var * (var + t2))
    return np.exp(np.minimum(log_lam, 700.0))


def msprt_p_value(theta_hats: Sequence[float], variances: Sequence[float], tau: float) -> float:
    """Always-valid p-value after a sequence of looks: min over looks of min(1, 1/Lambda)."""
    p = 1.0
    for th, v in zip(theta_hats, variances):
        if v is None or not (v > 0) or math.isnan(th):
            continue
        p = min(p, float(1.0 / msprt_lambda(th, v, tau)))
    return min(1.0, p)


def msprt_p_path(theta_hats: np.ndarray, variances: np.ndarray, tau: float) -> np.ndarray:
    """Always-valid p-values along the last axis (looks) for many experiments at once."""
    lam = msprt_lambda(theta_hats, variances, tau)
    p = np.minimum(1.0, 1.0 / np.where(np.isfinite(lam) & (lam > 0), lam, 1.0))
    return np.minimum.accumulate(p, axis=-1)


# ---- sample ratio mismatch ------------------------------------------------------------------

@dataclass(frozen=True)
class SrmResult:
    chi2: float
    dof: int
    p_value: float
    alpha: float
    observed: dict[str, int]
    expected: dict[str, float]

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.alpha


def srm_test(observed: Mapping[str, int], weights: Mapping[str, float], alpha: float = 0.001) -> SrmResult:
    """Chi-square goodness of fit of units per variant vs. the configured weights."""
    names = list(weights)
    total_w = sum(weights[v] for v in names)
    n = sum(int(observed.get(v, 0)) for v in names)
    expected = {v: n * weights[v] / total_w for v in names}
    if n == 0 or len(names) < 2:
        return SrmResult(0.0, max(0, len(names) - 1), 1.0, alpha, {v: int(observed.get(v, 0)) for v in names}, expected)
    chi2 = sum((int(observed.get(v, 0)) - expected[v]) ** 2 / expected[v] for v in names if expected[v] > 0)
    dof = len(names) - 1
    return SrmResult(chi2, dof, chi2_sf(chi2, dof), alpha, {v: int(observed.get(v, 0)) for v in names}, expected)
