"""IngestWorker.run_once with an in-memory consumer and producer: retry, dead letters, commit."""

from __future__ import annotations

from services.common.image_fetch import ImageFetcher
from services.common.metrics import Metrics
from services.ingest.processor import ListingProcessor
from services.ingest.settings import DATA_DIR
from services.ingest.worker import IngestWorker

from .conftest import as_messages, upsert
from .test_processor import FlakyEmbedder


class Consumer:
    def __init__(self, batch: list) -> None:
        self.batch, self.committed = batch, []

    def poll(self, timeout_s: float, max_records: int | None = None) -> list:
        batch, self.batch = self.batch, []
        return batch

    def commit(self, messages) -> None:
        self.committed.append(list(messages))


class Producer:
    def __init__(self) -> None:
        self.sent = []

    def publish_raw(self, topic: str, value: bytes, key: bytes | None = None):
        self.sent.append((topic, value))

    def flush(self) -> None:
        pass


def test_an_embedder_rollout_delays_the_batch_and_sends_nothing_to_the_dlq(vectors, features) -> None:
    embedder = FlakyEmbedder(failures=7)  # three process() calls of 3 attempts: two fail, the third works
    processor = ListingProcessor(vectors, features, embedder, ImageFetcher(allowed_roots=[DATA_DIR]), backoff_s=0.0)
    batch = as_messages([upsert(f"l-{i}") for i in range(4)])
    consumer, producer = Consumer(batch), Producer()
    worker = IngestWorker(consumer, producer, processor, Metrics("ingest"), retry_backoff_s=0.001)
    assert worker.run_once() == 4
    assert embedder.calls == 8 and producer.sent == []
    assert consumer.committed == [batch] and vectors.count() == 4
