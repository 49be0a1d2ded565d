"""The Milvus wrapper on embedded milvus-lite: create, upsert, filter, delete, search, alias."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.milvus_store import (
    ListingVector,
    ListingVectorStore,
    SearchFilter,
    VectorStoreError,
    quote,
)
from services.common.settings import MilvusConfig

DIM = 16


def unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).tolist()


@pytest.fixture
def store(milvus_uri: str) -> ListingVectorStore:
    s = ListingVectorStore(MilvusConfig(uri=milvus_uri, dim=DIM, alias="listings"))
    yield s
    s.close()


def make_rows(n: int, seed: int = 0) -> tuple[list[ListingVector], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    rows = [ListingVector(listing_id=f"l-{i}", embedding=unit(vecs[i]), shop_id=f"s-{i % 5}",
                          category="shoes" if i % 2 else "bags", price=float(i), active=i % 10 != 0,
                          updated_at=1_000 + i, model_version="m1") for i in range(n)]
    return rows, vecs


def test_create_upsert_filter_delete_search(store: ListingVectorStore) -> None:
    coll = store.create_collection(store.collection_name("m1"))
    store.point_alias(coll)
    assert store.alias_target() == "listings_vm1"
    rows, vecs = make_rows(200)
    assert store.upsert(rows) == 200
    assert store.count() == 200

    # exact nearest neighbour of a stored vector is itself
    hits = store.search([unit(vecs[3])], k=5, flt=SearchFilter(active_only=False))[0]
    assert hits[0].listing_id == "l-3" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert len(hits) == 5 and hits[0].fields["shop_id"] == "s-3"

    # scalar filters are honoured on every hit
    flt = SearchFilter(category="shoes", min_price=20, max_price=150, exclude_ids=["l-21", "l-23"],
                       exclude_shop_ids=["s-0"])
    hits = store.search([unit(vecs[21])], k=50, flt=flt)[0]
    assert hits, "filter removed everything"
    for h in hits:
        i = int(h.listing_id[2:])
        assert h.fields["category"] == "shoes" and 20 <= h.fields["price"] <= 150
        assert h.fields["active"] and h.fields["shop_id"] != "s-0"
        assert h.listing_id not in {"l-21", "l-23"}
        assert i % 2 == 1 and i % 10 != 0

    # upsert replaces (no duplicate), delete removes from search
    newer = ListingVector(**{**rows[3].__dict__, "price": 999.0, "updated_at": 5_000})
    store.upsert([newer])
    assert store.count() == 200
    assert store.get(["l-3"], with_vectors=False)[0]["price"] == 999.0
    store.delete(["l-3", "l-5"])
    assert store.count() == 198
    top = store.search([unit(vecs[3])], k=3, flt=SearchFilter(active_only=False))[0]
    assert "l-3" not in {h.listing_id for h in top}


def test_blue_green_alias_switch(store: ListingVectorStore) -> None:
    rows, _ = make_rows(20)
    blue = store.create_collection(store.collection_name("1"))
    green = store.create_collection(store.collection_name("2"))
    store.upsert(rows[:10], collection=blue)
    store.upsert(rows, collection=green)
    store.point_alias(blue)
    assert store.count() == 10
    store.point_alias(green)
    assert store.alias_target() == green and store.count() == 20


def test_bad_input_is_refused_with_a_reason(store: ListingVectorStore) -> None:
    store.point_alias(store.create_collection("listings_vx"))
    good, _ = make_rows(1)
    with pytest.raises(VectorStoreError, match="dims"):
        store.upsert([ListingVector(**{**good[0].__dict__, "embedding": [0.1] * (DIM - 1)})])
    with pytest.raises(VectorStoreError, match="NaN"):
        store.upsert([ListingVector(**{**good[0].__dict__, "embedding": [float("nan")] * DIM})])
    with pytest.raises(VectorStoreError, match="listing_id"):
        store.upsert([ListingVector(**{**good[0].__dict__, "listing_id": 'x" or true'})])
    with pytest.raises(VectorStoreError, match="k must be"):
        store.search([[0.0] * DIM], k=0)
    with pytest.raises(VectorStoreError, match="collection name"):
        store.create_collection("bad-name; drop")
    # a hostile filter value is a literal, not an expression
    store.upsert(good)
    hostile = SearchFilter(active_only=False, category='x" or category != "')
    assert store.search([good[0].embedding], k=5, flt=hostile) == [[]]
    assert store.search([good[0].embedding], k=5, flt=SearchFilter(active_only=False))[0]


def test_filter_strings_are_quoted() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    expr = SearchFilter(category='x" or active == false or "', exclude_shop_ids=["s1"]).expression()
    assert expr == ('active == true and category == "x\\" or active == false or \\"" '
                    'and shop_id not in ["s1"]')
