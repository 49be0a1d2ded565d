"""The ingest worker as a process on the real broker: crash safety, ordering, dead letters."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from services.common.events import Topics
from services.common.feature_store import FeatureStoreClient, FeatureStoreConfig
from services.common.kafka_client import EventConsumer, EventProducer, ensure_topics
from services.common.milvus_store import ListingVectorStore
from services.common.settings import KafkaConfig, MilvusConfig
from services.ingest.embedding import PrecomputedEmbedder
from services.ingest.processor import epoch_ms
from services.localstack.milvus_server import MilvusLiteServer
from tests.helpers.procs import read_until
from tests.helpers.waiting import eventually

from .conftest import DIM, FASHION, T0, PixelEmbedder, delete, upsert

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def milvus_server(tmp_path: Path):
    server = MilvusLiteServer(tmp_path / "milvus").start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path, kafka_config: KafkaConfig, milvus_server: MilvusLiteServer, unique: str) -> dict:
    images = sorted(FASHION.glob("*.jpg"))[:200]
    vecs = PixelEmbedder().embed([p.read_bytes() for p in images], [str(p) for p in images])
    PrecomputedEmbedder.save(tmp_path / "vectors.npz", [str(p) for p in images], np.stack(vecs))
    topic = f"listings-{unique}"
    ensure_topics(kafka_config, [topic, Topics.dlq(topic)], partitions=3)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "ADREC_LOG_LEVEL": "WARNING",
            "ADREC_KAFKA__BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
            "ADREC_INGEST__TOPIC": topic, "ADREC_INGEST__GROUP_ID": f"ingest-{unique}",
            "ADREC_INGEST__POLL_MAX_RECORDS": "50", "ADREC_INGEST__MODEL_VERSION": "pixels-v1",
            "ADREC_INGEST__PRECOMPUTED_VECTORS": str(tmp_path / "vectors.npz"),
            "ADREC_MILVUS__URI": milvus_server.uri, "ADREC_MILVUS__DIM": str(DIM),
            "ADREC_FEAST__REGISTRY_PATH": str(tmp_path / "registry.db"),
            "ADREC_FEAST__SQLITE_PATH": str(tmp_path / "online.db")}


def start_worker(env: dict) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    read_until(proc, "ingest worker ready", timeout_s=120)
    return proc


def stores(env: dict) -> tuple[ListingVectorStore, FeatureStoreClient]:
    v = ListingVectorStore(MilvusConfig(uri=env["ADREC_MILVUS__URI"], dim=DIM))
    f = FeatureStoreClient(FeatureStoreConfig(registry_path=env["ADREC_FEAST__REGISTRY_PATH"],
                                              sqlite_path=env["ADREC_FEAST__SQLITE_PATH"]))
    return v, f


def make_events(n_total: int = 2000, n_listings: int = 700, seed: int = 7):
    """Random versions per listing, some deletes (some relisted later), published out of order."""
    rng = random.Random(seed)
    images = [str(p) for p in sorted(FASHION.glob("*.jpg"))[:200]]
    events = []
    while len(events) < n_total:
        lid = f"l-{rng.randrange(n_listings)}"
        minute = rng.randrange(1, 60)
        if rng.random() < 0.12:
            events.append(delete(lid, minute))
        else:
            events.append(upsert(lid, minute, image=rng.choice(images), title=f"{lid}@{minute}",
                                 shop_id=f"s-{rng.randrange(9)}"))
    expected = {}
    for ev in events:
        key = (epoch_ms(getattr(ev, "updated_at", None) or ev.deleted_at), 1 if ev.type == "listing.deleted" else 0)
        if ev.id not in expected or key > expected[ev.id][0]:  # ties: first wins, delete beats upsert
            expected[ev.id] = (key, ev)
    return events, {lid: ev for lid, (_, ev) in expected.items()}


def test_two_sigkills_mid_stream_lose_nothing_and_keep_the_newest(env: dict, kafka_config: KafkaConfig) -> None:
    events, expected = make_events()
    active = {lid: ev for lid, ev in expected.items() if ev.type == "listing.upserted"}
    deleted = set(expected) - set(active)
    assert len(events) == 2000 and deleted and active

    with EventProducer(kafka_config) as producer:
        for ev in events:
            producer.publish(env["ADREC_INGEST__TOPIC"], ev)
        producer.flush()

    vectors, features = stores(env)
    ids = sorted(expected)

    def versions() -> dict:
        rows = features.read(["item_metadata:updated_at", "item_metadata:active", "item_metadata:title"],
                             [{"listing_id": i} for i in ids])
        return {r["listing_id"]: r for r in rows}

    def done() -> bool:
        v = versions()
        return all(v[i]["updated_at"] == epoch_ms(getattr(e, "updated_at", None) or e.deleted_at)
                   for i, e in expected.items())

    for kill_after in (150, 400):
        worker = start_worker(env)
        eventually(lambda: sum(r["updated_at"] is not None for r in versions().values()) >= kill_after,
                   300, f"{kill_after} listings written", retry_on=())
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert not done(), "the kill should land mid-stream"

    worker = start_worker(env)
    try:
        eventually(done, 400, "every listing at its newest version", retry_on=())
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0

    # Milvus: every active listing exactly once, at the newest version; deleted ones absent
    assert vectors.count() == len(active)
    rows = vectors.get(sorted(active), with_vectors=False)
    assert len(rows) == len(active) == len({r["listing_id"] for r in rows})
    for r in rows:
        ev = active[r["listing_id"]]
        assert (r["updated_at"], r["shop_id"]) == (epoch_ms(ev.updated_at), ev.shop_id)
    assert vectors.get(sorted(deleted)) == []
    v = versions()
    assert all(v[i]["title"] == e.title and v[i]["active"] for i, e in active.items())
    assert not any(v[i]["active"] for i in deleted)
    probe = vectors.search([np.ones(DIM) / np.sqrt(DIM)], k=len(active) + 10)[0]
    assert not {h.listing_id for h in probe} & deleted

    # the group committed everything: a new member finds nothing left
    with EventConsumer(kafka_config, [env["ADREC_INGEST__TOPIC"]], group_id=env["ADREC_INGEST__GROUP_ID"]) as c:
        assert [m for _ in range(3) for m in c.poll(timeout_s=1.0)] == []


def test_malformed_events_go_to_the_dlq_and_valid_neighbours_are_processed(
        env: dict, kafka_config: KafkaConfig) -> None:
    topic = env["ADREC_INGEST__TOPIC"]
    good = [upsert(f"g-{i}", 1, image=str(sorted(FASHION.glob('*.jpg'))[i])) for i in range(6)]
    bad = [
        b"{this is not json",
        json.dumps({"type": "listing.upserted", "id": "m-1"}).encode(),                      # missing fields
        good[0].to_json().replace(b'"price":"10.00"', b'"price":"ten"'),                      # wrong type
        upsert("img-1", 1, image=str(FASHION / "no-such-image.jpg")).to_json(),               # unknown image
        json.dumps({"type": "listing.deleted", "id": "x", "deleted_at": "yesterday"}).encode(),
        b"\x00\x01binary",
    ]
    with EventProducer(kafka_config) as producer:
        for i in range(6):
            producer.publish(topic, good[i])
            producer.publish_raw(topic, bad[i], key=f"bad-{i}")
        producer.flush()

    worker = start_worker(env)
    vectors, _ = stores(env)
    try:
        eventually(lambda: vectors.count() == 6, 60, "the valid events", retry_on=())
        letters = []
        with EventConsumer(kafka_config, [Topics.dlq(topic)], group_id="dlq-reader", decode=False) as reader:
            deadline = time.monotonic() + 60
            while len(letters) < len(bad) and time.monotonic() < deadline:
                letters += [json.loads(m.value) for m in reader.poll(timeout_s=1.0)]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert len(letters) == len(bad)  # 100% of the malformed events, each once
    by_key = {d["key"]: d for d in letters}
    assert all(d["reason"] and d["source_topic"] == topic for d in letters)
    assert by_key["bad-0"]["error_kind"] == "json" and by_key["bad-0"]["payload"] == "{this is not json"
    assert "Field required" in by_key["bad-1"]["reason"]
    assert "price" in by_key["bad-2"]["reason"]
    assert by_key["bad-3"]["error_kind"] == "embedder" or "image" in by_key["bad-3"]["reason"]
    assert "deleted_at" in by_key["bad-4"]["reason"]
    assert by_key["bad-5"]["payload_b64"] is None or by_key["bad-5"]["payload_b64"]
