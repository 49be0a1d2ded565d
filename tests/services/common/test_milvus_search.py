"""The store's direct search RPC: the same hits as MilvusClient.search, the fallback parser for
non-scalar columns, and failures as VectorStoreError."""

from __future__ import annotations

import numpy as np
import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

from services.common.milvus_search import DirectSearch, split_results
from services.common.milvus_store import SCALAR_FIELDS, ListingVector, ListingVectorStore, SearchFilter, VectorStoreError
from services.common.settings import MilvusConfig

DIM = 16


def rows(n: int) -> tuple[list[ListingVector], np.ndarray]:
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [ListingVector(listing_id=f"l-{i}", embedding=vecs[i].tolist(), shop_id=f"s-{i % 7}",
                          category="shoes" if i % 2 else "bags", price=i + 0.25, active=i % 9 != 0,
                          updated_at=10_000 + i, model_version="m1", title=f"listing {i} é", image_uri=f"/i/{i}.jpg",
                          currency="EUR" if i % 3 else "USD") for i in range(n)], vecs


@pytest.fixture
def stores(milvus_uri: str):
    direct = ListingVectorStore(MilvusConfig(uri=milvus_uri, dim=DIM))
    plain = ListingVectorStore(MilvusConfig(uri=milvus_uri, dim=DIM, direct_search=False), client=direct._client)  # noqa: SLF001
    coll = direct.create_collection(direct.collection_name("m1"))
    direct.point_alias(coll)
    data, vecs = rows(300)
    direct.upsert(data)
    yield direct, plain, vecs
    direct.close()


def test_direct_search_returns_what_milvusclient_returns(stores) -> None:
    direct, plain, vecs = stores
    assert direct._direct is not None and plain._direct is None  # noqa: SLF001
    filters = [SearchFilter(active_only=False), SearchFilter(category="shoes", min_price=10, max_price=200,
                                                             exclude_ids=["l-11"], exclude_shop_ids=["s-3"])]
    for flt in filters:
        for fields in (SCALAR_FIELDS, ["shop_id", "price"], []):
            a = direct.search([vecs[11], vecs[40], vecs[99]], k=20, flt=flt, output_fields=fields)
            b = plain.search([vecs[11], vecs[40], vecs[99]], k=20, flt=flt, output_fields=fields)
            assert len(a) == len(b) == 3
            for qa, qb in zip(a, b):
                assert qa, "a filter removed everything"
                assert [h.listing_id for h in qa] == [h.listing_id for h in qb]
                assert [h.score for h in qa] == pytest.approx([h.score for h in qb], abs=1e-6)
                assert [h.fields for h in qa] == [h.fields for h in qb]
    top = direct.search([vecs[40]], k=3, flt=SearchFilter(active_only=False))[0][0]
    assert top.listing_id == "l-40" and top.score == pytest.approx(1.0, abs=1e-4)
    assert top.fields == {"shop_id": "s-5", "category": "bags", "price": 40.25, "active": True, "updated_at": 10_040,
                          "model_version": "m1", "title": "listing 40 é", "image_uri": "/i/40.jpg", "currency": "EUR"}


def test_direct_search_failures_are_vector_store_errors(stores, milvus_uri: str) -> None:
    direct, _, vecs = stores
    with pytest.raises(VectorStoreError, match="search failed"):
        direct.search([vecs[0]], k=5, collection="no_such_collection")
    hurried = ListingVectorStore(MilvusConfig(uri=milvus_uri, dim=DIM, timeout_s=1e-6), client=direct._client)  # noqa: SLF001
    with pytest.raises(VectorStoreError, match="DEADLINE_EXCEEDED"):
        hurried.search([vecs[0]], k=5)


def test_split_results_reads_columns_per_query() -> None:
    res = schema_pb2.SearchResultData(num_queries=2, top_k=2, topks=[2, 1], scores=[0.9, 0.8, 0.7],
                                      ids=schema_pb2.IDs(int_id=schema_pb2.LongArray(data=[5, 6, 7])))
    fd = res.fields_data.add(type=schema_pb2.DataType.VarChar, field_name="shop_id")
    fd.scalars.string_data.data.extend(["a", "b", "c"])
    fd = res.fields_data.add(type=schema_pb2.DataType.Bool, field_name="active")
    fd.scalars.bool_data.data.extend([True, False, True])
    out = split_results(milvus_pb2.SearchResults(status=common_pb2.Status(), results=res))
    assert out == [[("5", pytest.approx(0.9), {"shop_id": "a", "active": True}),
                    ("6", pytest.approx(0.8), {"shop_id": "b", "active": False})],
                   [("7", pytest.approx(0.7), {"shop_id": "c", "active": True})]]


def test_split_results_hands_non_scalar_columns_to_pymilvus() -> None:
    """A nullable column with a null: pymilvus' parser (not the column reader) decides the values."""
    res = schema_pb2.SearchResultData(num_queries=1, top_k=2, topks=[2], scores=[0.9, 0.8],
                                      ids=schema_pb2.IDs(str_id=schema_pb2.StringArray(data=["x", "y"])),
                                      output_fields=["title"])
    fd = res.fields_data.add(type=schema_pb2.DataType.VarChar, field_name="title")
    fd.scalars.string_data.data.extend(["t", ""])
    fd.valid_data.extend([True, False])
    out = split_results(milvus_pb2.SearchResults(status=common_pb2.Status(), results=res))
    assert [(pk, fields) for pk, _, fields in out[0]] == [("x", {"title": "t"}), ("y", {"title": None})]


def test_direct_search_needs_a_stub() -> None:
    class NoStub:
        def _get_connection(self):
            return object()

    with pytest.raises(TypeError, match="stub"):
        DirectSearch(NoStub())
