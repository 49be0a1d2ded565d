"""Bad input on the real broker and Redis: unknown requests, duplicates, malformed payloads are
counted, rejected (dead-lettered where they are bad input) and never touch the metrics."""

from __future__ import annotations

import json
import uuid
import pytest

from services.common.events import (
    Assignment,
    Click,
    DeadLetter,
    Impression,
    ListingDeleted,
    ShownItem,
    Topics,
)
from services.common.kafka_client import EventConsumer, EventProducer

from .conftest import at, make_aggregator, make_state, new_topic

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def imp(rid: str, user: str, variant: str, items: list[str], minutes: float = 0, **kw) -> Impression:
    return Impression(request_id=rid, user_id=user, occurred_at=at(minutes),
                      assignments=[Assignment(experiment_id="exp-bad", variant=variant)],
                      items=[ShownItem(listing_id=lid, position=i) for i, lid in enumerate(items)], **kw)


def click(rid: str, user: str, listing: str, minutes: float = 1, **kw) -> Click:
    return Click(request_id=rid, user_id=user, listing_id=listing, occurred_at=at(minutes), **kw)


def test_bad_input_is_counted_rejected_and_dead_lettered_without_touching_metrics(kcfg, rclient) -> None:
    topic = new_topic(kcfg, partitions=1)  # one partition: the order below is the order consumed
    i1 = imp("req-00000001", "u1", "control", ["a", "b", "c"])
    i2 = imp("req-00000002", "u2", "treatment", ["a", "d"])
    c1 = click("req-00000001", "u1", "a")
    good = [i1, i2, c1]
    bad = [
        (i1, "duplicate_event"),
        (c1, "duplicate_event"),
        (click("req-00000001", "u1", "a", 2), "duplicate_click"),
        (click("req-99999999", "u1", "a"), "unknown_request"),
        (click("req-00000001", "u1", "zz"), "listing_not_shown"),
        (click("req-00000001", "u2", "b"), "user_mismatch"),
        (click("req-00000001", "u1", "b", minutes=60 * 30), "click_too_late"),
        (b"not json{", "malformed"),
        (json.dumps({"type": "click", "schema_version": 1, "request_id": "x"}).encode(), "malformed"),
        (json.dumps({**json.loads(c1.to_json()), "schema_version": 9, "event_id": uuid.uuid4().hex}).encode(),
         "malformed"),
        (b"\xff\xfe\x00", "malformed"),
        (ListingDeleted(id="a", deleted_at=at(0)), "unexpected_type"),
        (imp("req-00000002", "u2", "treatment", ["x"], 3), "duplicate_request"),
    ]
    with EventProducer(kcfg) as producer:
        for e in good:
            producer.publish(topic, e)
        for e, _ in bad:
            (producer.publish_raw(topic, e, key=b"k") if isinstance(e, bytes) else producer.publish(topic, e))
        producer.flush()

    state = make_state(rclient)
    dlq_producer = EventProducer(kcfg)
    agg = make_aggregator(kcfg, topic, state, producer=dlq_producer)
    outcomes = agg.drain(idle_polls=2)
    agg.consumer.close()

    expected_rejections: dict[str, int] = {}
    for _, reason in bad:
        expected_rejections[reason] = expected_rejections.get(reason, 0) + 1
    assert state.counters() == {"accepted": {"click": 1, "impression": 2}, "rejected": expected_rejections}
    assert outcomes["ok"] == 3 and sum(outcomes.values()) == len(good) + len(bad)
    m = state.moments("exp-bad", ["control", "treatment"], ["all", "2026-11-02"])
    for scope in ("all", "2026-11-02"):
        assert m[("control", scope)] == {"requests": 1, "impressions": 3, "clicks": 1, "users": 1, "clickers": 1,
                                         "sum_n2": 9, "sum_c2": 1, "sum_nc": 3}
        assert m[("treatment", scope)] == {"requests": 1, "impressions": 2, "clicks": 0, "users": 1,
                                           "clickers": 0, "sum_n2": 4, "sum_c2": 0, "sum_nc": 0}
    assert state.item("a") == {"impressions": 2, "clicks": 1} and state.item("x") == {"impressions": 0, "clicks": 0}
    assert agg.events.labels(type="click", outcome="unknown_request")._value.get() == 1  # noqa: SLF001

    dlq_reasons = sorted(r for _, r in bad if not r.startswith("duplicate_") or r == "duplicate_request")

    def dead_letters(expected: int) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        with EventConsumer(kcfg, [Topics.dlq(topic)], f"dlq-{uuid.uuid4().hex[:6]}", decode=False) as c:
            for _ in range(40):
                out += [DeadLetter.model_validate_json(msg.value) for msg in c.poll(0.5)]
                if len(out) >= expected:
                    out += [DeadLetter.model_validate_json(msg.value) for msg in c.poll(1.0)]  # nothing more
                    break
        return out

    letters = dead_letters(len(dlq_reasons))
    assert sorted(d.error_kind for d in letters) == dlq_reasons
    bin_letter = next(d for d in letters if d.payload_b64)
    assert bin_letter.error_kind == "malformed" and "JSON" in bin_letter.reason

    # a redelivery of everything (same Redis namespace, a new consumer group) changes no number
    before = state.snapshot()
    again = make_aggregator(kcfg, topic, make_state(rclient, state.ns), producer=dlq_producer)
    outcomes = again.drain(idle_polls=2)
    again.consumer.close()
    assert outcomes == {"redelivered": len(good) + len(bad)}
    assert state.snapshot() == before
    assert len(dead_letters(2 * len(dlq_reasons))) == 2 * len(dlq_reasons)  # rejected messages are dead-lettered again
    dlq_producer.close()


