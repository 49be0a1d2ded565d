"""Wiring: settings -> clients -> processor -> worker (used by __main__ and tests)."""

from __future__ import annotations

import logging

from services.common.embedder_client import EmbedderClient
from services.common.events import Topics
from services.common.feature_store import FeatureStoreClient
from services.common.kafka_client import EventConsumer, EventProducer, ensure_topics, wait_for_broker
from services.common.metrics import Metrics
from services.common.milvus_store import ListingVectorStore

from .embedding import Embedder, PrecomputedEmbedder, RemoteEmbedder
from services.common.image_fetch import ImageFetcher
from .processor import ListingProcessor
from .settings import IngestSettings
from .worker import IngestWorker

log = logging.getLogger(__name__)


def build_embedder(s: IngestSettings) -> Embedder:
    if s.ingest.precomputed_vectors:
        return PrecomputedEmbedder(s.ingest.precomputed_vectors, s.ingest.model_version or "precomputed")
    return RemoteEmbedder(EmbedderClient(s.embedder_client), s.ingest.model_version or s.embedder_client.model_name)


def ensure_collection(store: ListingVectorStore, version: str) -> str:
    """The alias's collection; created (and aliased) on first start."""
    target = store.alias_target()
    if target is None:
        target = store.create_collection(store.collection_name(version or "1"))
        store.point_alias(target)
        log.info("created collection %s behind alias %s", target, store.cfg.alias)
    return target


def build_worker(s: IngestSettings, metrics: Metrics | None = None, observe=None) -> IngestWorker:
    wait_for_broker(s.kafka)
    ensure_topics(s.kafka, [s.ingest.topic, Topics.dlq(s.ingest.topic)])
    embedder = build_embedder(s)
    store = ListingVectorStore(s.milvus)
    ensure_collection(store, embedder.model_version)
    features = FeatureStoreClient(s.feast)
    features.apply()
    fetcher = ImageFetcher(allowed_roots=s.ingest.image_roots, max_bytes=s.ingest.image_max_bytes,
                           timeout_s=s.ingest.image_timeout_s, allow_private=s.ingest.allow_private_hosts,
                           allowed_hosts=s.ingest.allowed_hosts)
    processor = ListingProcessor(store, features, embedder, fetcher, fetch_workers=s.ingest.fetch_workers,
                                 max_attempts=s.ingest.max_attempts, backoff_s=s.ingest.backoff_s,
                                 max_future_s=s.ingest.max_future_s)
    consumer = EventConsumer(s.kafka, [s.ingest.topic], group_id=s.ingest.group_id, client_id="adrec-ingest",
                             max_poll_records=s.ingest.poll_max_records)
    producer = EventProducer(s.kafka, client_id="adrec-ingest-dlq")
    return IngestWorker(consumer, producer, processor, metrics or Metrics("ingest"),
                        poll_timeout_s=s.ingest.poll_timeout_s, poll_max_records=s.ingest.poll_max_records,
                        observe=observe)
