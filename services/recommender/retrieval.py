"""Similar listings, framework-free: seed vector (Feast) -> ANN with filters (Milvus) -> re-rank.

A variant that names its own collection (another model version) takes the seed's vector from
that collection, the only place holding it in that model's space; a seed the collection lacks
gets the flagged fallback. Image queries search the serving alias: the deployed embedder serves
its model.

Every remote dependency call has a timeout, enforced by that dependency's own client (the Milvus
client's deadline, Redis socket timeouts from `FeatureStoreConfig.timeout_s`; the SQLite online
store is a local file), so a request runs on one thread with no hand-offs. When Milvus fails, the
category-popular fallback answers (flagged); when there is nothing to fall back on,
`DependencyDown` (the API's 503).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.common.milvus_store import Hit, ListingVectorStore, SearchFilter

from .rerank import diversify
from .settings import RecommendConfig

log = logging.getLogger(__name__)
SEED_FEATURES = ["item_embedding:embedding", "item_embedding:model_version", "item_metadata:shop_id",
                 "item_metadata:category", "item_metadata:active", "item_metadata:title"]
# what a client needs to render an ad and the re-ranker needs: fewer output fields, cheaper searches
RENDER_FIELDS = ["shop_id", "category", "price", "title", "image_uri", "currency"]


class NotFound(LookupError):
    pass


class DependencyDown(RuntimeError):
    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason


@dataclass(frozen=True)
class Query:
    k: int
    page: int = 1
    category: str | None = None  # "same" = the seed's category
    min_price: float | None = None
    max_price: float | None = None
    exclude_seed_shop: bool = True
    max_per_shop: int = 2
    overfetch: int = 4
    collection: str | None = None  # variant override (model version)


@dataclass
class Result:
    items: list[Hit]
    seed: dict[str, Any] | None = None
    fallback: str | None = None
    model_version: str | None = None


class SimilarListings:
    def __init__(self, features, vectors: ListingVectorStore, cfg: RecommendConfig) -> None:
        self.features = features
        self.vectors = vectors
        self.cfg = cfg
        self.popular = PopularByCategory(vectors, cfg.popular_per_category, cfg.popular_refresh_s)

    def seed(self, listing_id: str) -> dict[str, Any]:
        try:  # inline: the online store's client enforces the timeout
            rows = self.features.read(SEED_FEATURES, [{"listing_id": listing_id}])
        except Exception as exc:  # noqa: BLE001 - any client error means the dependency failed
            raise DependencyDown("feature store", str(exc)[:300]) from exc
        row = rows[0]
        if row.get("embedding") is None or row.get("active") is False:
            raise NotFound(f"listing {listing_id} not found")
        return row

    def for_listing(self, listing_id: str, q: Query) -> Result:
        seed = self.seed(listing_id)
        category = seed.get("category") if q.category == "same" else q.category
        flt = SearchFilter(active_only=True, category=category, min_price=q.min_price, max_price=q.max_price,
                           exclude_ids=[listing_id],
                           exclude_shop_ids=[seed["shop_id"]] if q.exclude_seed_shop and seed.get("shop_id") else [])
        vector, version = seed["embedding"], seed.get("model_version")
        try:
            if q.collection:  # a variant's model: Feast holds the serving model's vector, not one of that space
                row = self._variant_seed(q.collection, listing_id)
                vector, version = row["embedding"], row.get("model_version")
        except Exception as err:  # noqa: BLE001 - not in that collection, or the index is down
            result = self._fallback(err, flt, q, fallback_category=seed.get("category"))
        else:
            result = self._search(vector, flt, q, fallback_category=seed.get("category"), collection=q.collection)
        result.seed = {"listing_id": listing_id, "title": seed.get("title"), "category": seed.get("category"),
                       "shop_id": seed.get("shop_id")}
        result.model_version = version if result.fallback is None else seed.get("model_version")
        return result

    def for_vector(self, vector: Sequence[float], q: Query, model_version: str | None = None) -> Result:
        """An image embedded by the deployed embedder, which serves the model behind the serving alias:
        its vector belongs to that collection, so a variant's `collection` (another model's space) is
        not searched with it."""
        flt = SearchFilter(active_only=True, category=None if q.category == "same" else q.category,
                           min_price=q.min_price, max_price=q.max_price)
        result = self._search(vector, flt, q, fallback_category=flt.category, collection=None)
        result.model_version = model_version
        return result

    def _variant_seed(self, collection: str, listing_id: str) -> dict[str, Any]:
        rows = self.vectors.get([listing_id], collection=collection, with_vectors=True)
        if not rows or rows[0].get("embedding") is None:
            raise LookupError(f"listing {listing_id} is not indexed in {collection}")
        return rows[0]

    def _search(self, vector: Sequence[float], flt: SearchFilter, q: Query, fallback_category: str | None,
                collection: str | None) -> Result:
        try:  # inline: the Milvus client enforces its own timeout (cfg.milvus_timeout_s)
            hits = self.vectors.search([vector], min(16_384, q.k * q.page * q.overfetch), flt, collection=collection,
                                       output_fields=RENDER_FIELDS)[0]
        except Exception as err:  # noqa: BLE001 - any client error: the index is down for us
            return self._fallback(err, flt, q, fallback_category)
        return self._page(hits, q)

    def _fallback(self, err: Exception, flt: SearchFilter, q: Query, fallback_category: str | None) -> Result:
        """Category-popular items (flagged) when the search cannot run; DependencyDown if there are none."""
        down = DependencyDown("vector index", str(err)[:300])
        items = self.popular.get(flt.category or fallback_category, flt)
        if items is None:
            raise down from err
        log.warning("vector search failed (%s); serving category-popular fallback", down.reason)
        result = self._page(items, q)  # the same business rules as a search (a variant's max_per_shop)
        result.fallback = "category_popular"
        return result

    @staticmethod
    def _page(hits: Sequence[Hit], q: Query) -> Result:
        start = (q.page - 1) * q.k
        return Result(items=diversify(hits, q.max_per_shop, q.k * q.page)[start:start + q.k])

    def warm_up(self) -> None:
        """First calls load Feast's registry and open connections: do it before serving."""
        try:
            self.features.read(SEED_FEATURES, [{"listing_id": "warm-up"}])
            self.popular.refresh()
        except Exception as exc:  # noqa: BLE001 - readiness reports it; requests get 503s
            log.warning("warm-up failed: %s", exc)


