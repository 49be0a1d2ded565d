"""The api benchmark's floor endpoint answers the same search the raw path issues (milvus-lite)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.common.milvus_store import ListingVectorStore
from services.common.settings import MilvusConfig
from tests.services.common.test_milvus_store import DIM, make_rows, unit


@pytest.fixture
def floor(milvus_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = ListingVectorStore(MilvusConfig(uri=milvus_uri, dim=DIM, alias="listings"))
    coll = store.create_collection(store.collection_name("floor"))
    store.point_alias(coll)
    rows, vecs = make_rows(60)
    store.upsert(rows)
    store.close()
    seeds = {"l-3": [unit(vecs[3]), "s-3"]}
    (tmp_path / "seeds.json").write_text(json.dumps(seeds))
    for k, v in {"FLOOR_SEEDS": str(tmp_path / "seeds.json"), "FLOOR_URI": milvus_uri, "FLOOR_COLLECTION": coll,
                 "FLOOR_LIMIT": "20", "FLOOR_K": "5"}.items():
        monkeypatch.setenv(k, v)
    import benchmarks.api.floor_app as mod

    mod = importlib.reload(mod)  # it reads its settings at import
    with TestClient(mod.app) as client:
        yield client, vecs
    mod.CLIENT.close()


def test_floor_returns_the_filtered_nearest_listings(floor) -> None:
    client, vecs = floor
    r = client.get("/v1/listings/l-3/similar?k=12")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 5  # FLOOR_K, whatever the query asks
    ids = [it["listing_id"] for it in items]
    assert "l-3" not in ids and all(it["shop_id"] != "s-3" for it in items)  # the seed and its shop are excluded
    assert all(int(i[2:]) % 10 != 0 for i in ids)  # inactive listings (every 10th) are filtered out
    scores = [it["score"] for it in items]
    assert scores == sorted(scores, reverse=True)
    expected = float(np.dot(unit(vecs[3]), unit(vecs[int(ids[0][2:])])))
    assert scores[0] == pytest.approx(expected, abs=1e-4)  # a real cosine search, not a canned answer
    assert set(items[0]) >= {"title", "price", "image_uri", "currency", "category"}


def test_floor_unknown_seed_is_404(floor) -> None:
    client, _ = floor
    assert client.get("/v1/listings/nope/similar").status_code == 404
