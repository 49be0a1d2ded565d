"""ListingProcessor on real Feast (SQLite) and milvus-lite: ordering, idempotency, deletes, DLQ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.embedder_client import EmbedderError
from services.common.image_fetch import ImageFetcher
from services.ingest.embedding import RemoteEmbedder
from services.ingest.processor import ListingProcessor
from services.ingest.settings import DATA_DIR

from .conftest import T0, PixelEmbedder, as_messages, delete, upsert


class FlakyEmbedder(PixelEmbedder):
    """Down (connection refused, 5xx, model not loaded) for its first `failures` calls."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def embed(self, images, uris):
        if self.failures > 0:
            self.failures -= 1
            self.calls += 1
            raise EmbedderError("embedder error: HTTP 404 model not loaded", permanent=False, status=404)
        return super().embed(images, uris)


def with_field(event, **over) -> bytes:
    """The event as JSON with fields its model would refuse (as a producer could send them)."""
    return json.dumps({**json.loads(event.to_json()), **over}).encode()


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


def test_a_dead_lettered_newest_event_falls_back_to_the_next_newest(processor, vectors, features) -> None:
    """As if each event had come in its own batch: the deactivation (t=5) applies, the newer upsert
    whose image is gone (t=6) is dead-lettered, and nothing older is silently dropped."""
    processor.process(as_messages([upsert("x", 1, title="live")]))
    gone = str(DATA_DIR / "nope.jpg")
    res = processor.process(as_messages([upsert("x", 5, title="off", active=False), upsert("x", 6, image=gone),
                                         delete("y", 2), upsert("y", 7, image=gone), upsert("z", 3, title="z3"),
                                         upsert("z", 4, image=gone), upsert("z", 2, title="z2")]))
    assert [d.message.offset for d in res.dead] == [1, 3, 5]  # the three image failures, and only those
    assert (res.upserted, res.deleted, res.superseded) == (2, 1, 1)  # x5 and z3 written, y deleted, z2 unneeded
    assert meta(features, "x")["active"] is False and meta(features, "x")["title"] == "off"
    assert meta(features, "z")["title"] == "z3" and vectors.get(["y"]) == []


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


def test_unusable_image_uris_fail_their_event_only(processor, vectors, features) -> None:
    batch = [upsert("ok-1"), upsert("nul", image=f"file://{DATA_DIR}/a%00.jpg"),
             upsert("ipv6", image="http://[::1/x.jpg"), upsert("label", image=f"http://{'a' * 70}.example.com/x.jpg"),
             with_field(upsert("ctrl"), image_uri="http://8.8.8.8/x\x01.jpg"), upsert("ok-2")]
    res = processor.process(as_messages(batch))
    assert res.upserted == 2 and vectors.count() == 2 and meta(features, "ok-2")["title"] == "title ok-2"
    reasons = {m.message.offset: (m.kind, m.reason) for m in res.dead}
    assert set(reasons) == {1, 2, 3, 4}
    assert reasons[1][0] == "fetch" and "invalid image path" in reasons[1][1] and "null byte" in reasons[1][1]
    assert reasons[2][0] == "fetch" and "invalid image URI 'http://[::1/x.jpg'" in reasons[2][1]
    assert reasons[3][0] == "fetch" and "invalid host name" in reasons[3][1]
    assert reasons[4] == ("schema", "image_uri: Value error, image_uri must not contain control characters")
    assert all(m.attempts == 1 for m in res.dead)  # permanent: not retried


def test_an_unexpected_fetch_error_is_that_images_failure(vectors, features) -> None:
    class Buggy(ImageFetcher):
        def fetch(self, uri: str) -> bytes:
            if uri.endswith("boom.jpg"):
                raise KeyError("surprise")
            return super().fetch(uri)

    p = ListingProcessor(vectors, features, PixelEmbedder(), Buggy(allowed_roots=[DATA_DIR]), backoff_s=0.0)
    res = p.process(as_messages([upsert("a"), upsert("b", image=f"{DATA_DIR}/boom.jpg"), upsert("c")]))
    assert res.upserted == 2 and vectors.count() == 2
    assert [(d.message.offset, d.kind) for d in res.dead] == [(1, "fetch")]
    assert "unexpected KeyError" in res.dead[0].reason and "boom.jpg" in res.dead[0].reason


