"""Feast feature views written and read on a real SQLite file and a real redis-server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.feature_store import FeatureStoreClient, FeatureStoreConfig, FeatureStoreError
from services.common.settings import RedisConfig
from services.localstack.redis_server import RedisServer

FEATURES = [
    "item_embedding:embedding", "item_embedding:model_version",
    "item_metadata:title", "item_metadata:price", "item_metadata:active", "item_metadata:category",
]


def roundtrip(client: FeatureStoreClient) -> None:
    client.apply()
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3, 8)).astype(np.float32)
    client.push("item_embedding_push", [
        {"listing_id": f"l-{i}", "embedding": vecs[i].tolist(), "model_version": "m1", "updated_at": 10 + i}
        for i in range(3)])
    client.push("item_metadata_push", [
        {"listing_id": f"l-{i}", "shop_id": "s-1", "title": f"Red shoe {i}", "category": "Shoes",
         "price": 10.5 + i, "currency": "USD", "image_uri": f"/img/{i}.jpg", "active": True,
         "updated_at": 10 + i} for i in range(3)])

    rows = client.read(FEATURES, [{"listing_id": "l-2"}, {"listing_id": "l-0"}, {"listing_id": "nope"}])
    assert [r["listing_id"] for r in rows] == ["l-2", "l-0", "nope"]
    np.testing.assert_allclose(rows[0]["embedding"], vecs[2], rtol=1e-6)
    assert rows[0]["title"] == "Red shoe 2" and rows[0]["price"] == pytest.approx(12.5)
    assert rows[1]["active"] is True and rows[1]["model_version"] == "m1"
    assert rows[2]["embedding"] is None and rows[2]["title"] is None  # unknown entity

    # a later push overwrites (a delete marks the listing inactive)
    client.push("item_metadata_push", [
        {"listing_id": "l-0", "shop_id": "s-1", "title": "Red shoe 0", "category": "Shoes", "price": 10.5,
         "currency": "USD", "image_uri": "/img/0.jpg", "active": False, "updated_at": 99}])
    assert client.read(["item_metadata:active"], [{"listing_id": "l-0"}])[0]["active"] is False

    # the direct per-view read returns what Feast's own get_online_features returns
    entity_rows = [{"listing_id": "l-1"}, {"listing_id": "l-0"}, {"listing_id": "nope"}]
    feast_rows = client.store.get_online_features(features=FEATURES, entity_rows=entity_rows).to_dict()
    ours = client.read(FEATURES, entity_rows)
    for name, column in feast_rows.items():
        assert [r[name] for r in ours] == column, name

    # bad references are one clear error, not a KeyError from deep inside Feast
    for bad, why in [(["item_metadata"], "not 'view:feature'"), (["item_metadata:nope"], "has no features"),
                     (["item_embedding:updated_at", "item_metadata:updated_at"], "from two views"),
                     (["no_such_view:x"], "online read failed")]:
        with pytest.raises(FeatureStoreError, match=why):
            client.read(bad, [{"listing_id": "l-0"}])
    with pytest.raises(FeatureStoreError, match="only str and int keys"):
        client.read(["item_metadata:title"], [{"listing_id": 1.5}])


def test_sqlite_online_store(tmp_path: Path) -> None:
    cfg = FeatureStoreConfig(registry_path=str(tmp_path / "registry.db"),
                             sqlite_path=str(tmp_path / "online.db"))
    client = FeatureStoreClient(cfg)
    roundtrip(client)
    client.close()
    assert (tmp_path / "online.db").stat().st_size > 0
    # the data is in the file: a second client (another process would do the same) reads it
    again = FeatureStoreClient(cfg)
    assert again.read(["item_metadata:title"], [{"listing_id": "l-1"}])[0]["title"] == "Red shoe 1"


def test_sql_registry(tmp_path: Path) -> None:
    """The cluster's shared registry is Feast's SQL registry (the chart's feast.registryUrl): driven here
    through SQLAlchemy on SQLite; PostgreSQL takes the same path with the psycopg driver."""
    cfg = FeatureStoreConfig(registry_path=f"sqlite:///{tmp_path / 'registry.sqlite'}",
                             sqlite_path=str(tmp_path / "online.db"))
    client = FeatureStoreClient(cfg)
    roundtrip(client)  # apply() writes the definitions into the SQL registry
    client.close()
    again = FeatureStoreClient(cfg)  # another service reads the definitions back from the database
    assert again.read(["item_metadata:title"], [{"listing_id": "l-1"}])[0]["title"] == "Red shoe 1"
    assert {v.name for v in again.store.list_feature_views()} >= {"item_metadata", "item_embedding"}


def test_postgres_registry_urls_have_a_driver() -> None:
    import sqlalchemy

    # Feast rewrites postgresql:// to the psycopg (3) driver; the engine is built without connecting
    assert sqlalchemy.create_engine("postgresql+psycopg://feast@registry:5432/feast").dialect.driver == "psycopg"


@pytest.mark.redis
def test_redis_online_store(tmp_path: Path, redis_server: RedisServer) -> None:
    import redis

    cfg = FeatureStoreConfig(registry_path=str(tmp_path / "registry.db"), online_store="redis",
                             redis=RedisConfig(host=redis_server.host, port=redis_server.port))
    client = FeatureStoreClient(cfg)
    roundtrip(client)
    # the features really live in redis, not in a local file
    assert redis.Redis(host=redis_server.host, port=redis_server.port).dbsize() >= 3
    assert not list(tmp_path.glob("*online*"))


@pytest.mark.redis
def test_redis_read_timeout_fails_fast_without_retries(tmp_path: Path, redis_server: RedisServer) -> None:
    """With `timeout_s` (the recommender's request budget) a dead Redis is one quick error, not
    redis-py's default three retries with backoff (about 3.5 s)."""
    import time

    cfg = FeatureStoreConfig(registry_path=str(tmp_path / "registry.db"), online_store="redis",
                             redis=RedisConfig(host="127.0.0.1", port=redis_server.port), timeout_s=0.3)
    client = FeatureStoreClient(cfg)
    client.apply()
    for _ in range(2):  # twice: the cached view's feature list is not mutated by the store
        assert client.read(["item_metadata:title"], [{"listing_id": "never"}]) == [{"listing_id": "never", "title": None}]
    down = FeatureStoreClient(cfg.model_copy(update={"redis": RedisConfig(host="127.0.0.1", port=1)}))
    down._view_cache = client._view_cache  # noqa: SLF001 - the registry is a file: only the online store is down
    start = time.monotonic()
    with pytest.raises(FeatureStoreError, match="online read failed"):
        down.read(["item_metadata:title"], [{"listing_id": "l-0"}])
    assert time.monotonic() - start < 0.5
