"""Dependencies down: a flagged fallback or a 503 with a clear body, never a 500 stack trace."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.common.feature_store import FeatureStoreConfig
from services.common.settings import RedisConfig
from services.localstack.redis_server import RedisServer
from services.recommender.app import build_app

pytestmark = pytest.mark.kafka


def test_vector_index_down_serves_flagged_category_fallback_or_503(stack, catalogue) -> None:
    one_per_shop = stack["settings"].recommend.model_copy(update={"max_per_shop": 1})
    settings = stack["settings"].model_copy(update={"recommend": one_per_shop})
    with TestClient(build_app(settings, log_impressions=False), raise_server_exceptions=False) as client:
        seed = next(c for c in catalogue if c["category"] == "Watches")
        assert client.get(f"/v1/listings/{seed['listing_id']}/similar").json()["fallback"] is None
        stack["milvus"].stop()
        try:
            r = client.get(f"/v1/listings/{seed['listing_id']}/similar", params={"k": 5})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["fallback"] == "category_popular"
            assert body["items"] and all(i["category"] == "Watches" for i in body["items"])
            assert seed["listing_id"] not in {i["listing_id"] for i in body["items"]}
            # the fallback keeps the business rules: at most max_per_shop (here 1) a shop, like a search
            popular = sorted((c for c in catalogue if c["category"] == "Watches" and c is not seed),
                             key=lambda c: c["price"])[:12]
            assert len({c["shop_id"] for c in popular}) < 12  # undiversified, some shop would repeat
            one = client.get(f"/v1/listings/{seed['listing_id']}/similar",
                             params={"k": 12, "user_id": "u-one-per-shop"}).json()
            assert one["fallback"] == "category_popular" and len(one["items"]) == 12
            shops = [i["shop_id"] for i in one["items"]]
            assert len(set(shops)) == len(shops), shops
            # a category the fallback has never seen: nothing to serve -> 503, not 500
            r = client.get(f"/v1/listings/{seed['listing_id']}/similar", params={"category": "NoSuchThing"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "dependency_unavailable"
            assert "Traceback" not in r.text
            assert client.get("/readyz").status_code == 503
        finally:
            stack["milvus"].start()


def test_feature_store_down_is_503(stack, catalogue, tmp_path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    feast = FeatureStoreConfig(registry_path=str(tmp_path / "registry.db"), online_store="redis",
                               redis=RedisConfig(host=redis.host, port=redis.port))
    settings = stack["settings"].model_copy(update={"feast": feast})
    from services.common.feature_store import FeatureStoreClient

    FeatureStoreClient(feast).apply()
    with TestClient(build_app(settings, log_impressions=False), raise_server_exceptions=False) as client:
        assert client.get(f"/v1/listings/{catalogue[0]['listing_id']}/similar").status_code == 404  # empty store
        redis.stop()
        r = client.get(f"/v1/listings/{catalogue[0]['listing_id']}/similar")
        assert r.status_code == 503, r.text
        assert "feature store unavailable" in r.json()["error"]["message"] and "Traceback" not in r.text