def test_click_timing_window_and_skew_are_event_time_based(rclient) -> None:
    """Direct on the state (no broker): the click window uses event time, so a replay decides the same."""
    from services.abmetrics.state import Outcome, Position

    state = make_state(rclient, click_window_s=3600, clock_skew_s=60)
    base = imp("req-00000010", "u9", "control", ["a", "b"], minutes=0)
    items = [(Position("t", 0, 0), base, None),
             (Position("t", 0, 1), click("req-00000010", "u9", "a", minutes=59), None),
             (Position("t", 0, 2), click("req-00000010", "u9", "b", minutes=61), None),
             (Position("t", 0, 3), click("req-00000010", "u9", "b", minutes=-2, event_id=uuid.uuid4().hex), None)]
    out = state.apply(items)
    assert [(o.status, o.reason) for o in out] == [("ok", ""), ("ok", ""), ("rejected", "click_too_late"),
                                                   ("rejected", "click_before_impression")]
    assert state.apply(items[:2]) == [Outcome("redelivered", "")] * 2


def test_state_survives_a_redis_restart(tmp_path) -> None:
    """Redis with its append-only file (as deployed): a restart keeps counters, dedupe and watermarks."""
    import redis

    from services.abmetrics.state import AbState, Outcome, Position
    from services.localstack.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", persist=True).start()
    try:
        client = redis.Redis(host=server.host, port=server.port, decode_responses=True)
        state = AbState(client, "abm-persist")
        i1 = imp("req-00000020", "u20", "control", ["a", "b"])
        state.apply([(Position("t", 0, 0), i1, None),
                     (Position("t", 0, 1), click("req-00000020", "u20", "a"), None)])
        before = state.snapshot()
        client.close()
        server.stop()
        server.start()
        client = redis.Redis(host=server.host, port=server.port, decode_responses=True)
        state = AbState(client, "abm-persist")
        assert state.snapshot() == before
        assert state.apply([(Position("t", 0, 1), click("req-00000020", "u20", "a"), None),
                            (Position("t", 0, 2), i1, None)]) == [Outcome("redelivered", ""),
                                                                  Outcome("rejected", "duplicate_event")]
        client.close()
    finally:
        server.stop()


def test_a_click_refused_before_its_impression_is_counted_when_it_comes_again(rclient) -> None:
    """The click and the impression go out on different producers: the click can be consumed first.
    Its refusal must not burn its (deterministic) event id for the retry or the DLQ replay."""
    from services.abmetrics.state import Outcome, Position
    from services.recommender.clicks import click_event_id

    state = make_state(rclient)
    rid = "req-00000030"
    c = click(rid, "u30", "a", minutes=1, event_id=click_event_id(rid, "a"))
    assert state.apply([(Position("t", 0, 0), c, None)]) == [Outcome("rejected", "unknown_request")]
    assert state.apply([(Position("t", 0, 1), imp(rid, "u30", "control", ["a", "b"]), None)]) == [Outcome("ok")]
    assert state.apply([(Position("t", 0, 3), c, None),  # the same click, retried / replayed from the DLQ
                        (Position("t", 0, 4), c, None)]) == [Outcome("ok"), Outcome("rejected", "duplicate_event")]
    assert state.counters()["accepted"] == {"click": 1, "impression": 1}
    m = state.moments("exp-bad", ["control"], ["all", "2026-11-02"])
    assert m[("control", "all")]["clicks"] == 1 and m[("control", "2026-11-02")]["clickers"] == 1


def test_day_scoped_user_state_expires_after_the_requests_that_can_still_get_clicks(rclient) -> None:
    from services.abmetrics.state import Position

    state = make_state(rclient, request_ttl_s=3600)
    state.apply([(Position("t", 0, 0), imp("req-00000040", "u40", "control", ["a", "b"]), None),
                 (Position("t", 0, 1), click("req-00000040", "u40", "a"), None)])
    for kind in ("ui", "uc"):  # the request record lives 3600 s; the day's per-user state a bit longer
        assert 3600 < rclient.ttl(f"{state.ns}:{kind}:exp-bad:control:2026-11-02") <= 3600 + 2 * 24 * 3600
    for kind in ("ui", "uc", "m"):  # the experiment totals and the reports' moments stay
        assert rclient.ttl(f"{state.ns}:{kind}:exp-bad:control:all") == -1
    assert rclient.ttl(f"{state.ns}:m:exp-bad:control:2026-11-02") == -1


def test_the_rejection_log_is_bounded(rclient) -> None:
    from services.abmetrics.state import Outcome, Position

    state = make_state(rclient)
    state.rejlog_cap = 5  # per partition (default 100_000)
    refused = [(Position("t", 1, off), None, "malformed") for off in range(20)]
    assert state.apply(refused) == [Outcome("rejected", "malformed")] * 20
    assert sum(rclient.zcard(k) if rclient.type(k) == "zset" else rclient.hlen(k)
               for k in rclient.scan_iter(f"{state.ns}:rejlog*")) == 5
    # the latest refusals (the ones a redelivery can ask for) keep their reason for the DLQ
    assert state.apply(refused[-2:]) == [Outcome("redelivered", "malformed")] * 2
    assert state.counters()["rejected"] == {"malformed": 20}
