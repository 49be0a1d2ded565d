"""The experiment report (JSON): per-variant totals, daily CTR with intervals, cumulative lift,
tests (delta method, two-proportion, always-valid mSPRT) and the sample-ratio-mismatch check.

Units: an *impression* is one listing shown (a response of k items is k impressions), a
*click* is one distinct (request, listing) clicked, *users* are distinct users with at least
one impression. CTR = clicks / impressions, clustered by user for its interval.

Daily and cumulative-by-day figures treat user-days as the units (a user active on several
days counts once per day); the totals (`variants`, `comparisons`) cluster by user over the
whole experiment. The sequential p-value is the running minimum of 1/Lambda over the daily
looks plus the final look, so reading the report at any time is safe.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from services.experiments.config import ExperimentsConfig

from .settings import AbMetricsConfig
from .state import AbState
from .stats import (
    RatioMoments,
    compare,
    mean_per_unit,
    msprt_lambda,
    ratio_estimate,
    srm_test,
    two_proportion_ztest,
)


class ExperimentNotFound(KeyError):
    pass


def _f(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return float(x)


def _ci(est, alpha: float) -> list[float | None]:
    if math.isnan(est.se) or math.isnan(est.value):
        return [None, None]
    lo, hi = est.ci(alpha)
    return [_f(lo), _f(hi)]


def build_report(state: AbState, exp_id: str, experiments: ExperimentsConfig | None = None,
                 cfg: AbMetricsConfig | None = None, now: datetime | None = None) -> dict[str, Any]:
    cfg = cfg or AbMetricsConfig()
    alpha = cfg.alpha
    spec = experiments.experiment(exp_id) if experiments else None
    seen_variants = state.variants(exp_id)
    if spec is None and not seen_variants:
        raise ExperimentNotFound(exp_id)
    warnings: list[str] = []
    if spec is not None:
        variants = [v.name for v in spec.variants]
        weights = {v.name: v.weight for v in spec.variants}
        extra = [v for v in seen_variants if v not in weights]
        if extra:
            warnings.append(f"events for variants not in the configuration: {', '.join(extra)}")
            variants += extra
    else:
        variants = sorted(seen_variants, key=lambda v: (v != "control", v))
        weights = {v: 1.0 for v in variants}
        warnings.append("experiment not in the configuration: variant weights assumed equal for the SRM check")
    control = variants[0]
    days = state.days(exp_id)
    m = state.moments(exp_id, variants, [*days, "all"])
    mom = {k: RatioMoments.from_counts(v) for k, v in m.items()}

    # ---- totals per variant --------------------------------------------------------------
    rows = []
    for v in variants:
        t, raw = mom[(v, "all")], m[(v, "all")]
        ctr, cpu = ratio_estimate(t), mean_per_unit(t)
        rows.append({"variant": v, "weight": weights.get(v), "is_control": v == control,
                     "requests": raw["requests"], "impressions": t.impressions, "clicks": t.clicks,
                     "users": t.users, "clickers": raw["clickers"], "ctr": _f(ctr.value), "ctr_ci": _ci(ctr, alpha),
                     "clicks_per_user": _f(cpu.value), "clicks_per_user_ci": _ci(cpu, alpha)})

    # ---- daily CTR, cumulative lift and the sequential test -----------------------------
    daily = []
    for d in days:
        for v in variants:
            t = mom[(v, d)]
            est = ratio_estimate(t)
            daily.append({"day": d, "variant": v, "impressions": t.impressions, "clicks": t.clicks,
                          "users": t.users, "ctr": _f(est.value), "ctr_ci": _ci(est, alpha)})
    control_ctr = ratio_estimate(mom[(control, "all")]).value
    tau = cfg.msprt_tau_rel * control_ctr if control_ctr and not math.isnan(control_ctr) and control_ctr > 0 else None
    comparisons, cumulative = [], []
    for v in variants[1:]:
        running = {control: RatioMoments(0, 0, 0, 0, 0, 0), v: RatioMoments(0, 0, 0, 0, 0, 0)}
        p_seq = 1.0
        for d in days:
            running = {k: running[k] + mom[(k, d)] for k in running}
            cmp_d = compare(running[control], running[v])
            if tau and cmp_d.diff.se > 0 and not math.isnan(cmp_d.diff.value):
                p_seq = min(p_seq, float(1.0 / msprt_lambda(cmp_d.diff.value, cmp_d.diff.se ** 2, tau)))
            cumulative.append({"day": d, "variant": v, "vs": control, "ctr_diff": _f(cmp_d.diff.value),
                               "ctr_diff_ci": _ci(cmp_d.diff, alpha), "lift": _f(cmp_d.lift.value),
                               "lift_ci": _ci(cmp_d.lift, alpha), "sequential_p": _f(min(1.0, p_seq))})
        c = compare(mom[(control, "all")], mom[(v, "all")])
        if tau and c.diff.se > 0 and not math.isnan(c.diff.value):
            p_seq = min(p_seq, float(1.0 / msprt_lambda(c.diff.value, c.diff.se ** 2, tau)))
        p_seq = min(1.0, p_seq)
        a_all, b_all = mom[(control, "all")], mom[(v, "all")]
        z2, p2 = two_proportion_ztest(a_all.clicks, a_all.impressions, b_all.clicks, b_all.impressions)
        comparisons.append({
            "variant": v, "vs": control,
            "ctr_diff": _f(c.diff.value), "ctr_diff_ci": _ci(c.diff, alpha),
            "relative_lift": _f(c.lift.value), "relative_lift_ci": _ci(c.lift, alpha),
            "delta_method": {"z": _f(c.z), "p_value": _f(c.p_value), "significant": bool(c.p_value < alpha)},
            "two_proportion": {"z": _f(z2), "p_value": _f(p2), "significant": bool(p2 < alpha)},
            "sequential": {"method": "mSPRT, normal mixture (Johari et al. 2017)", "tau": _f(tau),
                           "p_value": _f(p_seq), "significant": bool(p_seq < alpha),
                           "looks": len(days) + 1},
        })

    srm = srm_test({v: mom[(v, "all")].users for v in variants}, weights, cfg.srm_alpha)
    if srm.mismatch:
        warnings.insert(0, f"sample ratio mismatch: users per variant {srm.observed} vs expected "
                           f"{ {k: round(x, 1) for k, x in srm.expected.items()} } (chi2={srm.chi2:.1f}, "
                           f"p={srm.p_value:.2e} < {srm.alpha}); do not trust the results until explained")
    return {
        "experiment_id": exp_id,
        "generated_at": (now or datetime.now(UTC)).isoformat(),
        "configured": spec is not None,
        "control": control,
        "alpha": alpha,
        "units": {"impression": "one listing shown", "click": "distinct (request, listing) clicked",
                  "cluster": "user"},
        "variants": rows,
        "comparisons": comparisons,
        "srm": {"chi2": _f(srm.chi2), "dof": srm.dof, "p_value": _f(srm.p_value), "alpha": srm.alpha,
                "observed": srm.observed, "expected": {k: _f(x) for k, x in srm.expected.items()},
                "warning": srm.mismatch},
        "daily": daily,
        "cumulative": cumulative,
        "warnings": warnings,
        "events": state.counters(),
    }
