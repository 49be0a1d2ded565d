"""Impression logging that never blocks or fails a request: a bounded queue drained by a
background thread into Kafka; when the queue is full or Kafka is down, events are dropped
and counted (the request has already been answered).

The thread drains what has queued up, then pauses `coalesce_s` before the next drain: one
wake-up per burst instead of one per response, so it takes the GIL from the request threads
tens of times a second rather than hundreds (the producer lingers 50 ms anyway)."""

from __future__ import annotations

import logging
import queue
import threading
import time

from services.common.events import Impression, Topics
from services.common.kafka_client import EventProducer
from services.common.metrics import Metrics

log = logging.getLogger(__name__)


class ImpressionLogger:
    def __init__(self, producer_factory, metrics: Metrics, maxsize: int = 10_000,
                 topic: str = Topics.USER_EVENTS, retry_after_s: float = 10.0, coalesce_s: float = 0.02) -> None:
        self.retry_after_s = retry_after_s
        self.coalesce_s = coalesce_s
        self._factory = producer_factory
        self._producer: EventProducer | None = None
        self._queue: queue.Queue[Impression | dict | None] = queue.Queue(maxsize=maxsize)
        self.topic = topic
        self.logged = metrics.counter("impressions_total", "impression events by outcome", ["outcome"])
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
        self._thread.start()

    def log(self, event: Impression | dict) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.logged.labels(outcome="dropped_queue_full").inc()

    def log_shown(self, *, request_id: str, user_id: str, seed_listing_id: str | None, assignments: list[dict],
                  start: int, shown: list[tuple[str, float]], fallback: str | None = None) -> None:
        """Queue what a response showed; the event is built and validated off the request path."""
        self.log({"request_id": request_id, "user_id": user_id, "seed_listing_id": seed_listing_id,
                  "assignments": assignments, "producer": "recommender", "fallback": fallback,
                  "items": [{"listing_id": lid, "position": start + i, "score": score}
                            for i, (lid, score) in enumerate(shown)]})

    def _run(self) -> None:
        down_until = 0.0
        while True:
            batch = [self._queue.get()]
            while batch[-1] is not None and len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for ev in batch:
                if ev is None:
                    return
                down_until = self._send(ev, down_until)
            time.sleep(self.coalesce_s)

    def _send(self, ev: Impression | dict, down_until: float) -> float:
        if time.monotonic() < down_until:  # no producer could be made: drop (counted) until the retry
            self.logged.labels(outcome="dropped_kafka_down").inc()
            return down_until
        if self._producer is None:
            try:
                self._producer = self._factory()
            except Exception as exc:  # noqa: BLE001 - never propagate to requests
                self.logged.labels(outcome="failed").inc()
                log.warning("impression producer not made, pausing %.0fs: %s", self.retry_after_s, exc)
                return time.monotonic() + self.retry_after_s
        try:  # a made producer stays: librdkafka reconnects by itself, and its queue bounds an outage
            if isinstance(ev, dict):
                ev = Impression(**ev)
            self._producer.publish(self.topic, ev).add_done_callback(self._delivered)
        except BufferError:  # librdkafka's queue is full (broker down or slow): drop this one
            self.logged.labels(outcome="dropped_queue_full").inc()
        except Exception as exc:  # noqa: BLE001 - e.g. an invalid event: this one only
            self.logged.labels(outcome="failed").inc()
            log.warning("impression not logged: %s", exc)
        return down_until

    def _delivered(self, fut) -> None:
        self.logged.labels(outcome="failed" if fut.exception() else "sent").inc()

    def close(self, timeout_s: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)
        if self._producer is not None:
            self._producer.close(timeout_s)
