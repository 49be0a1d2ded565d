"""The platform's one Milvus wrapper: listing vectors with scalar fields for filtering.

Works against milvus-lite (a file path: embedded; the default locally) and any Milvus server
(`http://host:19530`). Collections are versioned (`<alias>_v<version>`, one per model
version); readers search the alias, and a backfill switches the alias when the new
collection is complete (blue/green).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from .events import ID_PATTERN, VARCHAR_MAX_BYTES
from .milvus_search import DirectSearch, hybrid_rows
from .settings import MilvusConfig

log = logging.getLogger(__name__)
_ID = re.compile(ID_PATTERN)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
SCALAR_FIELDS = ["shop_id", "category", "price", "active", "updated_at", "model_version",
                 "title", "image_uri", "currency"]


class VectorStoreError(RuntimeError):
    """A Milvus call failed or was given bad input; the message says which."""


@dataclass(frozen=True)
class ListingVector:
    listing_id: str
    embedding: Sequence[float]
    shop_id: str
    category: str
    price: float
    active: bool = True
    updated_at: int = 0  # epoch milliseconds of the listing version
    model_version: str = ""
    title: str = ""  # render fields: a search result carries what a client needs to show the ad
    image_uri: str = ""
    currency: str = "USD"

    def validate(self, dim: int) -> None:
        if not _ID.match(self.listing_id):
            raise VectorStoreError(f"invalid listing_id {self.listing_id!r}")
        if len(self.embedding) != dim:
            raise VectorStoreError(f"listing {self.listing_id}: embedding has {len(self.embedding)} dims, "
                                   f"collection has {dim}")
        if not all(math.isfinite(x) for x in self.embedding):
            raise VectorStoreError(f"listing {self.listing_id}: embedding has NaN/inf values")
        if not math.isfinite(self.price) or self.price < 0:
            raise VectorStoreError(f"listing {self.listing_id}: invalid price {self.price}")

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["embedding"] = [float(x) for x in self.embedding]
        d["price"] = float(self.price)
        d["title"] = self.title[:500]
        return d


def quote(value: str) -> str:
    """A Milvus string literal (boolean-expression syntax)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class SearchFilter:
    active_only: bool = True
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    exclude_ids: Sequence[str] = ()
    exclude_shop_ids: Sequence[str] = ()

    def expression(self) -> str:
        parts: list[str] = []
        if self.active_only:
            parts.append("active == true")
        if self.category is not None:
            parts.append(f"category == {quote(self.category)}")
        if self.min_price is not None:
            parts.append(f"price >= {float(self.min_price)!r}")
        if self.max_price is not None:
            parts.append(f"price <= {float(self.max_price)!r}")
        if self.exclude_ids:
            parts.append(f"listing_id not in [{', '.join(quote(i) for i in self.exclude_ids)}]")
        if self.exclude_shop_ids:
            parts.append(f"shop_id not in [{', '.join(quote(s) for s in self.exclude_shop_ids)}]")
        return " and ".join(parts)


@dataclass(frozen=True)
class Hit:
    listing_id: str
    score: float
    fields: dict[str, Any] = field(default_factory=dict)


