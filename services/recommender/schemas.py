"""The API's request and response models (they are the OpenAPI docs)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.common.events import Assignment


class Ad(BaseModel):
    listing_id: str
    score: float = Field(description="cosine similarity to the query (0 for fallback items)")
    title: str | None = None
    price: float | None = None
    currency: str | None = None
    image_uri: str | None = None
    shop_id: str | None = None
    category: str | None = None


class Seed(BaseModel):
    listing_id: str
    title: str | None = None
    category: str | None = None
    shop_id: str | None = None


class SimilarResponse(BaseModel):
    request_id: str
    user_id: str
    experiments: list[Assignment] = Field(description="the A/B variants this user is in")
    seed: Seed | None = None
    k: int
    page: int
    items: list[Ad]
    fallback: str | None = Field(default=None, description="set when a degraded path answered, e.g. "
                                                              "'category_popular' while the vector index is down")
    model_version: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorResponse(BaseModel):
    error: ErrorBody