def test_multibyte_category_over_the_milvus_limit_is_dead_lettered(processor, vectors) -> None:
    batch = [upsert("ok-1", category="鞋" * 40), with_field(upsert("cjk"), category="鞋" * 50), upsert("ok-2")]
    res = processor.process(as_messages(batch))
    assert res.upserted == 2 and vectors.get(["ok-1"], with_vectors=False)[0]["category"] == "鞋" * 40
    assert [(d.message.offset, d.kind) for d in res.dead] == [(1, "schema")]
    assert res.dead[0].reason == "category: Value error, must be at most 128 bytes of UTF-8, got 150"


def test_a_transient_embedder_outage_fails_the_batch_not_its_events(vectors, features) -> None:
    corrupt = str(DATA_DIR / "fashion-products" / "styles.csv")
    embedder = FlakyEmbedder(failures=3)
    p = ListingProcessor(vectors, features, embedder, ImageFetcher(allowed_roots=[DATA_DIR]), backoff_s=0.0)
    batch = as_messages([upsert("a"), upsert("b"), upsert("bad", image=corrupt)])
    with pytest.raises(EmbedderError, match="model not loaded.*after 3 attempts") as err:
        p.process(batch)  # not committed: the worker retries the batch
    assert not err.value.permanent and embedder.calls == 3
    assert vectors.count() == 0 and meta(features, "a")["updated_at"] is None
    res = p.process(batch)  # the embedder is back
    assert res.upserted == 2 and vectors.count() == 2
    assert [(d.message.offset, d.kind) for d in res.dead] == [(2, "embedder")]  # a bad image is still dead
    embedder.failures = 2  # an outage shorter than the retries: nothing seen
    res = p.process(as_messages([upsert("c")]))
    assert (res.upserted, res.dead) == (1, [])


def test_remote_embedder_raises_a_transient_error_even_for_one_image() -> None:
    class Client:
        def __init__(self, exc: EmbedderError) -> None:
            self.exc = exc

        def embed_images(self, images):
            raise self.exc

    down = EmbedderError("embedder unreachable: connection refused", permanent=False)
    with pytest.raises(EmbedderError, match="unreachable"):
        RemoteEmbedder(Client(down), "v1").embed([b"img"], ["u"])
    refused = EmbedderError("embedder refused the input: HTTP 400", permanent=True, status=400)
    assert RemoteEmbedder(Client(refused), "v1").embed([b"img"], ["u"]) == [refused]


def test_events_dated_far_in_the_future_are_dead_lettered(vectors, features) -> None:
    p = ListingProcessor(vectors, features, PixelEmbedder(), ImageFetcher(allowed_roots=[DATA_DIR]),
                         backoff_s=0.0, clock=T0.timestamp)
    res = p.process(as_messages([upsert("f", minutes=61, title="from 2099?"), delete("g", minutes=60 * 24 * 365),
                                 upsert("near", minutes=59), delete("g2", minutes=60)]))
    assert (res.upserted, res.deleted) == (1, 1)
    reasons = {d.message.offset: (d.kind, d.reason) for d in res.dead}
    assert reasons == {
        0: ("schema", "updated_at 2026-11-25T13:01:00+00:00 is more than 3600s ahead of the clock "
                      "(2026-11-25T12:00:00+00:00)"),
        1: ("schema", "deleted_at 2027-11-25T12:00:00+00:00 is more than 3600s ahead of the clock "
                      "(2026-11-25T12:00:00+00:00)")}
    assert meta(features, "f")["updated_at"] is None
    res = p.process(as_messages([upsert("f", minutes=5, title="real")]))  # a later, real update applies
    assert res.upserted == 1 and meta(features, "f")["title"] == "real"
    strict = ListingProcessor(vectors, features, PixelEmbedder(), ImageFetcher(allowed_roots=[DATA_DIR]),
                              max_future_s=60, clock=T0.timestamp)
    assert "more than 60s ahead" in strict.process(as_messages([upsert("h", minutes=2)])).dead[0].reason
