"""Prometheus metrics helper: consistent names (`adrec_<service>_<name>`) on one registry."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.prefix = f"adrec_{service.replace('-', '_')}"
        self.registry = registry or CollectorRegistry()
        self._made: dict[str, object] = {}

    def _name(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def _get(self, kind: type, name: str, doc: str, labels: Sequence[str], **kw: object):
        key = self._name(name)
        if key not in self._made:
            self._made[key] = kind(key, doc, list(labels), registry=self.registry, **kw)
        return self._made[key]

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def histogram(self, name: str, doc: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        return self._get(Histogram, name, doc, labels, buckets=tuple(buckets))

    @contextmanager
    def timed(self, name: str, doc: str = "duration in seconds", **labels: str) -> Iterator[None]:
        hist = self.histogram(name, doc, labels=sorted(labels))
        start = time.perf_counter()
        try:
            yield
        finally:
            (hist.labels(**labels) if labels else hist).observe(time.perf_counter() - start)

    def exposition(self) -> tuple[bytes, str]:
        """Body and content type for a /metrics endpoint."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve /metrics on its own port (for workers that have no HTTP server)."""
        start_http_server(port, addr=addr, registry=self.registry)
