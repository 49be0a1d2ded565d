"""ListingProcessor on real Feast (SQLite) and milvus-lite: ordering, idempotency, deletes, DLQ."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.image_fetch import ImageFetcher
from services.ingest.processor import ListingProcessor
from services.ingest.settings import DATA_DIR

from .conftest import PixelEmbedder, as_messages, delete, upsert


@pytest.fixture
def processor(vectors, features) -> ListingProcessor:
    return ListingProcessor(vectors, features, PixelEmbedder(), ImageFetcher(allowed_roots=[DATA_DIR]),
                            backoff_s=0.0)


def meta(features, lid: str) -> dict:
    return features.read(["item_metadata:title", "item_metadata:active", "item_metadata:updated_at",
                          "item_metadata:price"], [{"listing_id": lid}])[0]


def test_upserts_land_in_milvus_and_feast(processor, vectors, features) -> None:
    res = processor.process(as_messages([upsert(f"l-{i}") for i in range(5)]))
    assert (res.upserted, res.dead) == (5, [])
    assert vectors.count() == 5
    assert meta(features, "l-3")["title"] == "title l-3"
    emb = features.read(["item_embedding:embedding", "item_embedding:model_version"], [{"listing_id": "l-3"}])[0]
    assert len(emb["embedding"]) == 48 and emb["model_version"] == "pixels-v1"
    assert len(res.freshness_s) == 5


def test_older_event_never_overwrites_newer_and_replays_change_nothing(processor, vectors, features) -> None:
    processor.process(as_messages([upsert("l-1", minutes=10, title="v10", price=20)]))
    res = processor.process(as_messages([upsert("l-1", minutes=5, title="v5")]))  # late, older
    assert (res.stale, res.upserted) == (1, 0)
    assert meta(features, "l-1")["title"] == "v10"
    assert vectors.get(["l-1"], with_vectors=False)[0]["price"] == 20.0
    calls = processor.embedder.calls
    res = processor.process(as_messages([upsert("l-1", minutes=10, title="v10", price=20)]))  # replay
    assert res.stale == 1 and processor.embedder.calls == calls  # nothing re-embedded
    assert vectors.count() == 1


def test_newest_event_in_a_batch_wins_and_ties_are_deterministic(processor, vectors, features) -> None:
    batch = [upsert("a", 1, title="a1"), upsert("a", 3, title="a3"), upsert("a", 2, title="a2"),
             upsert("a", 3, title="a3-same-time"), upsert("b", 1), delete("b", 1)]
    res = processor.process(as_messages(batch))
    assert res.superseded == 4 and res.upserted == 1 and res.deleted == 1
    assert meta(features, "a")["title"] == "a3"  # equal time: the first in partition order
    res = processor.process(as_messages([upsert("a", 3, title="a3-later-batch")]))
    assert res.stale == 1 and meta(features, "a")["title"] == "a3"  # same rule across batches
    assert vectors.get(["b"]) == [] and meta(features, "b")["active"] is False


def test_delete_removes_from_search_and_tombstone_blocks_resurrection(processor, vectors, features) -> None:
    processor.process(as_messages([upsert("x", 1), upsert("y", 1)]))
    processor.process(as_messages([delete("x", 5)]))
    assert vectors.get(["x"]) == [] and vectors.count() == 1
    m = meta(features, "x")
    assert m["active"] is False and m["title"] == "title x"  # metadata kept, marked inactive
    res = processor.process(as_messages([upsert("x", 3)]))  # older than the delete
    assert res.stale == 1 and vectors.get(["x"]) == []
    res = processor.process(as_messages([upsert("x", 9, title="relisted")]))  # newer: relisted
    assert res.upserted == 1 and meta(features, "x")["active"] is True


def test_bad_events_and_images_are_dead_lettered_with_reasons(processor, vectors, tmp_path: Path) -> None:
    corrupt = DATA_DIR / "fashion-products" / "styles.csv"  # exists, not an image
    batch = [upsert("ok-1"), b'{"type": "listing.upserted"', upsert("missing", image=str(DATA_DIR / "nope.jpg")),
             upsert("outside", image="/etc/passwd"), upsert("corrupt", image=str(corrupt)),
             upsert("remote", image="http://127.0.0.1:1/x.jpg"), upsert("ok-2")]
    res = processor.process(as_messages(batch))
    reasons = {m.message.offset: (m.kind, m.reason) for m in res.dead}
    assert res.upserted == 2 and vectors.count() == 2
    assert reasons[1][0] == "json"
    assert reasons[2][0] == "fetch" and reasons[2][1].startswith("image: image not found:")
    assert reasons[2][1].endswith("nope.jpg")
    assert "outside the allowed roots" in reasons[3][1]
    assert reasons[4][0] == "embedder" and "cannot decode" in reasons[4][1]
    assert "not a public address" in reasons[5][1]
