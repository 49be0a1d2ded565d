"""The aggregator thread outlives a failing dead-letter send or flush and a failing commit (it
retries the same batch, uncommitted), readiness reports a dead aggregator, and the dashboard
plots every variant against the right days. In-memory Kafka doubles, the real redis-server."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future

import pytest
from fastapi.testclient import TestClient

from services.abmetrics import dashboard
from services.abmetrics.aggregator import Aggregator
from services.abmetrics.api import ApiDeps, create_app
from services.abmetrics.settings import AbMetricsConfig
from services.common.events import Assignment, Click, Impression, ShownItem
from services.common.kafka_client import DeliveryError, Message, TopicPartition
from services.common.metrics import Metrics

from .conftest import at, make_state

TOPIC = "user-events-fake"


def message(offset: int, event) -> Message:
    return Message(TOPIC, 0, offset, event.user_id.encode(), event.to_json(), 0, event, None)


class FakeConsumer:
    def __init__(self, batches: list[list[Message]], fail_commits: int = 0) -> None:
        self.batches = batches
        self.fail_commits = fail_commits
        self.commits: list[list[int]] = []

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Message]:
        if self.batches:
            return self.batches.pop(0)
        time.sleep(0.01)
        return []

    def commit(self, messages) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise RuntimeError("KafkaException: commit failed (coordinator not available)")
        self.commits.append([m.offset for m in messages])

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0)}

    def lag(self) -> int:
        return 0


class FakeProducer:
    def __init__(self, fail_sends: int = 0, fail_flushes: int = 0) -> None:
        self.fail_sends = fail_sends
        self.fail_flushes = fail_flushes
        self.sent: list[bytes] = []

    def publish_raw(self, topic: str, value: bytes, key=None) -> Future:
        if self.fail_sends:
            self.fail_sends -= 1
            raise BufferError("Local: Queue full")
        self.sent.append(value)
        fut: Future = Future()
        fut.set_result((topic, 0, len(self.sent)))
        return fut

    def flush(self, timeout_s: float | None = 60.0) -> None:
        if self.fail_flushes:
            self.fail_flushes -= 1
            raise DeliveryError("1 record(s) not delivered: Local: Message timed out")


@pytest.mark.redis
@pytest.mark.parametrize("failing", ["send", "flush", "commit"])
def test_the_aggregator_thread_survives_a_failing_batch_and_readiness_reports_a_dead_one(rclient, failing) -> None:
    imp = Impression(request_id="req-00000050", user_id="u50", occurred_at=at(0),
                     assignments=[Assignment(experiment_id="exp-res", variant="control")],
                     items=[ShownItem(listing_id="a", position=0)])
    batch = [message(0, imp), message(1, Click(request_id="req-00000050", user_id="u50", listing_id="a",
                                                 occurred_at=at(1))),
             message(2, Click(request_id="req-99999999", user_id="u50", listing_id="a", occurred_at=at(1)))]
    consumer = FakeConsumer([batch], fail_commits=2 if failing == "commit" else 0)
    producer = FakeProducer(fail_sends=2 if failing == "send" else 0, fail_flushes=2 if failing == "flush" else 0)
    state = make_state(rclient)
    metrics = Metrics(f"abmetrics_res_{uuid.uuid4().hex[:6]}")
    agg = Aggregator(consumer, producer, state, metrics, poll_timeout_s=0.01, retry_backoff_s=0.01)
    thread = threading.Thread(target=agg.run, name="aggregator", daemon=True)
    thread.start()
    deps = ApiDeps(state, AbMetricsConfig(), metrics, aggregator_alive=thread.is_alive)
    with TestClient(create_app(deps)) as client:
        deadline = time.monotonic() + 10
        while not consumer.commits and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert thread.is_alive()
        assert consumer.commits == [[0, 1, 2]]  # the failed batch itself, retried, then committed
        assert client.get("/readyz").status_code == 200
        agg.stop()
        thread.join(timeout=5)
        assert not thread.is_alive()
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["aggregator"] == "aggregator not running"
    # applied once (the retries were redeliveries), the unknown-request click dead-lettered
    assert state.counters() == {"accepted": {"click": 1, "impression": 1}, "rejected": {"unknown_request": 1}}
    assert state.moments("exp-res", ["control"], ["all"])[("control", "all")]["clicks"] == 1
    assert producer.sent and all(b"unknown_request" in v for v in producer.sent)
    assert agg.failures._value.get() == 2  # noqa: SLF001


def test_ctr_and_lift_plots_put_each_variant_on_its_own_days(monkeypatch) -> None:
    def day(d: str, v: str, ctr: float | None) -> dict:
        return {"day": d, "variant": v, "ctr": ctr, "ctr_ci": [None, None]}

    def cum(d: str, lift: float) -> dict:
        return {"day": d, "variant": "new", "lift": lift, "lift_ci": [lift - 0.1, lift + 0.1]}

    report = {"alpha": 0.05, "variants": [{"variant": "control"}, {"variant": "new"}],
              "comparisons": [{"variant": "new", "vs": "control"}],
              "daily": [day("2026-11-02", "control", 0.1), day("2026-11-02", "new", None),
                        day("2026-11-03", "control", 0.2), day("2026-11-03", "new", 0.3),
                        day("2026-11-04", "control", 0.2), day("2026-11-04", "new", 0.25)],
              "cumulative": [cum("2026-11-03", 0.5), cum("2026-11-04", 0.4)]}
    figures: list = []
    monkeypatch.setattr(dashboard, "_png", lambda fig: figures.append(fig) or "png")
    dashboard.ctr_plot(report)
    dashboard.lift_plot(report)
    ax = figures[0].axes[0]
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()}
    assert lines == {"control": ([0, 1, 2], [0.1, 0.2, 0.2]), "new": ([1, 2], [0.3, 0.25])}
    assert list(ax.get_xticks()) == [0, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["11-02", "11-03", "11-04"]
    ax = figures[1].axes[0]
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "new vs control")
    assert list(line.get_xdata()) == [1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["11-02", "11-03", "11-04"]
