"""`POST /v1/events/click` (services/recommender/clicks.py) through FastAPI's TestClient, the
recommender's real ImpressionLogger, the real broker, and the aggregator counting the result."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.kafka_client import EventProducer
from services.common.metrics import Metrics
from services.recommender.clicks import (
    ClickService,
    InMemoryServedRequests,
    RedisServedRequests,
    click_event_id,
    click_router,
)
from services.recommender.impressions import ImpressionLogger

from .conftest import make_aggregator, make_state, new_topic

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
RID = "req-click-0001"


def app_for(svc: ClickService) -> FastAPI:
    app = FastAPI()
    app.include_router(click_router(SimpleNamespace(clicks=svc)))
    return app


def test_clicks_are_validated_published_and_counted_once(kcfg, rclient) -> None:
    topic = new_topic(kcfg)
    metrics = Metrics("recommender_click_test")
    # what the recommender's response path does: log the impression, remember the request
    impressions = ImpressionLogger(lambda: EventProducer(kcfg), metrics, topic=topic)
    shown = [("lst-a", 0.9), ("lst-b", 0.8), ("lst-c", 0.7)]
    impressions.log_shown(request_id=RID, user_id="u-77", seed_listing_id="seed-1",
                          assignments=[{"experiment_id": "exp-click", "variant": "treatment"}], start=0, shown=shown)
    impressions.close()
    svc = ClickService(lambda: EventProducer(kcfg), InMemoryServedRequests(), metrics, topic=topic)
    svc.remember(RID, "u-77", [lid for lid, _ in shown])
    with TestClient(app_for(svc)) as client:
        ok = client.post("/v1/events/click", json={"request_id": RID, "listing_id": "lst-b"})
        assert ok.status_code == 202, ok.text
        assert ok.json() == {"status": "accepted", "event_id": click_event_id(RID, "lst-b"), "request_id": RID,
                             "listing_id": "lst-b", "position": 1}
        again = client.post("/v1/events/click", json={"request_id": RID, "listing_id": "lst-b", "user_id": "u-77"})
        assert again.status_code == 202 and again.json()["event_id"] == ok.json()["event_id"]
        unknown = client.post("/v1/events/click", json={"request_id": "req-never-seen", "listing_id": "lst-b"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_request"
        not_shown = client.post("/v1/events/click", json={"request_id": RID, "listing_id": "lst-z"})
        assert not_shown.status_code == 422 and not_shown.json()["error"]["code"] == "listing_not_shown"
        wrong_user = client.post("/v1/events/click", json={"request_id": RID, "listing_id": "lst-a", "user_id": "u-1"})
        assert wrong_user.status_code == 422 and wrong_user.json()["error"]["code"] == "user_mismatch"
        for body in ({"request_id": RID}, {"request_id": "short", "listing_id": "lst-a"},
                     {"request_id": RID, "listing_id": "lst-a", "extra": 1}, {"request_id": RID, "listing_id": "a b"}):
            assert client.post("/v1/events/click", json=body).status_code == 422
        assert client.post("/v1/events/click", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422
    svc.close()
    body = metrics.exposition()[0].decode()
    assert 'adrec_recommender_click_test_clicks_total{outcome="unknown_request"} 1.0' in body
    assert 'adrec_recommender_click_test_clicks_total{outcome="accepted"} 2.0' in body

    state = make_state(rclient)
    agg = make_aggregator(kcfg, topic, state)
    agg.drain(idle_polls=2)
    agg.consumer.close()
    assert state.counters() == {"accepted": {"click": 1, "impression": 1}, "rejected": {"duplicate_event": 1}}
    m = state.moments("exp-click", ["treatment"], ["all"])[("treatment", "all")]
    assert (m["impressions"], m["clicks"], m["users"]) == (3, 1, 1)


def test_kafka_down_is_a_503_and_the_redis_registry_is_shared(rclient) -> None:
    def no_broker() -> EventProducer:
        raise RuntimeError("broker unreachable")

    served = RedisServedRequests(rclient, ttl_s=60, prefix="served-test")
    served.remember(RID, "u-5", ["lst-a", "lst-b"], start=12)
    other_worker = RedisServedRequests(rclient, ttl_s=60, prefix="served-test")
    rec = other_worker.lookup(RID)
    assert rec is not None and rec.user_id == "u-5" and rec.positions == {"lst-a": 12, "lst-b": 13}
    assert 0 < rclient.ttl(f"served-test:{RID}") <= 60
    svc = ClickService(no_broker, served, Metrics("recommender_click_down"))
    with TestClient(app_for(svc)) as client:
        r = client.post("/v1/events/click", json={"request_id": RID, "listing_id": "lst-a"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "dependency_unavailable"


def test_in_memory_registry_expires_and_is_bounded() -> None:
    reg = InMemoryServedRequests(ttl_s=0.0, max_entries=2)
    reg.remember("req-00000001", "u", ["a"])
    assert reg.lookup("req-00000001") is None  # expired
    reg = InMemoryServedRequests(ttl_s=60, max_entries=2)
    for i in range(3):
        reg.remember(f"req-0000000{i}", "u", ["a"])
    assert reg.lookup("req-00000000") is None and reg.lookup("req-00000002") is not None


def test_registry_down_is_a_retryable_503(rclient) -> None:
    import socket

    import redis

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
                       decode_responses=True)
    metrics = Metrics("recommender_click_registry_down")
    svc = ClickService(lambda: pytest.fail("nothing may be published"), RedisServedRequests(down), metrics)
    with TestClient(app_for(svc), raise_server_exceptions=False) as client:
        r = client.post("/v1/events/click", json={"request_id": RID, "listing_id": "lst-a"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "dependency_unavailable"
    body = metrics.exposition()[0].decode()
    assert 'adrec_recommender_click_registry_down_clicks_total{outcome="registry_unavailable"} 1.0' in body
