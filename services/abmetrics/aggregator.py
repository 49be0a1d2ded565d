"""The Kafka adapter: poll user-events -> AbState (Redis, atomic per event) -> dead letters -> commit.

At-least-once delivery from Kafka becomes exactly-once counting in Redis: the Kafka offsets
are committed only after the Redis writes, and a redelivered message is recognised by the
per-partition offset watermark inside the Lua script (see state.py). Rejected messages
(malformed, unknown request, listing not shown, ...) are counted in Redis and sent to
`<topic>.dlq`; a redelivered rejection is dead-lettered again (at-least-once dead letters).

`run()` (the service's thread) never lets one failed batch end it: a failed dead-letter send or
flush, or a failed commit, leaves the batch uncommitted and pending; after a back-off the same
batch is processed again (the watermark turns it into redeliveries, so nothing is counted twice)
and then committed. `run_once()`/`drain()` raise instead (tests, backfills).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from services.common.events import Click, Impression
from services.common.kafka_client import (
    DeadLetterPublisher,
    EventConsumer,
    EventProducer,
    Message,
    run_until_stopped,
)
from services.common.metrics import Metrics

from .state import AbState, Outcome, Position

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    size: int = 0
    outcomes: Counter = field(default_factory=Counter)


class Aggregator:
    def __init__(self, consumer: EventConsumer, producer: EventProducer | None, state: AbState, metrics: Metrics, *,
                 poll_timeout_s: float = 0.5, poll_max_records: int = 500, retry_backoff_s: float = 1.0) -> None:
        self.consumer = consumer
        self.producer = producer
        self.dlq = DeadLetterPublisher(producer, service="abmetrics") if producer is not None else None
        self.state = state
        self.poll_timeout_s = poll_timeout_s
        self.poll_max_records = poll_max_records
        self.retry_backoff_s = retry_backoff_s
        self.stopping = threading.Event()
        self._pending: list[Message] = []  # polled, not yet committed (a failed batch to retry)
        self.failures = metrics.counter("batch_failures_total", "batches (or polls) that failed and were retried")
        self.events = metrics.counter("events_total", "user events by outcome", ["type", "outcome"])
        self.batch_seconds = metrics.histogram("batch_seconds", "time to apply one polled batch")
        self.lag = metrics.gauge("consumer_lag", "uncommitted messages in the assigned partitions")

    @staticmethod
    def classify(m: Message):
        pos = Position(m.topic, m.partition, m.offset)
        if not m.ok or m.event is None:
            return pos, None, "malformed"
        if not isinstance(m.event, (Impression, Click)):
            return pos, m.event, "unexpected_type"
        return pos, m.event, None

    def process(self, batch: list[Message], *, commit: bool = True) -> BatchStats:
        """Apply one batch; `commit=False` simulates a crash between the Redis write and the commit."""
        items = [self.classify(m) for m in batch]
        attempt = 0
        while True:
            try:
                outcomes = self.state.apply(items)
                break
            except Exception as exc:  # Redis down: retry the same batch, never skip it
                attempt += 1
                log.warning("batch of %d not applied (attempt %d), retrying: %s", len(batch), attempt, exc)
                if self.stopping.wait(min(30.0, self.retry_backoff_s * 2 ** min(attempt, 5))):
                    raise
        stats = BatchStats(size=len(batch))
        dead = 0
        for m, (_pos, event, _reason), out in zip(batch, items, outcomes):
            label = out.status if out.status == "redelivered" else (out.reason or out.status)
            etype = getattr(event, "type", "invalid")
            stats.outcomes[label] += 1
            self.events.labels(type=etype, outcome=label).inc()
            if self._should_dead_letter(out):
                dead += 1
                if self.dlq is not None:
                    detail = m.error.reason if (out.reason == "malformed" and m.error) else out.reason
                    self.dlq.send(m, f"{out.reason}: {detail}" if detail != out.reason else out.reason,
                                  kind=out.reason)
        if dead and self.producer is not None:
            self.producer.flush()
        if commit:
            self.consumer.commit(batch)
        return stats

    @staticmethod
    def _should_dead_letter(out: Outcome) -> bool:
        return out.dead_letter  # also true for a redelivered rejection (reason kept in the rejlog)

    def _retry_batch(self) -> list[Message]:
        """The failed batch, less the partitions this consumer no longer owns (after a rebalance
        their new owner resumes from the committed offset)."""
        owned = self.consumer.assignment()
        return [m for m in self._pending if (m.topic, m.partition) in owned]

    def run_once(self) -> BatchStats:
        batch = self._retry_batch() if self._pending else []
        if not batch:
            batch = self.consumer.poll(self.poll_timeout_s, max_records=self.poll_max_records)
        self._pending = batch
        if not batch:
            return BatchStats()
        start = time.perf_counter()
        stats = self.process(batch)
        self._pending = []
        self.batch_seconds.observe(time.perf_counter() - start)
        log.info("batch applied", extra={"size": stats.size, **{f"n_{k}": v for k, v in stats.outcomes.items()}})
        return stats

    def drain(self, idle_polls: int = 3, timeout_s: float = 120.0) -> Counter:
        """Consume until `idle_polls` consecutive empty polls (tests, backfills). Returns outcome counts."""
        total: Counter = Counter()
        idle, deadline = 0, time.monotonic() + timeout_s
        while idle < idle_polls and time.monotonic() < deadline:
            stats = self.run_once()
            total.update(stats.outcomes)
            if stats.size:
                idle = 0
            elif self.consumer.assignment():  # empty polls while joining the group do not count
                idle += 1
        return total

    def run(self) -> None:
        failures = 0

        def step() -> BatchStats | None:
            nonlocal failures
            try:
                stats = self.run_once()
            except Exception:  # DLQ send/flush, commit, poll: keep the batch, back off, retry it
                failures += 1
                self.failures.inc()
                log.exception("batch of %d failed (attempt %d), retrying without committing",
                              len(self._pending), failures)
                self.stopping.wait(min(30.0, self.retry_backoff_s * 2 ** min(failures - 1, 5)))
                return None
            failures = 0
            return stats

        run_until_stopped(step, self.consumer, self.stopping, self.lag)

    def stop(self) -> None:
        self.stopping.set()
