"""The embedder's Prometheus metrics (adrec_embedder_*), on the registry kserve's /metrics serves."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from services.common.metrics import Metrics

from .batcher import BatchStats, DynamicBatcher

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)


class EmbedderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        m = Metrics("embedder", registry if registry is not None else REGISTRY)
        self.registry = m.registry
        self.request_latency = m.histogram("request_latency_seconds", "request latency in the model server, by "
                                           "protocol (v1, v2) and outcome", labels=("protocol", "status"))
        self.requests = m.counter("requests_total", "requests by protocol and outcome", labels=("protocol", "status"))
        self.images = m.counter("images_total", "images embedded (rate() = images/s), by input kind",
                                labels=("input",))
        self.errors = m.counter("errors_total", "failed requests by reason", labels=("reason",))
        self.batch_size = m.histogram("batch_size", "images per forward pass", buckets=BATCH_BUCKETS)
        self.batch_requests = m.histogram("batch_requests", "requests merged into one forward pass",
                                          buckets=BATCH_BUCKETS)
        self.queue_wait = m.histogram("batch_queue_wait_seconds", "oldest image's wait before its forward pass")
        self.forward = m.histogram("forward_seconds", "forward pass duration per batch")
        self.decode = m.histogram("decode_seconds", "decode + preprocess time per request with encoded images")
        self.in_flight = m.gauge("requests_in_flight", "requests being handled")
        self.queued = m.gauge("queued_images", "images waiting for a forward pass")
        self._children: dict[tuple, object] = {}
        self.model_info = m.gauge("model_info", "the served model (value 1)", labels=("name", "version", "runtime"))

    def _child(self, metric, *labels: str):
        """metric.labels(*labels), bound once: labels() takes a lock and builds a key on every call."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_done(self, protocol: str, status: str, seconds: float) -> None:
        self._child(self.request_latency, protocol, status).observe(seconds)
        self._child(self.requests, protocol, status).inc()

    def images_done(self, kind: str, n: int) -> None:
        self._child(self.images, kind).inc(n)

    def watch_queue(self, batcher: DynamicBatcher) -> None:
        """queued_images reads the batcher's queue when scraped (nothing to do per request)."""
        self.queued.set_function(lambda: batcher.queued_rows)

    def observe_batch(self, s: BatchStats) -> None:
        self.batch_size.observe(s.rows)
        self.batch_requests.observe(s.requests)
        self.queue_wait.observe(s.queue_wait_s)
        self.forward.observe(s.run_s)


_default: EmbedderMetrics | None = None


def default_metrics() -> EmbedderMetrics:
    """One instance per process on prometheus_client's default REGISTRY (names may register once)."""
    global _default
    if _default is None:
        _default = EmbedderMetrics()
    return _default
