"""The real stack (Kafka broker + redis-server + the aggregator) driven by synthetic users.

Three experiments in three layers run on the same traffic, assigned by the real salted-hash
Assigner: `sim-lift` (treatment raises every user's click probability by 20%: the known true
lift), `sim-aa` (no effect) and `sim-srm` (a bug moves 12% of control users into treatment:
a skewed assignment). The aggregator crashes once between its Redis write and its Kafka
commit and is restarted; then the whole topic is replayed into a fresh aggregator.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.abmetrics.api import ApiDeps, create_app
from services.abmetrics.report import build_report
from services.abmetrics.settings import AbMetricsConfig
from services.common.events import Click, Impression, ShownItem
from services.common.kafka_client import EventProducer
from services.common.metrics import Metrics
from services.experiments.assignment import Assigner, bucket
from services.experiments.config import ExperimentsConfig

from .conftest import make_aggregator, make_state, new_topic

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

TRUE_LIFT = 0.20
BASE_P = 0.05
USERS = 2500
DAYS = 4
K = 6
START = datetime(2026, 11, 2, tzinfo=UTC)
CONFIG = ExperimentsConfig.model_validate({"layers": [
    {"id": "ranking", "salt": "layer-ranking-sim", "experiments": [
        {"id": "sim-lift", "salt": "lift-1", "variants": [{"name": "control", "weight": 50},
                                                         {"name": "treatment", "weight": 50, "params": {"k": 6}}]}]},
    {"id": "ui", "salt": "layer-ui-sim", "experiments": [
        {"id": "sim-aa", "salt": "aa-1", "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}]},
    {"id": "infra", "salt": "layer-infra-sim", "experiments": [
        {"id": "sim-srm", "salt": "srm-1", "variants": [{"name": "control", "weight": 50},
                                                        {"name": "treatment", "weight": 50}]}]},
]})


def simulate(seed: int = 11):
    """Events in time order, and the ground truth per experiment x variant."""
    rng = np.random.default_rng(seed)
    assigner = Assigner(CONFIG)
    listings = [f"lst-{i:04d}" for i in range(400)]
    truth: dict = defaultdict(lambda: {"impressions": 0, "clicks": 0, "users": set(), "requests": 0,
                                       "per_user": defaultdict(lambda: [0, 0])})
    events: list = []
    for u in range(USERS):
        uid = f"user-{u:05d}"
        assignments = assigner.assign(uid).assignments
        for a in assignments:  # the assignment bug of sim-srm
            if a.experiment_id == "sim-srm" and a.variant == "control" and bucket("srm-bug", uid) < 1200:
                assignments[assignments.index(a)] = a.model_copy(update={"variant": "treatment"})
        variant = {a.experiment_id: a.variant for a in assignments}
        p = rng.beta(2, 2 / BASE_P - 2) * (1 + TRUE_LIFT if variant["sim-lift"] == "treatment" else 1.0)
        for _ in range(1 + rng.poisson(2.5)):
            t = START + timedelta(days=int(rng.integers(DAYS)), seconds=int(rng.integers(86_000)))
            rid = uuid.UUID(int=int(rng.integers(2**63)) << 64 | u).hex
            shown = list(rng.choice(listings, K, replace=False))
            events.append(Impression(request_id=rid, user_id=uid, assignments=assignments, occurred_at=t,
                                     items=[ShownItem(listing_id=lid, position=i) for i, lid in enumerate(shown)]))
            clicked = [lid for lid in shown if rng.random() < p]
            for j, lid in enumerate(clicked):
                events.append(Click(request_id=rid, user_id=uid, listing_id=lid, position=shown.index(lid),
                                    occurred_at=t + timedelta(seconds=5 + 10 * j)))
            for a in assignments:
                tr = truth[(a.experiment_id, a.variant)]
                tr["impressions"] += K
                tr["clicks"] += len(clicked)
                tr["requests"] += 1
                tr["users"].add(uid)
                tr["per_user"][uid][0] += K
                tr["per_user"][uid][1] += len(clicked)
    events.sort(key=lambda e: (e.occurred_at, e.type != "impression"))
    return events, truth


@pytest.fixture(scope="module")
def sim(kcfg, rclient):
    events, truth = simulate()
    topic = new_topic(kcfg)
    with EventProducer(kcfg, linger_ms=20) as producer:
        for e in events:
            producer.publish(topic, e)
        producer.flush()
    n_imp = sum(isinstance(e, Impression) for e in events)
    group, ns = f"abm-sim-{uuid.uuid4().hex[:6]}", f"abm-sim-{uuid.uuid4().hex[:6]}"
    # first aggregator: three batches, then a crash after the Redis write of the fourth, before its commit
    state = make_state(rclient, ns)
    first = make_aggregator(kcfg, topic, state, group, max_records=1500)
    applied, deadline = 0, time.monotonic() + 120
    while applied < 4:
        assert time.monotonic() < deadline, "the first aggregator got no batches"
        batch = first.consumer.poll(1.0, max_records=1500)
        if batch:
            first.process(batch, commit=applied < 3)
            applied += 1
    first.consumer.close()
    # restart: the same group and Redis namespace
    second = make_aggregator(kcfg, topic, make_state(rclient, ns), group)
    outcomes = second.drain(idle_polls=3)
    second.consumer.close()
    return {"events": events, "truth": truth, "topic": topic, "state": state, "n_imp": n_imp,
            "n_clicks": len(events) - n_imp, "restart_outcomes": outcomes}


def test_restart_after_a_crash_loses_and_double_counts_nothing(sim) -> None:
    counters = sim["state"].counters()
    assert counters["accepted"] == {"click": sim["n_clicks"], "impression": sim["n_imp"]}
    assert counters["rejected"] == {}
    assert sim["restart_outcomes"]["redelivered"] > 0  # the uncommitted batch came back and was skipped
    for (exp, variant), tr in sim["truth"].items():
        m = sim["state"].moments(exp, [variant], ["all"])[(variant, "all")]
        assert (m["impressions"], m["clicks"], m["users"], m["requests"]) == \
               (tr["impressions"], tr["clicks"], len(tr["users"]), tr["requests"])
        nc = np.array(list(tr["per_user"].values()))  # the user-level moments of the delta method
        assert (m["sum_n2"], m["sum_c2"], m["sum_nc"]) == \
               ((nc[:, 0] ** 2).sum(), (nc[:, 1] ** 2).sum(), (nc[:, 0] * nc[:, 1]).sum())


def test_report_recovers_the_true_lift_within_its_interval(sim) -> None:
    report = build_report(sim["state"], "sim-lift", CONFIG, AbMetricsConfig())
    cmp = report["comparisons"][0]
    lo, hi = cmp["relative_lift_ci"]
    print(f"\nsim-lift: true lift {TRUE_LIFT:.1%}, estimated {cmp['relative_lift']:.1%} [{lo:.1%}, {hi:.1%}]; "
          f"CTR control {report['variants'][0]['ctr']:.4f}, treatment {report['variants'][1]['ctr']:.4f}; "
          f"p delta {cmp['delta_method']['p_value']:.2e}, two-prop {cmp['two_proportion']['p_value']:.2e}, "
          f"always-valid {cmp['sequential']['p_value']:.2e}")
    assert lo < TRUE_LIFT < hi
    assert cmp["sequential"]["significant"] and cmp["delta_method"]["significant"]
    assert not report["srm"]["warning"] and not any("mismatch" in w for w in report["warnings"])
    assert len({d["day"] for d in report["daily"]}) == DAYS and len(report["cumulative"]) == DAYS
    for row in report["variants"]:
        assert row["ctr_ci"][0] < row["ctr"] < row["ctr_ci"][1]
        assert row["clicks_per_user"] == pytest.approx(row["clicks"] / row["users"])


def test_aa_experiment_shows_no_effect_and_srm_only_for_the_skewed_split(sim) -> None:
    aa = build_report(sim["state"], "sim-aa", CONFIG, AbMetricsConfig())
    srm = build_report(sim["state"], "sim-srm", CONFIG, AbMetricsConfig())
    c = aa["comparisons"][0]
    print(f"\nsim-aa: lift {c['relative_lift']:.1%} {c['relative_lift_ci']}, always-valid p "
          f"{c['sequential']['p_value']:.3f}; SRM p: sim-aa {aa['srm']['p_value']:.3f}, "
          f"sim-srm {srm['srm']['p_value']:.2e} (users {srm['srm']['observed']})")
    assert not c["sequential"]["significant"]
    assert c["relative_lift_ci"][0] < 0 < c["relative_lift_ci"][1]
    assert not aa["srm"]["warning"]
    assert srm["srm"]["warning"] and srm["srm"]["p_value"] < 0.001
    assert srm["warnings"][0].startswith("sample ratio mismatch")


def test_replaying_the_whole_topic_into_a_fresh_aggregator_gives_identical_numbers(sim, kcfg, rclient) -> None:
    fresh = make_state(rclient)
    agg = make_aggregator(kcfg, sim["topic"], fresh)
    agg.drain(idle_polls=3)
    agg.consumer.close()
    assert fresh.snapshot() == sim["state"].snapshot()
    now = datetime(2026, 11, 6, tzinfo=UTC)
    for exp in ("sim-lift", "sim-aa", "sim-srm"):
        assert build_report(fresh, exp, CONFIG, now=now) == build_report(sim["state"], exp, CONFIG, now=now)


def test_report_api_and_dashboard(sim) -> None:
    with_empty = ExperimentsConfig.model_validate({"layers": [*CONFIG.model_dump()["layers"], {
        "id": "later", "salt": "later-1", "experiments": [{"id": "sim-empty", "salt": "e-1", "variants": [
            {"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]}]}]})
    deps = ApiDeps(sim["state"], AbMetricsConfig(), Metrics("abmetrics_api_test"), lambda: with_empty)
    with TestClient(create_app(deps)) as client:
        r = client.get("/v1/experiments/sim-lift/report")
        assert r.status_code == 200 and r.json()["comparisons"][0]["variant"] == "treatment"
        listed = {e["id"] for e in client.get("/v1/experiments").json()["experiments"]}
        assert {"sim-lift", "sim-aa", "sim-srm"} <= listed
        page = client.get("/experiments/sim-srm")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text.count("data:image/png;base64,") == 2 and "sample ratio mismatch" in page.text
        assert "MISMATCH" not in client.get("/experiments/sim-lift").text
        assert client.get("/v1/experiments/nope/report").status_code == 404
        empty = client.get("/v1/experiments/sim-empty/report")  # configured, no events yet
        assert empty.status_code == 200 and [v["impressions"] for v in empty.json()["variants"]] == [0, 0]
        assert empty.json()["comparisons"][0]["relative_lift"] is None and not empty.json()["srm"]["warning"]
        assert "no data yet" in client.get("/experiments/sim-empty").text
        assert client.get("/v1/experiments/bad%20id/report").status_code == 422
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        assert "adrec_abmetrics_api_test_reports_total" in client.get("/metrics").text