class ListingVectorStore:
    def __init__(self, cfg: MilvusConfig, client: MilvusClient | None = None) -> None:
        self.cfg = cfg
        token = cfg.token.get_secret_value() if cfg.token else ""
        try:
            self._client = client or MilvusClient(uri=cfg.uri, token=token, db_name=cfg.db_name,
                                                  timeout=cfg.timeout_s)
        except MilvusException as exc:
            raise VectorStoreError(f"cannot connect to Milvus at {cfg.uri}: {exc}") from exc
        self._direct: DirectSearch | None = None
        if cfg.direct_search:
            try:
                db = getattr(getattr(self._client, "_config", None), "db_name", cfg.db_name)
                self._direct = DirectSearch(self._client, db, make=Hit)
            except (TypeError, AttributeError) as exc:  # another pymilvus: its public search still works
                log.warning("direct search unavailable, using MilvusClient.search: %s", exc)

    # -- collections and the serving alias ------------------------------------------------

    def collection_name(self, version: str | int) -> str:
        name = f"{self.cfg.alias}_v{re.sub(r'[^A-Za-z0-9_]', '_', str(version))}"
        if not _NAME.match(name):
            raise VectorStoreError(f"invalid collection name {name!r}")
        return name

    def create_collection(self, name: str, dim: int | None = None, *, drop_existing: bool = False) -> str:
        if not _NAME.match(name):
            raise VectorStoreError(f"invalid collection name {name!r}")
        c = self._client
        if c.has_collection(name):
            if not drop_existing:
                return name
            c.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        size = VARCHAR_MAX_BYTES  # UTF-8 bytes, the limits the listing events are validated against
        schema.add_field("listing_id", DataType.VARCHAR, is_primary=True, max_length=size["listing_id"])
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim or self.cfg.dim)
        schema.add_field("shop_id", DataType.VARCHAR, max_length=size["shop_id"])
        schema.add_field("category", DataType.VARCHAR, max_length=size["category"])
        schema.add_field("price", DataType.FLOAT)
        schema.add_field("active", DataType.BOOL)
        schema.add_field("updated_at", DataType.INT64)
        schema.add_field("model_version", DataType.VARCHAR, max_length=64)
        schema.add_field("title", DataType.VARCHAR, max_length=size["title"])  # bytes: 500 chars of UTF-8
        schema.add_field("image_uri", DataType.VARCHAR, max_length=size["image_uri"])
        schema.add_field("currency", DataType.VARCHAR, max_length=size["currency"])
        index = MilvusClient.prepare_index_params()
        index.add_index("embedding", index_type=self.cfg.index_type, metric_type=self.cfg.metric,
                        params=dict(self.cfg.index_params))
        c.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        return name

    def load(self, collection: str | None = None) -> None:
        """Load a collection into memory for search (a restarted server leaves them released)."""
        self._client.load_collection(collection or self.cfg.alias)

    def drop_collection(self, name: str) -> None:
        self._client.drop_collection(name)

    def list_collections(self) -> list[str]:
        return list(self._client.list_collections())

    def point_alias(self, collection: str, alias: str | None = None) -> None:
        """Make `alias` (default: the configured one) serve `collection` (blue/green switch)."""
        alias = alias or self.cfg.alias
        if self._listed_alias_target(alias) is not None:
            self._client.alter_alias(collection, alias)
            return
        try:
            self._client.create_alias(collection, alias)
        except MilvusException:  # Milvus 2.3 cannot list aliases: it exists already
            self._client.alter_alias(collection, alias)

    def _listed_alias_target(self, alias: str) -> str | None:
        for name in self._client.list_collections():
            if alias in self._client.list_aliases(name).get("aliases", []):
                return name
        return None

    def alias_target(self, alias: str | None = None) -> str | None:
        """The collection the alias points at (None if the alias does not exist)."""
        alias = alias or self.cfg.alias
        found = self._listed_alias_target(alias)
        if found is not None:
            return found
        try:  # Milvus 2.3 lists no aliases but can describe one
            return self._client.describe_alias(alias).get("collection_name")
        except MilvusException:
            return None

    def dim(self, collection: str | None = None) -> int:
        desc = self._client.describe_collection(collection or self.cfg.alias)
        for f in desc["fields"]:
            if f["name"] == "embedding":
                return int(f["params"]["dim"])
        raise VectorStoreError("collection has no embedding field")

    # -- rows ------------------------------------------------------------------------------

    def upsert(self, rows: Iterable[ListingVector], collection: str | None = None) -> int:
        rows = list(rows)
        if not rows:
            return 0
        target = collection or self.cfg.alias
        dim = self.dim(target)
        for r in rows:
            r.validate(dim)
        try:
            res = self._client.upsert(target, [r.row() for r in rows], timeout=self.cfg.timeout_s)
        except MilvusException as exc:
            raise VectorStoreError(f"upsert into {target} failed: {exc}") from exc
        return int(res["upsert_count"])

    def delete(self, listing_ids: Sequence[str], collection: str | None = None) -> None:
        if listing_ids:
            self._client.delete(collection or self.cfg.alias, ids=list(listing_ids), timeout=self.cfg.timeout_s)

    def get(self, listing_ids: Sequence[str], collection: str | None = None,
            with_vectors: bool = True) -> list[dict[str, Any]]:
        if not listing_ids:
            return []
        fields = SCALAR_FIELDS + (["embedding"] if with_vectors else [])
        rows = self._client.get(collection or self.cfg.alias, ids=list(listing_ids),
                                output_fields=["listing_id", *fields], timeout=self.cfg.timeout_s)
        return [dict(r) for r in rows]

    def query(self, expr: str, limit: int, output_fields: Sequence[str] = ("listing_id", *SCALAR_FIELDS),
              collection: str | None = None) -> list[dict[str, Any]]:
        """Rows matching a scalar filter (no vector search)."""
        rows = self._client.query(collection or self.cfg.alias, filter=expr, limit=limit,
                                  output_fields=list(output_fields), timeout=self.cfg.timeout_s)
        return [dict(r) for r in rows]

    def count(self, collection: str | None = None, expr: str = "") -> int:
        res = self._client.query(collection or self.cfg.alias, filter=expr, output_fields=["count(*)"],
                                 timeout=self.cfg.timeout_s)
        return int(res[0]["count(*)"])

    def search(self, vectors: Sequence[Sequence[float]], k: int, flt: SearchFilter | None = None,
               collection: str | None = None, output_fields: Sequence[str] = SCALAR_FIELDS) -> list[list[Hit]]:
        if not 1 <= k <= 16_384:
            raise VectorStoreError(f"k must be in [1, 16384], got {k}")
        expr = (flt or SearchFilter()).expression()
        data = [list(map(float, v)) for v in vectors]
        params = {"metric_type": self.cfg.metric, "params": dict(self.cfg.search_params)}
        try:
            if self._direct is not None:
                return self._direct.search(collection or self.cfg.alias, data, k, expr, output_fields, params,
                                           self.cfg.search_consistency, self.cfg.timeout_s)
            res = self._client.search(
                collection or self.cfg.alias, data=data, limit=k, filter=expr, output_fields=list(output_fields),
                timeout=self.cfg.timeout_s, search_params=params, consistency_level=self.cfg.search_consistency)
        except MilvusException as exc:
            raise VectorStoreError(f"search failed: {exc}") from exc
        except grpc.RpcError as exc:
            raise VectorStoreError(f"search failed: {exc.code().name}: {exc.details()}") from exc
        return [hybrid_rows(hits, Hit) for hits in res]

    def close(self) -> None:
        self._client.close()

