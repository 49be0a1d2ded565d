"""Impression logging never blocks or fails a request, even with Kafka unreachable: what cannot
be sent is dropped and counted by outcome."""

from __future__ import annotations

import time

from services.common.kafka_client import EventProducer
from services.common.metrics import Metrics
from services.common.settings import KafkaConfig
from services.localstack.ports import free_port
from services.recommender.impressions import ImpressionLogger


def counts(metrics: Metrics) -> dict[str, float]:
    out = {}
    for line in metrics.exposition()[0].decode().splitlines():
        if line.startswith("adrec_impressions_down_impressions_total{"):
            out[line.split('outcome="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_unreachable_kafka_drops_and_counts_impressions_without_raising() -> None:
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}")
    metrics = Metrics("impressions_down")
    logger = ImpressionLogger(lambda: EventProducer(cfg, max_queued=2, max_block_s=0, delivery_timeout_ms=500),
                              metrics, coalesce_s=0.0)
    for i in range(5):
        logger.log_shown(request_id=f"req-{i:08d}", user_id="u-1", seed_listing_id="l-1", assignments=[],
                         start=0, shown=[("l-2", 0.9), ("l-3", 0.8)])
    deadline = time.monotonic() + 30
    while sum(counts(metrics).values()) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    logger.close(timeout_s=5)
    got = counts(metrics)
    assert got.get("sent", 0) == 0
    assert got["dropped_queue_full"] == 3 and got["failed"] == 2, got  # queue of 2, then timed out
