"""The platform's one Kafka wrapper (confluent-kafka, i.e. librdkafka): topics, producer,
consumer, dead letters.

- `EventProducer`: idempotent, `acks=all`; events are keyed by entity so one listing's
  events stay ordered on one partition. `publish()` returns a `concurrent.futures.Future`
  resolved when the broker acknowledges (or rejects) the record; record building, batching
  and retries run in librdkafka's C threads, so a publish costs the caller microseconds.
  `flush()` raises `DeliveryError` if anything published since the previous flush failed or
  is still queued, so a caller that flushes before committing its input loses nothing.
- `EventConsumer`: consumer group, auto-commit OFF. `poll()` returns decoded messages as soon
  as any are there; a service commits with `commit(messages)` only after its side effects
  are durable (at-least-once). Invalid messages come back with `.error` set instead of
  raising, so the caller can dead-letter them and move on.
- `DeadLetterPublisher`: sends the original bytes plus the reason to `<topic>.dlq`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

from .events import DeadLetter, EventBase, EventValidationError, Topics, parse_event
from .settings import KafkaConfig

log = logging.getLogger(__name__)
_rdlog = logging.getLogger("librdkafka")  # librdkafka's own log lines (connection refused, ...)


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class DeliveryError(RuntimeError):
    """Records were not acknowledged by the broker (rejected, timed out, or still queued)."""


def _admin(cfg: KafkaConfig, timeout_ms: int | None = None) -> AdminClient:
    conf = {**cfg.client_config(), "client.id": f"{cfg.client_id}-admin", "logger": _rdlog}
    if timeout_ms is not None:
        conf["socket.timeout.ms"] = timeout_ms
    return AdminClient(conf)


def list_topics(cfg: KafkaConfig, timeout_s: float = 10.0) -> set[str]:
    """Topic names in the cluster (internal ones excluded); raises `ck.KafkaException` if the
    cluster does not answer within `timeout_s`."""
    md = _admin(cfg, int(max(timeout_s, 1.0) * 1000)).list_topics(timeout=timeout_s)
    return {t for t in md.topics if not t.startswith("__")}


def ensure_topics(cfg: KafkaConfig, topics: Iterable[str], partitions: int | None = None,
                  timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet and wait until they have leaders; returns the
    ones created."""
    admin = _admin(cfg)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions or cfg.topic_partitions, replication_factor=cfg.replication_factor)
         for t in wanted], operation_timeout=timeout_s, request_timeout=timeout_s)
    for fut in futures.values():
        try:
            fut.result(timeout=timeout_s)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:  # else: created concurrently
                raise
    deadline = time.monotonic() + timeout_s
    while True:  # metadata can trail the create response: wait until every partition has a leader
        md = admin.list_topics(timeout=timeout_s).topics
        if all(t in md and md[t].partitions and all(p.leader >= 0 for p in md[t].partitions.values())
               for t in wanted):
            return wanted
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {wanted} created but without leaders after {timeout_s:.0f}s")
        time.sleep(0.1)


