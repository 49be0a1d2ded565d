"""Structured logging and the Prometheus metrics helper."""

from __future__ import annotations

import json
import logging

from services.common.logging import JsonFormatter
from services.common.metrics import Metrics


def test_json_log_lines_carry_service_and_extra_fields() -> None:
    record = logging.LogRecord("ingest.worker", logging.WARNING, __file__, 1, "dropped %s", ("e1",), None)
    record.listing_id = "l-1"
    doc = json.loads(JsonFormatter("ingest").format(record))
    assert doc["service"] == "ingest" and doc["level"] == "warning"
    assert doc["msg"] == "dropped e1" and doc["listing_id"] == "l-1" and doc["ts"].endswith("+00:00")


def test_metrics_are_named_per_service_and_exposed() -> None:
    m = Metrics("ingest-worker")
    m.counter("events_total", "events", labels=["outcome"]).labels(outcome="ok").inc(3)
    assert m.counter("events_total", "events", labels=["outcome"]) is m.counter("events_total", "x", ["outcome"])
    with m.timed("write_seconds", stage="milvus"):
        pass
    body, ctype = m.exposition()
    text = body.decode()
    assert 'adrec_ingest_worker_events_total{outcome="ok"} 3.0' in text
    assert 'adrec_ingest_worker_write_seconds_count{stage="milvus"} 1.0' in text
    assert ctype.startswith("text/plain")
