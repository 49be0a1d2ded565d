"""Kafka event schemas: the one module every producer and consumer of the platform uses.

Every message is a JSON object with an envelope (`event_id`, `type`, `schema_version`,
`occurred_at`, `producer`) and type-specific fields. `type` selects the model; a
`schema_version` this code does not know is rejected with a clear reason (it goes to the
dead-letter topic rather than being guessed at). Adding a field with a default is a
compatible change (same version); renaming or removing one needs a new version and an
upcaster in `_UPCASTERS`.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)


class Topics:
    """Topic names. Dead-letter topics are `<topic>.dlq`."""

    LISTINGS = "listings"
    USER_EVENTS = "user-events"

    @staticmethod
    def dlq(topic: str) -> str:
        return f"{topic}.dlq"

    @classmethod
    def all(cls) -> list[str]:
        base = [cls.LISTINGS, cls.USER_EVENTS]
        return base + [cls.dlq(t) for t in base]


ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
ListingId = Annotated[str, Field(pattern=ID_PATTERN, description="listing id (1-64 chars, [A-Za-z0-9_.:-])")]
EntityId = Annotated[str, Field(pattern=ID_PATTERN)]
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Limits of the listing strings stored in Milvus VARCHAR fields, in UTF-8 BYTES (Milvus counts
# bytes): milvus_store's schema uses these, so an event that passes here fits there.
VARCHAR_MAX_BYTES = {"listing_id": 64, "shop_id": 64, "category": 128, "title": 2048, "image_uri": 2048,
                     "currency": 8}


def _max_utf8_bytes(limit: int) -> AfterValidator:
    def check(v: str) -> str:
        n = len(v.encode("utf-8"))  # pydantic refuses lone surrogates before this
        if n > limit:
            raise ValueError(f"must be at most {limit} bytes of UTF-8, got {n}")
        return v

    return AfterValidator(check)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return uuid.uuid4().hex


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class EventBase(_Strict):
    event_id: str = Field(default_factory=new_event_id, min_length=8, max_length=64)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    producer: str = Field(default="adrec", max_length=64)

    @property
    def key(self) -> str:
        """Partition key: keeps all events of one entity in order on one partition."""
        return self.event_id

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


# ---- listings topic --------------------------------------------------------------------

class ListingUpserted(EventBase):
    """A listing was created or changed. Consumers keep the version with the newest updated_at."""

    type: Literal["listing.upserted"] = "listing.upserted"
    schema_version: Literal[1] = 1
    id: ListingId
    shop_id: EntityId
    title: Annotated[str, Field(min_length=1, max_length=500), _max_utf8_bytes(VARCHAR_MAX_BYTES["title"])]
    category: Annotated[str, Field(min_length=1), _max_utf8_bytes(VARCHAR_MAX_BYTES["category"])]
    price: Decimal = Field(ge=0, le=Decimal("1e9"), max_digits=14, decimal_places=2)
    currency: str = "USD"
    active: bool = True
    image_uri: Annotated[str, Field(min_length=1), _max_utf8_bytes(VARCHAR_MAX_BYTES["image_uri"])]
    updated_at: AwareDatetime

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not _CURRENCY.match(v):
            raise ValueError("currency must be an ISO 4217 code such as USD")
        return v

    @field_validator("image_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if _CONTROL.search(v):
            raise ValueError("image_uri must not contain control characters")
        if not re.match(r"^(https?://|file://|/|[A-Za-z0-9_.\-]+/)", v):
            raise ValueError("image_uri must be an http(s):// or file:// URI or a path")
        return v

    @property
    def key(self) -> str:
        return self.id


class ListingDeleted(EventBase):
    type: Literal["listing.deleted"] = "listing.deleted"
    schema_version: Literal[1] = 1
    id: ListingId
    deleted_at: AwareDatetime

    @property
    def key(self) -> str:
        return self.id


# ---- user-events topic -------------------------------------------------------------------

class Assignment(_Strict):
    experiment_id: EntityId
    variant: EntityId


class ShownItem(_Strict):
    listing_id: ListingId
    position: int = Field(ge=0)
    score: float | None = None


class Impression(EventBase):
    """A recommendation response was shown: logged by the recommender."""

    type: Literal["impression"] = "impression"
    schema_version: Literal[1] = 1
    request_id: str = Field(min_length=8, max_length=64)
    user_id: EntityId
    seed_listing_id: ListingId | None = None
    surface: str = Field(default="similar", max_length=64)
    assignments: list[Assignment] = Field(default_factory=list)
    items: list[ShownItem] = Field(min_length=0, max_length=1000)
    fallback: str | None = Field(default=None, max_length=64,
                                 description="set when the items are a fallback, not a search (e.g. category_popular)")

    @model_validator(mode="after")
    def _unique_positions(self) -> Impression:
        positions = [i.position for i in self.items]
        if len(set(positions)) != len(positions):
            raise ValueError("items have duplicate positions")
        return self

    @property
    def key(self) -> str:
        return self.user_id


class Click(EventBase):
    type: Literal["click"] = "click"
    schema_version: Literal[1] = 1
    request_id: str = Field(min_length=8, max_length=64)
    user_id: EntityId
    listing_id: ListingId
    position: int | None = Field(default=None, ge=0)

    @property
    def key(self) -> str:
        return self.user_id


Event = Annotated[
    Union[ListingUpserted, ListingDeleted, Impression, Click],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
_KNOWN_VERSIONS = {"listing.upserted": {1}, "listing.deleted": {1}, "impression": {1}, "click": {1}}
# (type, from_version) -> function that rewrites a payload dict to the next version
_UPCASTERS: dict[tuple[str, int], Any] = {}


class EventValidationError(ValueError):
    """A message that is not a valid event; `reason` is what goes to the dead-letter topic."""

    def __init__(self, reason: str, kind: str = "schema") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def parse_event(raw: bytes | str | dict[str, Any]) -> EventBase:
    """Decode and validate one message. Raises EventValidationError with a readable reason."""
    if isinstance(raw, dict):
        data = raw
    else:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EventValidationError(f"not valid JSON: {exc}", kind="json") from exc
    if not isinstance(data, dict):
        raise EventValidationError(f"event must be a JSON object, got {type(data).__name__}")
    etype = data.get("type")
    if etype not in _KNOWN_VERSIONS:
        raise EventValidationError(f"unknown event type {etype!r}; expected one of {sorted(_KNOWN_VERSIONS)}")
    version = data.get("schema_version", 1)
    while isinstance(version, int) and (etype, version) in _UPCASTERS:
        data = _UPCASTERS[(etype, version)](dict(data))
        version = data["schema_version"]
    if version not in _KNOWN_VERSIONS[etype]:
        raise EventValidationError(
            f"unsupported schema_version {version!r} for {etype}; supported: {sorted(_KNOWN_VERSIONS[etype])}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise EventValidationError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"][1:] or err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class DeadLetter(_Strict):
    """What the dead-letter topic carries: the original bytes and why they were refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)  # keep the payload exact
    type: Literal["dead_letter"] = "dead_letter"
    schema_version: Literal[1] = 1
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    key: str | None = None
    payload: str = Field(description="original message, UTF-8 (invalid bytes replaced)")
    payload_b64: str | None = Field(default=None, description="original bytes when they are not valid UTF-8")
    reason: str
    error_kind: str = "schema"
    service: str = "adrec"
    attempts: int = 1
    failed_at: AwareDatetime = Field(default_factory=utcnow)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()