class PopularByCategory:
    """Fallback lists: per category, active listings read from Milvus while it is healthy
    (refreshed in the background), served when a search fails. Ordered by price as a neutral
    proxy until the A/B aggregator's item CTR is wired in."""

    def __init__(self, vectors: ListingVectorStore, per_category: int, refresh_s: float) -> None:
        self.vectors = vectors
        self.per_category = per_category
        self.refresh_s = refresh_s
        self._lists: dict[str, list[Hit]] = {}
        self._all: list[Hit] = []
        self._lock = threading.Lock()
        self._loaded_at = 0.0

    def refresh(self) -> None:
        rows = self.vectors.query("active == true", limit=5000, output_fields=["listing_id", *RENDER_FIELDS])
        by_cat: dict[str, list[Hit]] = {}
        for r in rows:
            hit = Hit(str(r["listing_id"]), 0.0, {k: v for k, v in r.items() if k != "listing_id"})
            by_cat.setdefault(r.get("category", ""), []).append(hit)
        with self._lock:
            self._lists = {c: sorted(v, key=lambda h: h.fields.get("price", 0))[:self.per_category]
                           for c, v in by_cat.items()}
            self._all = [h for v in self._lists.values() for h in v[:3]]
            self._loaded_at = time.monotonic()

    def maybe_refresh(self) -> None:
        if time.monotonic() - self._loaded_at > self.refresh_s:
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the old lists
                log.warning("fallback refresh failed: %s", exc)

    def get(self, category: str | None, flt: SearchFilter) -> list[Hit] | None:
        with self._lock:
            items = list(self._lists.get(category, [])) if category else list(self._all)
        excluded = set(flt.exclude_ids)
        shops = set(flt.exclude_shop_ids)
        items = [h for h in items if h.listing_id not in excluded and h.fields.get("shop_id") not in shops
                 and (flt.category is None or h.fields.get("category") == flt.category)
                 and (flt.min_price is None or h.fields.get("price", 0) >= flt.min_price)
                 and (flt.max_price is None or h.fields.get("price", 0) <= flt.max_price)]
        return items or None
