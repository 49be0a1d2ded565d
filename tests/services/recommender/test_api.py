"""The REST API on real Feast (SQLite) + milvus-lite (server mode) + the real Kafka broker."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import pytest

from services.common.events import Topics
from services.common.kafka_client import EventConsumer, ensure_topics
from services.common.settings import KafkaConfig
from services.recommender.schemas import SimilarResponse

pytestmark = pytest.mark.kafka


def test_similar_listings_share_the_article_type_far_more_often_than_chance(client, catalogue) -> None:
    cats = Counter(c["category"] for c in catalogue)
    chance = sum((n / len(catalogue)) ** 2 for n in cats.values())
    rng = random.Random(0)
    seeds = rng.sample(catalogue, 150)
    by_id = {c["listing_id"]: c for c in catalogue}
    same = total = 0
    for seed in seeds:
        r = client.get(f"/v1/listings/{seed['listing_id']}/similar", params={"k": 5, "exclude_shop": "false"})
        assert r.status_code == 200, r.text
        for item in r.json()["items"]:
            total += 1
            same += by_id[item["listing_id"]]["category"] == seed["category"]
    rate = same / total
    print(f"\nsame articleType in top-5: {rate:.3f} (chance {chance:.3f}, {total} results, 16x16-pixel features)")
    assert total >= 700
    assert rate > 4 * chance


def test_response_carries_render_fields_request_id_and_variant(client, catalogue) -> None:
    seed = catalogue[10]
    r = client.get(f"/v1/listings/{seed['listing_id']}/similar", params={"k": 8, "user_id": "u-42"},
                   headers={"x-request-id": "req-abcdef123"})
    body = r.json()
    assert r.status_code == 200 and r.headers["x-request-id"] == body["request_id"]
    # the id keys impressions and clicks: the server's own, unique per response; the client's is echoed
    assert body["request_id"] != "req-abcdef123" and r.headers["x-correlation-id"] == "req-abcdef123"
    again = client.get(f"/v1/listings/{seed['listing_id']}/similar", params={"k": 8, "user_id": "u-42"},
                       headers={"x-request-id": "req-abcdef123"}).json()
    assert again["request_id"] != body["request_id"]
    SimilarResponse.model_validate(body)  # the documented (OpenAPI) shape
    assert body["user_id"] == "u-42" and body["k"] == 8 and len(body["items"]) == 8
    assert body["seed"]["listing_id"] == seed["listing_id"] and body["model_version"] == "pixels16"
    first = body["items"][0]
    assert first["title"] and first["image_uri"].endswith(".jpg") and first["price"] > 0
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_filters_are_honoured(client, catalogue) -> None:
    seed = next(c for c in catalogue if c["category"] == "Tshirts")
    r = client.get(f"/v1/listings/{seed['listing_id']}/similar",
                   params={"k": 20, "category": "same", "min_price": 20, "max_price": 150})
    items = r.json()["items"]
    assert r.status_code == 200 and items
    assert all(i["category"] == "Tshirts" and 20 <= i["price"] <= 150 for i in items)
    assert all(i["shop_id"] != seed["shop_id"] for i in items)  # the seed's shop is excluded by default
    assert seed["listing_id"] not in {i["listing_id"] for i in items}
    assert max(Counter(i["shop_id"] for i in items).values()) <= 2  # diversity: 2 per shop
    other = client.get(f"/v1/listings/{seed['listing_id']}/similar", params={"k": 5, "category": "Watches"})
    assert all(i["category"] == "Watches" for i in other.json()["items"])


def test_pagination_returns_the_next_results_without_overlap(client, catalogue) -> None:
    url = f"/v1/listings/{catalogue[3]['listing_id']}/similar"
    p1 = client.get(url, params={"k": 6, "page": 1}).json()["items"]
    p2 = client.get(url, params={"k": 6, "page": 2}).json()["items"]
    assert len(p1) == len(p2) == 6
    assert not {i["listing_id"] for i in p1} & {i["listing_id"] for i in p2}
    assert p1[-1]["score"] >= p2[0]["score"]


@pytest.mark.parametrize("path, params, fragment", [
    ("/v1/listings/fp-15970/similar", {"k": 0}, "k:"),
    ("/v1/listings/fp-15970/similar", {"k": 1001}, "k:"),
    ("/v1/listings/fp-15970/similar", {"min_price": 50, "max_price": 10}, "min_price must not exceed"),
    ("/v1/listings/fp-15970/similar", {"page": 0}, "page:"),
    ("/v1/listings/fp-15970/similar", {"exclude_shop": "maybe"}, "exclude_shop:"),
    ("/v1/listings/bad id!/similar", {}, "listing_id:"),
])
def test_bad_params_are_422_with_a_clear_body(client, path, params, fragment) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and fragment in err["message"] and err["request_id"]


def test_unknown_listing_is_404(client) -> None:
    r = client.get("/v1/listings/does-not-exist/similar")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found" and "does-not-exist" in r.json()["error"]["message"]


def test_post_needs_exactly_one_image_source(client) -> None:
    assert client.post("/v1/similar", data={}).status_code == 422
    r = client.post("/v1/similar", data={"image_uri": "/etc/passwd"})
    assert r.status_code == 422 and "outside the allowed roots" in r.json()["error"]["message"]
    r = client.post("/v1/similar", files={"image": ("x.jpg", b"", "image/jpeg")})
    assert r.status_code == 422 and "empty" in r.json()["error"]["message"]
    r = client.post("/v1/similar", data={"image_uri": "/x.jpg"}, params={"category": "same"})
    assert r.status_code == 422 and "needs a seed listing" in r.json()["error"]["message"]


def test_impressions_reach_kafka_with_the_request_id(client, stack, catalogue, unique) -> None:
    cfg = KafkaConfig(bootstrap_servers=stack["settings"].kafka.bootstrap_servers)
    ensure_topics(cfg, [Topics.USER_EVENTS])
    r = client.get(f"/v1/listings/{catalogue[7]['listing_id']}/similar", params={"k": 4, "user_id": "u-7"},
                   headers={"x-request-id": f"imp-{unique}"})
    assert r.status_code == 200
    rid = r.json()["request_id"]
    shown = [i["listing_id"] for i in r.json()["items"]]
    found = None
    with EventConsumer(cfg, [Topics.USER_EVENTS], group_id=f"imp-{unique}") as consumer:
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            for m in consumer.poll(timeout_s=1.0):
                if m.ok and getattr(m.event, "request_id", None) == rid:
                    found = m.event
    assert found is not None, "impression not logged"
    assert found.user_id == "u-7" and [i.listing_id for i in found.items] == shown and found.fallback is None
    assert [i.position for i in found.items] == [0, 1, 2, 3]


def test_openapi_documents_the_endpoints(client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/listings/{listing_id}/similar", "/v1/similar"} <= set(spec["paths"])
    params = {p["name"] for p in spec["paths"]["/v1/listings/{listing_id}/similar"]["get"]["parameters"]}
    assert {"k", "page", "category", "min_price", "max_price", "exclude_shop", "user_id"} <= params
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["listings"] == 2000
    assert "adrec_recommender_request_seconds" in client.get("/metrics").text


def test_click_on_a_served_listing_is_accepted_and_others_are_refused(client, stack, catalogue, unique) -> None:
    cfg = KafkaConfig(bootstrap_servers=stack["settings"].kafka.bootstrap_servers)
    ensure_topics(cfg, [Topics.USER_EVENTS])
    r = client.get(f"/v1/listings/{catalogue[20]['listing_id']}/similar", params={"k": 3, "user_id": "u-click"})
    shown, rid = r.json()["items"][1]["listing_id"], r.json()["request_id"]
    ok = client.post("/v1/events/click", json={"request_id": rid, "listing_id": shown})
    assert ok.status_code == 202, ok.text
    unknown = client.post("/v1/events/click", json={"request_id": "never-served-1", "listing_id": shown})
    assert unknown.status_code == 404
    not_shown = client.post("/v1/events/click", json={"request_id": rid, "listing_id": "fp-0"})
    assert not_shown.status_code == 422
    found = None
    with EventConsumer(cfg, [Topics.USER_EVENTS], group_id=f"clk-{unique}") as consumer:
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            for m in consumer.poll(timeout_s=1.0):
                if m.ok and m.event.type == "click" and m.event.request_id == rid:
                    found = m.event
    assert found is not None and found.user_id == "u-click" and found.listing_id == shown and found.position == 1


def test_unexpected_error_is_a_json_500_with_the_request_id(client, monkeypatch):
    from services.recommender.retrieval import SimilarListings

    def boom(self, listing_id, q):
        raise RuntimeError("secret internals")
    monkeypatch.setattr(SimilarListings, "for_listing", boom)
    r = client.get("/v1/listings/fp-15970/similar", headers={"x-request-id": "req-boom-12345"})
    assert r.status_code == 500 and r.headers["x-correlation-id"] == "req-boom-12345"
    body = r.json()
    assert body["error"]["code"] == "internal" and body["error"]["request_id"] == r.headers["x-request-id"]
    assert "secret internals" not in r.text and "Traceback" not in r.text
