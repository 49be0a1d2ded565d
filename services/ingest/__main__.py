"""`python -m services.ingest`: run the ingest worker until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import sys

from services.common.logging import configure_logging
from services.common.metrics import Metrics

from .app import build_worker
from .settings import IngestSettings


def main() -> int:
    settings = IngestSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    metrics = Metrics("ingest")
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, addr=settings.bind_host)
    worker = build_worker(settings, metrics)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    logging.getLogger(__name__).info("ingest worker started", extra={"topic": settings.ingest.topic})
    print("ingest worker ready", flush=True)
    try:
        worker.run()
    except Exception:
        if not worker.stopping.is_set():
            raise
    worker.consumer.close()
    worker.producer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
