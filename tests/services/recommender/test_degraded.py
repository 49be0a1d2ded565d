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
    with TestClient(build_app(stack["settings"], log_impressions=False), raise_server_exceptions=False) as client:
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
