"""Fixtures for the A/B metrics tests: a Redis client on the real redis-server, event builders."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from services.abmetrics.aggregator import Aggregator
from services.abmetrics.state import AbState
from services.common.events import Topics
from services.common.kafka_client import EventConsumer, EventProducer, ensure_topics
from services.common.metrics import Metrics
from services.common.settings import KafkaConfig

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def rclient(redis_server) -> Iterator[redis.Redis]:
    client = redis.Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def kcfg(kafka_broker) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers, client_id="adrec-test-abm")


def new_topic(kcfg: KafkaConfig, partitions: int = 3) -> str:
    topic = f"user-events-{uuid.uuid4().hex[:10]}"
    ensure_topics(kcfg, [topic, Topics.dlq(topic)], partitions=partitions)
    return topic


def make_state(client: redis.Redis, ns: str | None = None, **kw) -> AbState:
    return AbState(client, ns or f"abm-{uuid.uuid4().hex[:8]}", **kw)


def make_aggregator(kcfg: KafkaConfig, topic: str, state: AbState, group: str | None = None,
                    producer: EventProducer | None = None, max_records: int = 1000) -> Aggregator:
    consumer = EventConsumer(kcfg, [topic], group or f"abm-{uuid.uuid4().hex[:8]}", max_poll_records=max_records)
    return Aggregator(consumer, producer, state, Metrics(f"abmetrics_test_{uuid.uuid4().hex[:6]}"),
                      poll_timeout_s=0.5, poll_max_records=max_records)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)