class EventProducer:
    def __init__(self, cfg: KafkaConfig, *, linger_ms: int = 5, client_id: str | None = None,
                 delivery_timeout_ms: int = 120_000, max_queued: int = 100_000, max_block_s: float = 60.0) -> None:
        self.max_block_s = max_block_s
        self._producer = ck.Producer({
            **cfg.client_config(),
            "client.id": client_id or cfg.client_id,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "message.timeout.ms": delivery_timeout_ms,
            "queue.buffering.max.messages": max_queued,  # past this, publish waits up to max_block_s
            "logger": _rdlog,
        })
        self._lock = threading.Lock()
        self._failed = 0
        self._last_error: ck.KafkaError | None = None
        self._closed = threading.Event()
        # delivery reports (which resolve the futures) are served by poll(): one thread does it
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def _on_delivery(self, fut: Future, err: ck.KafkaError | None, msg: ck.Message) -> None:
        if err is None:
            fut.set_result((msg.topic(), msg.partition(), msg.offset()))
            return
        with self._lock:
            self._failed += 1
            self._last_error = err
        fut.set_exception(DeliveryError(f"{msg.topic()}: {err.str()}"))

    def _send(self, topic: str, value: bytes, key: str | bytes | None, headers: list | None) -> Future:
        fut: Future = Future()
        deadline = None
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers,
                                       on_delivery=lambda err, msg: self._on_delivery(fut, err, msg))
                return fut
            except BufferError:  # local queue full: wait for deliveries to make room, like a bounded queue
                deadline = deadline or time.monotonic() + self.max_block_s
                if time.monotonic() >= deadline:
                    raise
                self._producer.flush(0.05)

    def publish(self, topic: str, event: EventBase, key: str | None = None) -> Future:
        """Queue one event; the future resolves to (topic, partition, offset) once acknowledged.
        Raises `BufferError` when `max_queued` records are still waiting after `max_block_s`."""
        headers = [("type", str(getattr(event, "type", "")).encode()),
                   ("schema_version", str(getattr(event, "schema_version", "")).encode())]
        return self._send(topic, event.to_json(), key or event.key, headers)

    def publish_raw(self, topic: str, value: bytes, key: str | bytes | None = None) -> Future:
        """Send bytes as they are (dead letters, replays, tests of malformed input)."""
        return self._send(topic, value, key, None)

    def flush(self, timeout_s: float | None = 60.0) -> None:
        """Wait for every queued record; raise `DeliveryError` if any published since the last
        flush failed, or if some are still queued after `timeout_s`."""
        left = self._producer.flush(-1 if timeout_s is None else timeout_s)
        with self._lock:
            failed, err, self._failed, self._last_error = self._failed, self._last_error, 0, None
        if failed:
            raise DeliveryError(f"{failed} record(s) not delivered: {err.str() if err else 'unknown'}")
        if left:
            raise DeliveryError(f"{left} record(s) still queued after {timeout_s}s")

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued (up to `timeout_s`), then stop; never raises."""
        try:
            self.flush(timeout_s)
        except DeliveryError as exc:
            log.warning("producer closed with undelivered records: %s", exc)
        finally:
            self._closed.set()
            self._poller.join(timeout=5)

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
        self._max = max_poll_records
        self._consumer = ck.Consumer({
            **cfg.client_config(),
            "client.id": client_id or cfg.client_id,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": auto_offset_reset,
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(1000, session_timeout_ms // 4),
            "allow.auto.create.topics": False,
            "logger": _rdlog,
        })
        self._consumer.subscribe(list(topics))

    def poll(self, timeout_s: float = 1.0, max_records: int | None = None) -> list[Message]:
        """Wait up to `timeout_s` for the first message, then take what else is already
        fetched (up to `max_records`) without waiting."""
        limit = max_records or self._max
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        raw = [first] + (self._consumer.consume(num_messages=limit - 1, timeout=0) if limit > 1 else [])
        out = [self._wrap(r) for r in raw if not self._is_error(r)]
        out.sort(key=lambda m: (m.topic, m.partition, m.offset))
        return out

    @staticmethod
    def _is_error(r: ck.Message) -> bool:
        err = r.error()
        if err is None:
            return False
        if err.fatal():
            raise ck.KafkaException(err)
        if err.code() != ck.KafkaError._PARTITION_EOF:
            log.warning("consumer: %s", err.str())  # e.g. a subscribed topic that does not exist yet
        return True

    def _wrap(self, r: ck.Message) -> Message:
        value = r.value() or b""
        event, error = None, None
        if self._decode:
            try:
                event = parse_event(value)
            except EventValidationError as exc:
                error = exc
        return Message(r.topic(), r.partition(), r.offset(), r.key(), value, r.timestamp()[1], event, error)

    def commit(self, messages: Iterable[Message] | None = None) -> None:
        """Commit the positions after `messages` (all consumed positions when None); synchronous."""
        if messages is None:
            try:
                self._consumer.commit(asynchronous=False)
            except ck.KafkaException as exc:
                if exc.args[0].code() != ck.KafkaError._NO_OFFSET:  # nothing consumed yet
                    raise
            return
        offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            tp = (m.topic, m.partition)
            offsets[tp] = max(offsets.get(tp, -1), m.offset + 1)
        if offsets:
            self._consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def committed(self, tp: TopicPartition, timeout_s: float = 10.0) -> int | None:
        return self.committed_many([tp], timeout_s)[tp]

    def committed_many(self, tps: Iterable[TopicPartition], timeout_s: float = 10.0) -> dict[TopicPartition, int | None]:
        got = self._consumer.committed([ck.TopicPartition(t, p) for t, p in tps], timeout=timeout_s)
        return {TopicPartition(r.topic, r.partition): (r.offset if r.offset >= 0 else None) for r in got}

    def end_offsets(self, tps: Iterable[TopicPartition], timeout_s: float = 10.0) -> dict[TopicPartition, int]:
        """The partitions' current end offsets, asked of the broker (a round trip each)."""
        return {TopicPartition(t, p): self._consumer.get_watermark_offsets(ck.TopicPartition(t, p), timeout=timeout_s)[1]
                for t, p in tps}

    def lag(self) -> int:
        """Messages in the assigned partitions not yet committed by this group. End offsets come
        from the high watermarks of the last fetch responses (no request); only a partition not
        fetched yet is asked for, as such a request waits behind the connection's long-poll fetch
        (up to half a second), which a processing loop that reports lag should not pay."""
        tps = self.assignment()
        if not tps:
            return 0
        ends: dict[TopicPartition, int] = {}
        for tp in tps:
            high = self._consumer.get_watermark_offsets(ck.TopicPartition(*tp), cached=True)[1]
            ends[tp] = high if high >= 0 else self.end_offsets([tp])[tp]
        done = self.committed_many(tps)
        return sum(max(0, ends[tp] - (done[tp] or 0)) for tp in tps)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeadLetterPublisher:
    def __init__(self, producer: EventProducer, service: str) -> None:
        self._producer = producer
        self._service = service

    def send(self, message: Message, reason: str, kind: str = "schema", attempts: int = 1) -> Future:
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
            list_topics(cfg, timeout_s=min(5.0, max(0.5, deadline - time.monotonic())))
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(1.0)
    raise TimeoutError(f"Kafka at {cfg.bootstrap_servers} not reachable after {timeout_s:.0f}s: {last}")
