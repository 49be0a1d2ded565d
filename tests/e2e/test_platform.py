"""End to end, on the real processes the local supervisor starts (real Kafka, Milvus server, Redis,
the KServe embedder serving a small exported model, the ingest worker, the recommender's FastAPI
over HTTP, the A/B aggregator and its report; Feast's online store shared by them):

listing events in -> searchable -> recommended -> impression on Kafka -> click -> report updated,
then a delete removes a listing from the results, and bad events reach the dead-letter topic.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.common.embedder_client import EmbedderClient, EmbedderClientConfig
from services.common.events import Click, DeadLetter, Impression, ListingDeleted, ListingUpserted, Topics
from services.common.kafka_client import EventConsumer, EventProducer
from services.common.milvus_store import ListingVectorStore
from services.common.settings import KafkaConfig, MilvusConfig
from services.experiments.assignment import Assigner
from services.experiments.config import load_experiments
from services.ingest.catalogue import fashion_products, publish
from services.localstack import registry
from services.localstack.ports import free_port
from services.localstack.settings import LocalStackSettings
from services.localstack.supervisor import Supervisor
from tests.helpers.procs import alive, session_members
from tests.helpers.waiting import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
log = logging.getLogger(__name__)
EXPERIMENT = "shop-diversity"
TEST_MODEL = ("adrec-visual-embedder", "0.0.1-test")  # tests/services/embedder/conftest.py
DIM = 32


@dataclass
class Platform:
    kafka: KafkaConfig
    milvus: MilvusConfig
    recommender: str
    abmetrics: str
    embedder: str


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, small_model: Path) -> Iterator[Platform]:
    run_dir = tmp_path_factory.mktemp("e2e-run")
    ports = {k: free_port() for k in ("EMBEDDER", "EMBEDDER_GRPC", "INGEST_METRICS", "RECOMMENDER", "ABMETRICS")}
    with pytest.MonkeyPatch.context() as mp:  # what the service specs and their children read
        for k, v in ports.items():
            mp.setenv(f"ADREC_LOCAL_{k}_PORT", str(v))
        mp.setenv("ADREC_EMBEDDER__MODEL_DIR", str(small_model))
        settings = LocalStackSettings(run_dir=run_dir, kafka_port=0, kafka_controller_port=0, milvus_port=0,
                                      redis_port=0)
        sup = Supervisor(settings, services=registry.services(), echo=log.info)
        sup.up()
        pids = {r.pid for r in sup.running if r.pid}
        try:
            assert [r.name for r in sup.running] == ["kafka", "milvus", "redis", "embedder", "ingest",
                                                     "recommender", "abmetrics"]
            url = {spec.name: spec.url for spec in sup.services}
            yield Platform(KafkaConfig(bootstrap_servers=sup.endpoints["ADREC_KAFKA__BOOTSTRAP_SERVERS"]),
                           MilvusConfig(uri=sup.endpoints["ADREC_MILVUS__URI"], dim=DIM),
                           url["recommender"], url["abmetrics"], url["embedder"])
        finally:
            sup.down()
    assert not any(alive(p) for p in pids) and session_members(pids) == []


# -- helpers ----------------------------------------------------------------------------------

def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"content-type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def similar(p: Platform, listing_id: str, user: str) -> tuple[int, dict, dict]:
    return http("GET", f"{p.recommender}/v1/listings/{listing_id}/similar?k=12&user_id={user}")


def distinct_shops(n: int, skip: int = 0) -> list[ListingUpserted]:
    """Real catalogue listings from n different shops (the seed's shop is excluded from its results)."""
    out: list[ListingUpserted] = []
    for ev in fashion_products():
        if skip:
            skip -= 1
        elif ev.shop_id not in {e.shop_id for e in out}:
            out.append(ev)
        if len(out) == n:
            return out
    raise AssertionError("not enough shops in the catalogue")


def consume_until(consumer: EventConsumer, match: Callable[[Any], bool], timeout_s: float, what: str) -> Any:
    def poll() -> Any:
        return next((m for m in consumer.poll(0.5) if match(m)), None)
    return eventually(poll, timeout_s, what, interval=0)


def publish_event(cfg: KafkaConfig, event: Any) -> None:
    with EventProducer(cfg) as producer:
        producer.publish(Topics.LISTINGS, event).result(timeout=30)


# -- the tests ----------------------------------------------------------------------------------

def test_listing_event_to_recommendation_impression_click_and_report(platform: Platform) -> None:
    listings = distinct_shops(6)
    seed, others = listings[0], {e.id: e for e in listings[1:]}
    user = f"e2e-{uuid.uuid4().hex[:8]}"
    variant = next(a.variant for a in Assigner(load_experiments(registry._experiments_file())).assign(user).assignments
                   if a.experiment_id == EXPERIMENT)
    events = EventConsumer(platform.kafka, [Topics.USER_EVENTS], group_id=f"e2e-{uuid.uuid4().hex}")
    try:
        # event in -> searchable: in Milvus with the embedder's model version (asked of Milvus, not of
        # the API, so that no partial response is logged as an impression)
        publish(platform.kafka, listings, progress=False)
        store = ListingVectorStore(platform.milvus)
        try:
            rows = eventually(lambda: (r := store.get([e.id for e in listings], with_vectors=False)) and
                              len(r) == 6 and r, 120, "the 6 listings in Milvus")
        finally:
            store.close()
        assert {(r["listing_id"], r["shop_id"], r["model_version"], r["active"]) for r in rows} == {
            (e.id, e.shop_id, TEST_MODEL[1], True) for e in listings}

        # recommended: the other five (the seed's features are written just after Milvus, and a search
        # may lag an insert by a moment: every response served is counted for the report below)
        served: list[dict] = []

        def all_five() -> tuple[int, dict, dict] | None:
            res = similar(platform, seed.id, user)
            served.extend([res[1]] if res[0] == 200 else [])
            return res if res[0] == 200 and {i["listing_id"] for i in res[1]["items"]} == set(others) else None
        _, body, headers = eventually(all_five, 30, "the 5 other listings similar to the seed")

        rid = body["request_id"]
        assert headers["x-request-id"] == rid and len(rid) >= 8
        assert body["user_id"] == user and body["fallback"] is None and body["model_version"] == TEST_MODEL[1]
        assert body["experiments"] == [{"experiment_id": EXPERIMENT, "variant": variant}]
        assert body["seed"] == {"listing_id": seed.id, "title": seed.title, "category": seed.category,
                                "shop_id": seed.shop_id}
        for item in body["items"]:
            ev = others[item["listing_id"]]
            assert (item["title"], item["category"], item["shop_id"], item["image_uri"]) == (
                ev.title, ev.category, ev.shop_id, ev.image_uri)
            assert item["price"] == pytest.approx(float(ev.price), abs=0.005)
        # the scores are the cosine similarities of the embedder's vectors, best first
        client = EmbedderClient(EmbedderClientConfig(url=platform.embedder, model_name=TEST_MODEL[0]))
        ids = [seed.id, *(i["listing_id"] for i in body["items"])]
        vecs = client.embed_images([Path((seed if i == seed.id else others[i]).image_uri).read_bytes() for i in ids])
        client.close()
        vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx((vecs[1:] @ vecs[0]).tolist(), abs=1e-3)

        # impression: logged on user-events with the same request id, items and positions
        msg = consume_until(events, lambda m: isinstance(m.event, Impression) and m.event.request_id == rid, 30,
                            "the impression on user-events")
        imp = msg.event
        assert (imp.user_id, imp.seed_listing_id, msg.key) == (user, seed.id, user.encode())
        assert [(a.experiment_id, a.variant) for a in imp.assignments] == [(EXPERIMENT, variant)]
        assert [(s.listing_id, s.position) for s in imp.items] == [(i["listing_id"], n) for n, i in
                                                                   enumerate(body["items"])]

        # click: accepted against the served response, published after its impression
        clicked = body["items"][2]["listing_id"]
        status, accepted, _ = http("POST", f"{platform.recommender}/v1/events/click",
                                   {"request_id": rid, "listing_id": clicked})
        assert status == 202 and (accepted["listing_id"], accepted["position"]) == (clicked, 2), accepted
        click = consume_until(events, lambda m: isinstance(m.event, Click) and m.event.request_id == rid, 30,
                              "the click on user-events").event
        assert (click.user_id, click.listing_id, click.event_id) == (user, clicked, accepted["event_id"])
        status, err, _ = http("POST", f"{platform.recommender}/v1/events/click",
                              {"request_id": rid, "listing_id": seed.id})
        assert status == 422 and err["error"]["code"] == "listing_not_shown"
    finally:
        events.close()

    # report updated: what this user was shown (5 listings, once unless a search lagged) and 1 click,
    # in the user's variant only
    shown = sum(len(b["items"]) for b in served)

    def report_counts() -> dict | None:
        status, rep, _ = http("GET", f"{platform.abmetrics}/v1/experiments/{EXPERIMENT}/report")
        rows = {r["variant"]: r for r in rep.get("variants", [])} if status == 200 else {}
        row = rows.get(variant, {})
        return rows if (row.get("impressions"), row.get("clicks")) == (shown, 1) else None
    rows = eventually(report_counts, 60, f"the report's {variant} row at {shown} impressions and 1 click")
    assert set(rows) == {"control", "one-per-shop"}
    assert {k: rows[variant][k] for k in ("requests", "users", "clickers", "ctr")} == {
        "requests": len(served), "users": 1, "clickers": 1, "ctr": pytest.approx(1 / shown)}
    other = rows["one-per-shop" if variant == "control" else "control"]
    assert (other["impressions"], other["clicks"]) == (0, 0)

    # a delete takes the listing out of the results, and it is no longer a seed
    gone = body["items"][0]["listing_id"]
    publish_event(platform.kafka, ListingDeleted(id=gone, deleted_at=datetime.now(UTC)))

    def without_deleted() -> dict | None:
        status, res, _ = similar(platform, seed.id, user)
        return res if status == 200 and gone not in {i["listing_id"] for i in res["items"]} else None
    res = eventually(without_deleted, 60, f"{gone} gone from the results")
    assert {i["listing_id"] for i in res["items"]} == set(others) - {gone}
    # its tombstone reaches the feature store just after Milvus: then it is no seed either
    _, err, _ = eventually(lambda: (r := similar(platform, gone, user))[0] == 404 and r, 30, f"404 for {gone}")
    assert err["error"]["code"] == "not_found" and gone in err["error"]["message"]


def test_bad_listing_events_reach_the_dead_letter_topic_with_a_reason(platform: Platform) -> None:
    dlq = EventConsumer(platform.kafka, [Topics.dlq(Topics.LISTINGS)], group_id=f"e2e-{uuid.uuid4().hex}",
                        decode=False)
    try:
        not_json = b'{"type": "listing.upserted", "id": '
        no_title = json.dumps({"type": "listing.upserted", "schema_version": 1, "id": "fp-e2e-bad",
                               "shop_id": "shop-01", "category": "Shirts", "price": "1.00",
                               "image_uri": "/x.jpg", "updated_at": "2026-01-01T00:00:00Z"}).encode()
        real = distinct_shops(1, skip=100)[0]
        missing_image = real.model_copy(update={"id": "fp-e2e-noimage",
                                                "image_uri": str(Path(real.image_uri).with_name("no-such.jpg"))})
        with EventProducer(platform.kafka) as producer:
            for raw in (not_json, no_title):
                producer.publish_raw(Topics.LISTINGS, raw, key=b"e2e-bad").result(timeout=30)
            producer.publish(Topics.LISTINGS, missing_image).result(timeout=30)

        letters: dict[str, DeadLetter] = {}

        def collect() -> bool:
            for m in dlq.poll(0.5):
                letter = DeadLetter.model_validate_json(m.value)
                letters[letter.payload] = letter
            return {not_json.decode(), no_title.decode()} <= set(letters) and any(
                "fp-e2e-noimage" in p for p in letters)
        try:
            eventually(collect, 60, "three dead letters on listings.dlq", interval=0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; got {list(letters.values())}") from None
    finally:
        dlq.close()
    bad_json, bad_schema = letters[not_json.decode()], letters[no_title.decode()]
    assert (bad_json.error_kind, bad_json.source_topic, bad_json.service) == ("json", Topics.LISTINGS, "ingest")
    assert bad_json.reason.startswith("not valid JSON")
    assert bad_schema.error_kind == "schema" and "title: Field required" in bad_schema.reason
    no_image = next(v for k, v in letters.items() if "fp-e2e-noimage" in k)
    assert no_image.error_kind == "fetch" and no_image.reason.startswith("image: image not found")
    assert no_image.key == "fp-e2e-noimage"
    status, _, _ = similar(platform, "fp-e2e-noimage", "e2e-user")
    assert status == 404
