"""`python -m services.abmetrics`: the aggregator (Kafka -> Redis), the Feast item-CTR pusher and
the report API/dashboard in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import uvicorn

from services.common.events import Topics
from services.common.kafka_client import EventConsumer, EventProducer, ensure_topics, wait_for_broker
from services.common.logging import configure_logging
from services.common.metrics import Metrics
from services.experiments.config import load_experiments

from .aggregator import Aggregator
from .api import ApiDeps, create_app
from .settings import AbMetricsSettings
from .state import AbState, connect

log = logging.getLogger(__name__)


def main() -> int:
    s = AbMetricsSettings()
    c = s.abmetrics
    configure_logging(s.service_name, s.log_level, s.log_json)
    metrics = Metrics("abmetrics")
    experiments = load_experiments(c.experiments_file)
    state = AbState(connect(s.redis), c.namespace, request_ttl_s=c.request_ttl_s, dedupe_ttl_s=c.dedupe_ttl_s,
                    click_window_s=c.click_window_s, clock_skew_s=c.clock_skew_s)
    wait_for_broker(s.kafka)
    ensure_topics(s.kafka, [c.topic, Topics.dlq(c.topic)])
    consumer = EventConsumer(s.kafka, [c.topic], c.group_id, client_id="adrec-abmetrics",
                             max_poll_records=c.poll_max_records)
    producer = EventProducer(s.kafka, client_id="adrec-abmetrics")
    agg = Aggregator(consumer, producer, state, metrics, poll_timeout_s=c.poll_timeout_s,
                     poll_max_records=c.poll_max_records)
    threads = [threading.Thread(target=agg.run, name="aggregator", daemon=True)]
    pusher = None
    if c.feast_enabled:
        from services.common.feature_store import FeatureStoreClient

        from .feast_ctr import ItemCtrPusher

        features = FeatureStoreClient(s.feast)
        features.apply()  # idempotent; registers item_ctr_push like the ingest worker does
        pusher = ItemCtrPusher(state, features, metrics, prior=c.ctr_prior,
                               strength=c.ctr_prior_strength, batch=c.feast_push_batch)
        threads.append(threading.Thread(target=pusher.run, args=(c.feast_push_interval_s,), name="feast-ctr",
                                        daemon=True))
    for t in threads:
        t.start()
    # a dead aggregator thread would leave the API serving frozen numbers: readiness reports it
    app = create_app(ApiDeps(state, c, metrics, lambda: experiments, aggregator_alive=threads[0].is_alive))
    server = uvicorn.Server(uvicorn.Config(app, host=s.bind_host, port=s.port, log_level="warning"))

    def stop(*_: object) -> None:
        agg.stop()
        if pusher:
            pusher.stop()
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("abmetrics started", extra={"topic": c.topic, "namespace": c.namespace, "port": s.port})
    print(f"abmetrics ready on http://{s.bind_host}:{s.port}", flush=True)
    server.run()
    stop()
    threads[0].join(timeout=10)
    consumer.close()
    producer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
