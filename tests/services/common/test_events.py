"""Event schemas: valid events round-trip; invalid ones are refused with a readable reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.common.events import (
    Click,
    DeadLetter,
    EventValidationError,
    Impression,
    ListingDeleted,
    ListingUpserted,
    ShownItem,
    VARCHAR_MAX_BYTES,
    Topics,
    parse_event,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def upsert_doc(**over: object) -> dict:
    doc = {"type": "listing.upserted", "schema_version": 1, "id": "123", "shop_id": "shop-9",
           "title": "Blue denim jacket", "category": "Jackets", "price": "49.90", "currency": "EUR",
           "active": True, "image_uri": "file:///data/123.jpg", "updated_at": "2026-11-25T12:00:00Z"}
    doc.update(over)
    return doc


def test_every_event_type_round_trips() -> None:
    events = [
        ListingUpserted(**{k: v for k, v in upsert_doc().items() if k not in ("type", "schema_version")}),
        ListingDeleted(id="123", deleted_at=NOW),
        Impression(request_id="req-00001", user_id="u1", seed_listing_id="123",
                   items=[ShownItem(listing_id="9", position=0, score=0.9)]),
        Click(request_id="req-00001", user_id="u1", listing_id="9", position=0),
    ]
    for e in events:
        back = parse_event(e.to_json())
        assert back == e and type(back) is type(e)
    assert events[0].price == Decimal("49.90") and events[0].key == "123"
    assert events[2].key == "u1"  # user events are partitioned by user


@pytest.mark.parametrize("raw, fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (json.dumps({"type": "listing.exploded"}).encode(), "unknown event type"),
    (json.dumps(upsert_doc(schema_version=7)).encode(), "unsupported schema_version 7"),
    (json.dumps({k: v for k, v in upsert_doc().items() if k != "shop_id"}).encode(), "shop_id: Field required"),
    (json.dumps(upsert_doc(price="-1")).encode(), "price"),
    (json.dumps(upsert_doc(price="cheap")).encode(), "price"),
    (json.dumps(upsert_doc(currency="euro")).encode(), "ISO 4217"),
    (json.dumps(upsert_doc(updated_at="2026-11-25T12:00:00")).encode(), "timezone"),
    (json.dumps(upsert_doc(id="has space")).encode(), "id"),
    (json.dumps(upsert_doc(image_uri="javascript:alert(1)")).encode(), "image_uri"),
    (json.dumps(upsert_doc(surprise=1)).encode(), "surprise: Extra inputs are not permitted"),
    (json.dumps(upsert_doc(active="maybe")).encode(), "active"),
])
def test_invalid_messages_are_refused_with_a_reason(raw: bytes, fragment: str) -> None:
    with pytest.raises(EventValidationError) as err:
        parse_event(raw)
    assert fragment in err.value.reason


def test_impression_positions_must_be_unique() -> None:
    doc = {"type": "impression", "request_id": "req-00001", "user_id": "u1",
           "items": [{"listing_id": "1", "position": 0}, {"listing_id": "2", "position": 0}]}
    with pytest.raises(EventValidationError, match="duplicate positions"):
        parse_event(json.dumps(doc))


def test_dead_letter_and_topics() -> None:
    letter = DeadLetter(source_topic="listings", payload="{", reason="not valid JSON")
    assert json.loads(letter.to_json())["reason"] == "not valid JSON"
    raw = ' {"id": \n'  # the original message, byte for byte (whitespace included), for a replay
    assert json.loads(DeadLetter(source_topic="listings", payload=raw, reason="x").to_json())["payload"] == raw
    assert Topics.dlq(Topics.LISTINGS) == "listings.dlq"
    assert set(Topics.all()) == {"listings", "user-events", "listings.dlq", "user-events.dlq"}


@pytest.mark.parametrize("over, fragment", [
    ({"category": "鞋" * 50}, "category: Value error, must be at most 128 bytes of UTF-8, got 150"),
    ({"image_uri": "/data/" + "图" * 681}, "image_uri: Value error, must be at most 2048 bytes of UTF-8"),
    ({"image_uri": "http://8.8.8.8/x\x01.jpg"}, "image_uri: Value error, image_uri must not contain control"),
    ({"image_uri": "/data/a\x00.jpg"}, "must not contain control characters"),
])
def test_listing_strings_must_fit_milvus_and_uris_have_no_control_characters(over: dict, fragment: str) -> None:
    with pytest.raises(EventValidationError) as err:
        parse_event(json.dumps(upsert_doc(**over)))
    assert fragment in err.value.reason
    # the limits are UTF-8 bytes, the ones milvus_store's schema uses: these fit exactly
    ok = parse_event(json.dumps(upsert_doc(category="鞋" * 42 + "xx", image_uri="/data/" + "图" * 680 + "xx")))
    assert len(ok.category.encode()) == VARCHAR_MAX_BYTES["category"]
    assert len(ok.image_uri.encode()) == VARCHAR_MAX_BYTES["image_uri"]
