"""The Kafka adapter: poll -> ListingProcessor -> dead letters -> commit (only after writes)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.common.kafka_client import (
    DeadLetterPublisher,
    EventConsumer,
    EventProducer,
    run_until_stopped,
)
from services.common.metrics import Metrics

from .processor import BatchResult, ListingProcessor

log = logging.getLogger(__name__)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class IngestWorker:
    def __init__(self, consumer: EventConsumer, producer: EventProducer, processor: ListingProcessor,
                 metrics: Metrics, *, poll_timeout_s: float = 0.2, poll_max_records: int = 500,
                 retry_backoff_s: float = 1.0, observe: Callable[[BatchResult], None] | None = None) -> None:
        self.observe = observe  # e.g. a benchmark collecting exact freshness samples
        self.consumer = consumer
        self.dlq = DeadLetterPublisher(producer, service="ingest")
        self.producer = producer
        self.processor = processor
        self.poll_timeout_s = poll_timeout_s
        self.poll_max_records = poll_max_records
        self.retry_backoff_s = retry_backoff_s
        self.stopping = threading.Event()
        self.events = metrics.counter("events_total", "listing events by outcome", ["outcome"])
        self.freshness = metrics.histogram("freshness_seconds", "event time -> searchable in Milvus",
                                           buckets=FRESHNESS_BUCKETS)
        self.batch_seconds = metrics.histogram("batch_seconds", "time to process one polled batch")
        self.lag = metrics.gauge("consumer_lag", "uncommitted messages in the assigned partitions")

    def run_once(self) -> int:
        """Poll one batch, process it until it succeeds (or we are stopping), commit. Returns its size."""
        batch = self.consumer.poll(self.poll_timeout_s, max_records=self.poll_max_records)
        if not batch:
            return 0
        start = time.perf_counter()
        attempt = 0
        while True:
            try:
                result = self.processor.process(batch)
                break
            except Exception as exc:  # sinks down (Milvus, Feast): retry, never skip the batch
                attempt += 1
                log.warning("batch of %d failed (attempt %d), retrying: %s", len(batch), attempt, exc)
                if self.stopping.wait(min(30.0, self.retry_backoff_s * 2 ** min(attempt, 5))):
                    raise
        for item in result.dead:
            self.dlq.send(item.message, item.reason, item.kind, item.attempts)
        if result.dead:
            self.producer.flush()
        self.consumer.commit(batch)
        for outcome, n in (("upserted", result.upserted), ("deleted", result.deleted), ("stale", result.stale),
                           ("superseded", result.superseded), ("dead_lettered", len(result.dead))):
            if n:
                self.events.labels(outcome=outcome).inc(n)
        for f in result.freshness_s:
            self.freshness.observe(f)
        self.batch_seconds.observe(time.perf_counter() - start)
        if self.observe:
            self.observe(result)
        log.info("batch done", extra={"size": len(batch), "upserted": result.upserted, "deleted": result.deleted,
                                      "stale": result.stale, "dead": len(result.dead)})
        return len(batch)

    def run(self) -> None:
        run_until_stopped(self.run_once, self.consumer, self.stopping, self.lag)

    def stop(self) -> None:
        self.stopping.set()
