"""`POST /v1/events/click`: a click on a recommended listing, validated against the response that
showed it, published to Kafka (`user-events`, keyed by user like the impression).

Validation before publishing: the request id must be one this deployment served (a
`ServedRequests` registry the response path fills), and the listing must have been in that
response. Unknown request ids are rejected with 404 and counted
(`adrec_recommender_clicks_total{outcome="unknown_request"}`); a listing that was not shown
gets 422. The user id is taken from the served record, not from the client. The event id is
derived from (request id, listing id), so a retried or repeated click is the same event and
the A/B aggregator counts it once. The aggregator validates again against the logged
impression (the authoritative check: what was not logged cannot be attributed).

Wiring (in the recommender's Dependencies): `deps.clicks = ClickService(...)`, call
`deps.clicks.remember(...)` where the response is built, and
`app.include_router(click_router(deps))`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.common.events import ID_PATTERN, Click, ListingId, Topics
from services.common.kafka_client import EventProducer
from services.common.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedRequest:
    user_id: str
    listing_ids: frozenset[str]
    positions: dict[str, int]


class ServedRequests(Protocol):
    def remember(self, request_id: str, user_id: str, listing_ids: Sequence[str], start: int = 0) -> None: ...

    def lookup(self, request_id: str) -> ServedRequest | None: ...


class InMemoryServedRequests:
    """Bounded, TTL'd map request id -> what was shown (one process; use the Redis one for replicas
    or several uvicorn workers, since the click may reach another process than the request)."""

    def __init__(self, ttl_s: float = 24 * 3600, max_entries: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, ServedRequest]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, user_id: str, listing_ids: Sequence[str], start: int = 0) -> None:
        rec = ServedRequest(user_id, frozenset(listing_ids), {lid: start + i for i, lid in enumerate(listing_ids)})
        with self._lock:
            self._items[request_id] = (time.monotonic() + self.ttl_s, rec)
            self._items.move_to_end(request_id)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def lookup(self, request_id: str) -> ServedRequest | None:
        with self._lock:
            hit = self._items.get(request_id)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._items[request_id]
                return None
            return hit[1]


class RedisServedRequests:
    """The same registry in Redis (`<prefix>:<request id>` hash: `u` = user, `i:<listing>` = position,
    with a TTL): shared by every worker and replica. `client` is a redis.Redis (decode_responses=True)."""

    def __init__(self, client: Any, ttl_s: int = 24 * 3600, prefix: str = "served") -> None:
        self.r = client
        self.ttl_s = ttl_s
        self.prefix = prefix

    def remember(self, request_id: str, user_id: str, listing_ids: Sequence[str], start: int = 0) -> None:
        key = f"{self.prefix}:{request_id}"
        mapping: dict[str, Any] = {"u": user_id, **{f"i:{lid}": start + i for i, lid in enumerate(listing_ids)}}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    def lookup(self, request_id: str) -> ServedRequest | None:
        h = self.r.hgetall(f"{self.prefix}:{request_id}")
        if not h or "u" not in h:
            return None
        pos = {k[2:]: int(v) for k, v in h.items() if k.startswith("i:")}
        return ServedRequest(h["u"], frozenset(pos), pos)


def click_event_id(request_id: str, listing_id: str) -> str:
    """Deterministic: the same click (retries, double clicks) is one event for the aggregator."""
    return hashlib.sha256(f"click:{request_id}:{listing_id}".encode()).hexdigest()[:32]


class ClickService:
    """Validates clicks and publishes them; publishing waits for the broker's ack (acks=all), so a
    202 means the click is durable, and Kafka being down is a 503 the client may retry."""

    def __init__(self, producer_factory: Callable[[], EventProducer], served: ServedRequests, metrics: Metrics, *,
                 topic: str = Topics.USER_EVENTS, publish_timeout_s: float = 5.0) -> None:
        self._factory = producer_factory
        self._producer: EventProducer | None = None
        self._lock = threading.Lock()
        self.served = served
        self.topic = topic
        self.publish_timeout_s = publish_timeout_s
        self.outcomes = metrics.counter("clicks_total", "click events by outcome", ["outcome"])

    def remember(self, request_id: str, user_id: str, listing_ids: Sequence[str], start: int = 0) -> None:
        """Call where a response is built (beside the impression log); never raises."""
        try:
            self.served.remember(request_id, user_id, listing_ids, start)
        except Exception as exc:  # noqa: BLE001 - a registry outage must not fail the request
            self.outcomes.labels(outcome="remember_failed").inc()
            log.warning("served request not remembered: %s", exc)

    def producer(self) -> EventProducer:
        with self._lock:
            if self._producer is None:
                self._producer = self._factory()
            return self._producer

    def publish(self, event: Click) -> None:
        self.producer().publish(self.topic, event).result(timeout=self.publish_timeout_s)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(self.publish_timeout_s)
            self._producer = None


class ClickIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    request_id: str = Field(pattern=r"^[A-Za-z0-9\-]{8,64}$", description="`request_id` of the response shown")
    listing_id: ListingId
    user_id: Annotated[str, Field(pattern=ID_PATTERN, description="optional; must match the request's")] | None = None


class ClickAccepted(BaseModel):
    status: str = "accepted"
    event_id: str
    request_id: str
    listing_id: str
    position: int | None


def _error(request: Request, status: int, code: str, message: str) -> JSONResponse:
    rid = getattr(request.state, "request_id", None) or "unknown"
    return JSONResponse({"error": {"code": code, "message": message, "request_id": rid}}, status_code=status)


def click_router(deps) -> APIRouter:
    """Needs `deps.clicks`: a ClickService. Errors use the recommender's error shape."""
    svc: ClickService = deps.clicks
    router = APIRouter(tags=["events"])

    @router.post("/v1/events/click", status_code=202, response_model=ClickAccepted,
                 summary="Record a click on a listing from a recommendation response",
                 responses={404: {"description": "unknown or expired request id"},
                            422: {"description": "malformed body, or listing not in that response"},
                            503: {"description": "event log or request registry unavailable; retry"}})
    async def post_click(request: Request, body: ClickIn):
        try:
            served = await asyncio.to_thread(svc.served.lookup, body.request_id)
        except Exception as exc:  # noqa: BLE001 - the registry (Redis) down or slow
            svc.outcomes.labels(outcome="registry_unavailable").inc()
            log.warning("served-requests registry lookup failed: %s", exc)
            return _error(request, 503, "dependency_unavailable", "request registry unavailable; retry")
        if served is None:
            svc.outcomes.labels(outcome="unknown_request").inc()
            return _error(request, 404, "unknown_request", f"request {body.request_id} unknown or expired")
        if body.user_id is not None and body.user_id != served.user_id:
            svc.outcomes.labels(outcome="user_mismatch").inc()
            return _error(request, 422, "user_mismatch", "user_id does not match the request's user")
        if body.listing_id not in served.listing_ids:
            svc.outcomes.labels(outcome="listing_not_shown").inc()
            return _error(request, 422, "listing_not_shown",
                          f"listing {body.listing_id} was not in the response {body.request_id}")
        position = served.positions.get(body.listing_id)
        event = Click(event_id=click_event_id(body.request_id, body.listing_id), request_id=body.request_id,
                      user_id=served.user_id, listing_id=body.listing_id, position=position, producer="recommender")
        try:
            await asyncio.to_thread(svc.publish, event)
        except Exception as exc:  # noqa: BLE001 - Kafka down or slow
            svc.outcomes.labels(outcome="publish_failed").inc()
            log.warning("click not published: %s", exc)
            return _error(request, 503, "dependency_unavailable", "click log unavailable; retry")
        svc.outcomes.labels(outcome="accepted").inc()
        return JSONResponse(ClickAccepted(event_id=event.event_id, request_id=body.request_id,
                                          listing_id=body.listing_id, position=position).model_dump(),
                            status_code=202)

    return router
