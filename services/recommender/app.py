"""Wiring: settings -> clients -> domain -> FastAPI app (used by __main__ and tests)."""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI

from services.common.embedder_client import EmbedderClient
from services.common.feature_store import FeatureStoreClient
from services.common.image_fetch import ImageFetcher
from services.common.kafka_client import EventProducer
from services.common.metrics import Metrics
from services.common.milvus_store import ListingVectorStore
from services.experiments.assignment import Assigner
from services.experiments.config import load_experiments

from .api import Dependencies, create_app
from .clicks import ClickService, InMemoryServedRequests, RedisServedRequests
from .impressions import ImpressionLogger
from .retrieval import SimilarListings
from .settings import RecommenderSettings

log = logging.getLogger(__name__)


def build_app(s: RecommenderSettings, *, log_impressions: bool = True) -> FastAPI:
    cfg = s.recommend
    metrics = Metrics("recommender")
    features = FeatureStoreClient(s.feast.model_copy(update={"timeout_s": cfg.feast_timeout_s}))
    vectors = ListingVectorStore(s.milvus.model_copy(update={"timeout_s": cfg.milvus_timeout_s}))
    similar = SimilarListings(features, vectors, cfg)
    embedder = EmbedderClient(s.embedder_client.model_copy(update={"timeout_s": cfg.embedder_timeout_s}))
    def impression_producer() -> EventProducer:  # never waits: a full queue drops (and counts) impressions
        return EventProducer(s.kafka, client_id="adrec-recommender", linger_ms=50, max_block_s=0)

    impressions = ImpressionLogger(impression_producer, metrics, maxsize=cfg.impression_queue) if log_impressions else None
    fetcher = ImageFetcher(allowed_roots=cfg.image_roots, allow_private=cfg.allow_private_image_hosts)

    def ready() -> tuple[bool, dict]:
        detail: dict = {}
        try:
            detail["collection"] = vectors.alias_target()
            detail["listings"] = vectors.count()
        except Exception as exc:  # noqa: BLE001
            return False, {"vector_index": str(exc)[:200]}
        try:
            features.read(["item_metadata:active"], [{"listing_id": "readiness-probe"}])
        except Exception as exc:  # noqa: BLE001
            return False, {"feature_store": str(exc)[:200]}
        return True, detail

    served = RedisServedRequests(redis.Redis(host=s.redis.host, port=s.redis.port, db=s.redis.db,
                                             password=s.redis.password.get_secret_value() if s.redis.password else None,
                                             decode_responses=True, socket_timeout=0.5), ttl_s=86_400) \
        if s.served_requests == "redis" else InMemoryServedRequests()
    clicks = ClickService(lambda: EventProducer(s.kafka, client_id="adrec-recommender-clicks"), served, metrics)
    deps = Dependencies(clicks=clicks, similar=similar, assigner=Assigner(load_experiments(cfg.experiments_file)),
                        impressions=impressions, embedder=embedder, fetcher=fetcher, metrics=metrics, cfg=cfg,
                        ready=ready)
    stop = threading.Event()

    def refresh_loop() -> None:
        while not stop.is_set():
            similar.popular.maybe_refresh()
            stop.wait(min(30.0, cfg.popular_refresh_s))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await asyncio.to_thread(similar.warm_up)
        threading.Thread(target=refresh_loop, name="popular-refresh", daemon=True).start()
        yield
        stop.set()
        if impressions is not None:
            impressions.close()
        clicks.close()

    return create_app(deps, lifespan=lifespan)
