"""Milvus in server mode: milvus-lite's gRPC server and the embedded real Milvus 2.3.5,
both reached with the project's wrapper over TCP; stopped by PID."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.milvus_store import ListingVector, ListingVectorStore, SearchFilter
from services.common.settings import MilvusConfig
from services.localstack.milvus_server import MilvusLiteServer
from tests.helpers.procs import alive

DIM = 32


def exercise(uri: str, **index: object) -> None:
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(300, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = ListingVectorStore(MilvusConfig(uri=uri, dim=DIM, search_consistency="Strong", **index))
    try:
        coll = store.create_collection(store.collection_name("t1"), drop_existing=True)
        store.point_alias(coll)
        store.upsert([ListingVector(f"l-{i}", vecs[i].tolist(), f"s-{i % 7}", "a" if i % 3 else "b",
                                    float(i)) for i in range(300)])
        assert store.count() == 300
        hits = store.search([vecs[10].tolist()], k=10, flt=SearchFilter(category="a", exclude_ids=["l-10"]))[0]
        assert hits and all(h.fields["category"] == "a" and h.listing_id != "l-10" for h in hits)
        top = store.search([vecs[11].tolist()], k=1, flt=SearchFilter())[0][0]
        assert top.listing_id == "l-11" and top.score == pytest.approx(1.0, abs=1e-3)
        store.delete(["l-11"])
        assert store.count() == 299
        assert store.search([vecs[11].tolist()], k=1)[0][0].listing_id != "l-11"
    finally:
        store.close()


def test_milvus_lite_server_mode(tmp_path: Path) -> None:
    server = MilvusLiteServer(tmp_path).start()
    pid = server.pid
    try:
        exercise(server.uri)
    finally:
        server.stop()
    assert not alive(pid)


def test_milvus_lite_server_restart_keeps_collections_searchable(tmp_path: Path) -> None:
    first = MilvusLiteServer(tmp_path).start()
    try:
        exercise(first.uri)  # leaves 299 rows behind the alias
    finally:
        first.stop()
    server = MilvusLiteServer(tmp_path).start()  # the same data dir again, like a second `make up`
    store = ListingVectorStore(MilvusConfig(uri=server.uri, dim=DIM, search_consistency="Strong"))
    try:
        assert store.count() == 299
        assert [r["listing_id"] for r in store.get(["l-12"], with_vectors=False)] == ["l-12"]
        hits = store.search([[1.0] + [0.0] * (DIM - 1)], k=3)[0]
        assert len(hits) == 3
    finally:
        store.close()
        server.stop()


@pytest.mark.slow
@pytest.mark.milvus_server
def test_embedded_real_milvus_2_3_5(embedded_milvus) -> None:
    exercise(embedded_milvus.uri, index_type="HNSW", index_params={"M": 16, "efConstruction": 64},
             search_params={"ef": 64})
