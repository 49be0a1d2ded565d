"""The platform's one Kafka wrapper (kafka-python): topics, producer, consumer, dead letters.

- `EventProducer`: idempotent, `acks=all`; events are keyed by entity so one listing's
  events stay ordered on one partition.
- `EventConsumer`: consumer group, auto-commit OFF. `poll()` returns decoded messages; a
  service commits with `commit(messages)` only after its side effects are durable
  (at-least-once). Invalid messages come back with `.error` set instead of raising, so the
  caller can dead-letter them and move on.
- `DeadLetterPublisher`: sends the original bytes plus the reason to `<topic>.dlq`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from .events import DeadLetter, EventBase, EventValidationError, Topics, parse_event
from .settings import KafkaConfig

log = logging.getLogger(__name__)


def ensure_topics(cfg: KafkaConfig, topics: Iterable[str], partitions: int | None = None,
                  timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = KafkaAdminClient(client_id=f"{cfg.client_id}-admin", **cfg.client_kwargs())
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t not in existing]
        if not wanted:
            return []
        spec = {t: {"num_partitions": partitions or cfg.topic_partitions,
                    "replication_factor": cfg.replication_factor} for t in wanted}
        try:
            admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
        except TopicAlreadyExistsError:
            pass  # created concurrently by another process
        return wanted
    finally:
        admin.close()


class EventProducer:
    def __init__(self, cfg: KafkaConfig, *, linger_ms: int = 5, client_id: str | None = None) -> None:
        self._producer = KafkaProducer(
            client_id=client_id or cfg.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            retries=2**31 - 1,
            delivery_timeout_ms=120_000,
            key_serializer=lambda k: k.encode() if isinstance(k, str) else k,
            **cfg.client_kwargs(),
        )

    def publish(self, topic: str, event: EventBase, key: str | None = None):
        """Send one event asynchronously; returns kafka-python's future (`.get()` blocks)."""
        headers = [("type", str(getattr(event, "type", "")).encode()),
                   ("schema_version", str(getattr(event, "schema_version", "")).encode())]
        return self._producer.send(topic, value=event.to_json(), key=key or event.key, headers=headers)

    def publish_raw(self, topic: str, value: bytes, key: str | bytes | None = None):
        """Send bytes as they are (dead letters, replays, tests of malformed input)."""
        return self._producer.send(topic, value=value, key=key)

    def flush(self, timeout_s: float | None = 60.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    event: EventBase | None
    error: EventValidationError | None

    @property
    def ok(self) -> bool:
        return self.error is None


class EventConsumer:
    def __init__(self, cfg: KafkaConfig, topics: Sequence[str], group_id: str, *,
                 client_id: str | None = None, max_poll_records: int = 500,
                 auto_offset_reset: str = "earliest", session_timeout_ms: int = 10_000,
                 decode: bool = True) -> None:
        self._decode = decode
        self._consumer = KafkaConsumer(
            *topics,
            group_id=group_id,
            client_id=client_id or cfg.client_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            max_poll_records=max_poll_records,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 4),
            allow_auto_create_topics=False,
            **cfg.client_kwargs(),
        )

    def poll(self, timeout_s: float = 1.0, max_records: int | None = None) -> list[Message]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[Message] = []
        for records in batches.values():
            for r in records:
                out.append(self._wrap(r))
        out.sort(key=lambda m: (m.topic, m.partition, m.offset))
        return out

    def _wrap(self, r: Any) -> Message:
        event, error = None, None
        if self._decode:
            try:
                event = parse_event(r.value if r.value is not None else b"")
            except EventValidationError as exc:
                error = exc
        return Message(r.topic, r.partition, r.offset, r.key, r.value or b"", r.timestamp, event, error)

    def commit(self, messages: Iterable[Message] | None = None) -> None:
        """Commit the positions after `messages` (all consumed positions when None)."""
        if messages is None:
            self._consumer.commit()
            return
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)
        if offsets:
            self._consumer.commit(offsets)

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    def committed(self, tp: TopicPartition) -> int | None:
        return self._consumer.committed(tp)

    def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._consumer.end_offsets(list(tps))

    def lag(self) -> int:
        """Messages in the assigned partitions not yet committed by this group."""
        tps = self.assignment()
        if not tps:
            return 0
        ends = self.end_offsets(tps)
        return sum(max(0, ends[tp] - (self.committed(tp) or 0)) for tp in tps)

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeadLetterPublisher:
    def __init__(self, producer: EventProducer, service: str) -> None:
        self._producer = producer
        self._service = service

    def send(self, message: Message, reason: str, kind: str = "schema", attempts: int = 1):
        try:
            payload, payload_b64 = message.value.decode("utf-8"), None
        except UnicodeDecodeError:
            payload = message.value.decode("utf-8", errors="replace")
            payload_b64 = base64.b64encode(message.value).decode()
        letter = DeadLetter(
            source_topic=message.topic, source_partition=message.partition,
            source_offset=message.offset,
            key=message.key.decode("utf-8", errors="replace") if message.key else None,
            payload=payload, payload_b64=payload_b64, reason=reason[:2000], error_kind=kind,
            service=self._service, attempts=attempts,
        )
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, reason)
        return self._producer.publish_raw(Topics.dlq(message.topic), letter.to_json(), key=message.key)


def run_until_stopped(run_once: Callable[[], object], consumer: EventConsumer, stopping: threading.Event,
                      lag_gauge: Any = None, lag_every_s: float = 5.0) -> None:
    """A consumer service's main loop: `run_once()` (poll, process, commit) until `stopping` is
    set, refreshing a consumer-lag gauge every few seconds (metrics never stop the loop)."""
    last_lag = 0.0
    while not stopping.is_set():
        run_once()
        if lag_gauge is not None and time.monotonic() - last_lag > lag_every_s:
            try:
                lag_gauge.set(consumer.lag())
            except Exception:  # noqa: BLE001
                pass
            last_lag = time.monotonic()


def wait_for_broker(cfg: KafkaConfig, timeout_s: float = 60.0) -> None:
    """Block until the cluster answers metadata requests (services start before the broker)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(client_id=f"{cfg.client_id}-probe", **cfg.client_kwargs())
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(1.0)
    raise TimeoutError(f"Kafka at {cfg.bootstrap_servers} not reachable after {timeout_s:.0f}s: {last}")
