"""The project's producer/consumer against a real Kafka broker (KRaft, 127.0.0.1)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.common.events import ListingUpserted, Topics, parse_event
from services.common.kafka_client import (
    DeadLetterPublisher,
    DeliveryError,
    EventConsumer,
    EventProducer,
    TopicPartition,
    ensure_topics,
)
from services.common.settings import KafkaConfig
from services.localstack.kafka_broker import KafkaBroker
from services.localstack.ports import free_port

pytestmark = pytest.mark.kafka


def listing(i: int) -> ListingUpserted:
    return ListingUpserted(
        id=f"l-{i}", shop_id=f"s-{i % 17}", title=f"Listing {i}", category="Tshirts",
        price=Decimal("9.99"), image_uri=f"/images/{i}.jpg", updated_at=datetime.now(UTC),
    )


def drain(consumer: EventConsumer, seen: dict[str, int], until: int, timeout_s: float) -> None:
    """Poll and commit (after 'processing') until `until` distinct ids were seen."""
    deadline = time.monotonic() + timeout_s
    while len(seen) < until and time.monotonic() < deadline:
        batch = consumer.poll(timeout_s=1.0)
        for m in batch:
            assert m.ok, m.error
            seen[m.event.id] = seen.get(m.event.id, 0) + 1
        consumer.commit(batch)


def test_thousand_events_survive_a_broker_restart(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka").start()
    try:
        cfg = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, client_id="restart-test")
        topic = "listings-restart"
        assert ensure_topics(cfg, [topic], partitions=3) == [topic]
        assert ensure_topics(cfg, [topic]) == []  # idempotent

        producer = EventProducer(cfg)
        consumer = EventConsumer(cfg, [topic], group_id="restart-group")
        for f in [producer.publish(topic, listing(i)) for i in range(500)]:
            f.result(timeout=30)

        seen: dict[str, int] = {}
        drain(consumer, seen, until=200, timeout_s=60)
        assert len(seen) >= 200

        broker.stop()
        assert not broker.running()
        broker.start()  # same ports, same log dirs

        futures = [producer.publish(topic, listing(i)) for i in range(500, 1000)]
        producer.flush()
        for f in futures:
            f.result(timeout=60)

        drain(consumer, seen, until=1000, timeout_s=120)
        assert set(seen) == {f"l-{i}" for i in range(1000)}, f"lost {1000 - len(seen)} events"

        # every partition's committed offset reached its end: nothing left for the group
        tps = [TopicPartition(topic, p) for p in range(3)]
        ends = consumer.end_offsets(tps)
        assert sum(ends.values()) == 1000
        assert {tp: consumer.committed(tp) for tp in tps} == ends
        consumer.close()

        # a new member of the same group resumes from the commits: it sees nothing old
        with EventConsumer(cfg, [topic], group_id="restart-group") as again:
            assert [m for _ in range(3) for m in again.poll(timeout_s=1.0)] == []
        producer.close()
    finally:
        broker.stop()


def test_invalid_messages_come_back_with_a_reason_and_go_to_the_dlq(
        kafka_config: KafkaConfig, unique: str) -> None:
    topic = f"listings-{unique}"
    ensure_topics(kafka_config, [topic, Topics.dlq(topic)], partitions=1)
    with EventProducer(kafka_config) as producer:
        producer.publish(topic, listing(1))
        producer.publish_raw(topic, b"{not json", key="bad-1")
        producer.publish_raw(topic, b'{"type": "listing.upserted", "schema_version": 1, "id": "x"}')
        producer.publish_raw(topic, b"\xff\xfe binary")
        producer.publish(topic, listing(2))
        producer.flush()

        with EventConsumer(kafka_config, [topic], group_id=f"g-{unique}") as consumer:
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 5 and time.monotonic() < deadline:
                got += consumer.poll(timeout_s=1.0)
            assert [m.ok for m in got] == [True, False, False, False, True]
            assert "not valid JSON" in got[1].error.reason
            assert "shop_id" in got[2].error.reason and "Field required" in got[2].error.reason
            dlq = DeadLetterPublisher(producer, service="test")
            for m in got:
                if not m.ok:
                    dlq.send(m, m.error.reason, m.error.kind)
            producer.flush()
            consumer.commit(got)

    with EventConsumer(kafka_config, [Topics.dlq(topic)], group_id=f"dlq-{unique}", decode=False) as reader:
        letters = []
        deadline = time.monotonic() + 30
        while len(letters) < 3 and time.monotonic() < deadline:
            letters += reader.poll(timeout_s=1.0)
    import json
    bodies = [json.loads(m.value) for m in letters]
    assert [b["source_offset"] for b in bodies] == [1, 2, 3]
    assert bodies[0]["payload"] == "{not json" and bodies[0]["error_kind"] == "json"
    assert bodies[2]["payload_b64"] is not None  # bytes that were not UTF-8 are kept exactly
    assert all(b["reason"] for b in bodies)
    # the valid events around the bad ones still decode to the same objects
    assert parse_event(got[4].value).id == "l-2"


def test_a_rejected_record_fails_its_future_and_the_next_flush(kafka_config: KafkaConfig, unique: str) -> None:
    topic = f"listings-{unique}"
    ensure_topics(kafka_config, [topic], partitions=1)
    with EventProducer(kafka_config, delivery_timeout_ms=1500) as producer:
        ok = producer.publish(topic, listing(1))
        lost = producer.publish(f"no-such-topic-{unique}", listing(2))  # the broker does not auto-create
        with pytest.raises(DeliveryError, match="1 record"):
            producer.flush(30)
        assert ok.result(timeout=1)[0] == topic
        with pytest.raises(DeliveryError, match=f"no-such-topic-{unique}"):
            lost.result(timeout=1)
        producer.publish(topic, listing(3))
        producer.flush(30)  # the failure was reported once; later flushes start clean


def test_a_full_queue_raises_at_once_when_the_producer_must_not_wait() -> None:
    cfg = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens there
    producer = EventProducer(cfg, max_queued=3, max_block_s=0, delivery_timeout_ms=1000)
    futures = [producer.publish("t", listing(i)) for i in range(3)]
    with pytest.raises(BufferError):
        producer.publish("t", listing(3))
    producer.close(timeout_s=5)  # gives up on the unreachable broker without raising
    assert all(isinstance(f.exception(timeout=5), DeliveryError) for f in futures)


def test_poll_returns_what_is_there_without_waiting_for_a_full_batch(kafka_config: KafkaConfig, unique: str) -> None:
    topic = f"listings-{unique}"
    ensure_topics(kafka_config, [topic], partitions=1)
    with EventProducer(kafka_config) as producer:
        for i in range(3):
            producer.publish(topic, listing(i))
        producer.flush(30)
    with EventConsumer(kafka_config, [topic], group_id=f"g-{unique}") as consumer:
        got: list = []
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:
            start = time.monotonic()
            got += consumer.poll(timeout_s=30, max_records=500)
            assert time.monotonic() - start < 20  # not the full timeout: 3 records are enough
        assert [m.event.id for m in got] == ["l-0", "l-1", "l-2"]
        assert consumer.lag() == 3  # consumed but not committed
        consumer.commit(got)
        assert consumer.lag() == 0
