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
        if line.startswith(f"{metrics.prefix}_impressions_total{{"):
            out[line.split('outcome="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def shown(logger: ImpressionLogger, i: int) -> None:
    logger.log_shown(request_id=f"req-{i:08d}", user_id="u-1", seed_listing_id="l-1", assignments=[],
                     start=0, shown=[("l-2", 0.9), ("l-3", 0.8)])


def test_unreachable_kafka_drops_and_counts_impressions_without_raising() -> None:
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}")
    metrics = Metrics("impressions_down")
    logger = ImpressionLogger(lambda: EventProducer(cfg, max_queued=2, max_block_s=0, delivery_timeout_ms=500),
                              metrics, coalesce_s=0.0)
    for i in range(5):
        shown(logger, i)
    deadline = time.monotonic() + 30
    while sum(counts(metrics).values()) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    logger.close(timeout_s=5)
    got = counts(metrics)
    assert got.get("sent", 0) == 0
    assert got["dropped_queue_full"] == 3 and got["failed"] == 2, got  # queue of 2, then timed out


def test_an_invalid_impression_is_dropped_alone_and_the_producer_stays() -> None:
    made: list[EventProducer] = []

    def factory() -> EventProducer:
        made.append(EventProducer(KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}"), max_block_s=0,
                                  delivery_timeout_ms=500))
        return made[-1]

    metrics = Metrics("impressions_invalid")
    logger = ImpressionLogger(factory, metrics)
    logger.log({"request_id": "short", "user_id": "u-1", "items": []})  # request_id too short
    logger.log_shown(request_id="req-00000001", user_id="u-1", seed_listing_id=None, assignments=[],
                     start=0, shown=[("l-2", 0.9)])
    deadline = time.monotonic() + 30
    while sum(counts(metrics).values()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    logger.close(timeout_s=5)
    # the valid one was handed to the same producer (and failed on delivery: nothing listens), not dropped
    assert counts(metrics) == {"failed": 2.0} and len(made) == 1


def test_a_producer_that_cannot_be_made_pauses_logging_instead_of_retrying_per_impression() -> None:
    calls: list[int] = []

    def broken() -> EventProducer:
        calls.append(1)
        raise RuntimeError("bad Kafka settings")

    metrics = Metrics("impressions_broken")
    logger = ImpressionLogger(broken, metrics, retry_after_s=60)
    for i in range(4):
        shown(logger, i)
    logger.close(timeout_s=5)
    assert counts(metrics) == {"failed": 1.0, "dropped_kafka_down": 3.0} and len(calls) == 1
