"""ListingProcessor on Feast's Redis online store (the production one), which keeps a row only when
its event timestamp is newer than the stored one: versions must decide, not the writer's clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

import services.common.feature_store as feature_store
from services.common.feature_store import FeatureStoreClient, FeatureStoreConfig
from services.common.image_fetch import ImageFetcher
from services.common.settings import RedisConfig
from services.ingest.processor import ListingProcessor
from services.ingest.settings import DATA_DIR

from .conftest import PixelEmbedder, as_messages, delete, upsert

pytestmark = pytest.mark.redis


class _ClockAhead(datetime):
    """datetime whose now() runs an hour fast: a replica with a skewed clock."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(hours=1)


@pytest.fixture
def redis_features(tmp_path: Path, redis_server) -> FeatureStoreClient:
    client = FeatureStoreClient(FeatureStoreConfig(
        registry_path=str(tmp_path / "registry.db"), online_store="redis",
        redis=RedisConfig(host=redis_server.host, port=redis_server.port)))
    client.apply()
    return client


def test_a_newer_version_lands_whatever_the_writers_clocks(vectors, redis_features, monkeypatch, unique) -> None:
    processor = ListingProcessor(vectors, redis_features, PixelEmbedder(), ImageFetcher(allowed_roots=[DATA_DIR]),
                                 backoff_s=0.0)
    lid = f"r-{unique}"
    with monkeypatch.context() as m:  # v1 written by a replica an hour fast
        m.setattr(feature_store, "datetime", _ClockAhead)
        processor.process(as_messages([upsert(lid, 1, title="v1")]))
    processor.process(as_messages([upsert(lid, 2, title="v2")]))  # v2, newer, by a replica on time
    row = redis_features.read(["item_metadata:title", "item_metadata:updated_at"], [{"listing_id": lid}])[0]
    emb = redis_features.read(["item_embedding:updated_at"], [{"listing_id": lid}])[0]
    assert row["title"] == "v2" and emb["updated_at"] == row["updated_at"]
    assert vectors.get([lid], with_vectors=False)[0]["title"] == "v2"

    # a delete at the very time of the stored version beats it (the processor's tie rule), in Redis too
    processor.process(as_messages([delete(lid, 2)]))
    row = redis_features.read(["item_metadata:active"], [{"listing_id": lid}])[0]
    assert row["active"] is False and vectors.get([lid]) == []
