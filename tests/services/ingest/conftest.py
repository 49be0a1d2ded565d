"""Ingest fixtures: real Feast (SQLite) + milvus-lite, and embedders that need no model server."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.common.embedder_client import EmbedderError
from services.common.events import ListingDeleted, ListingUpserted, parse_event
from services.common.feature_store import FeatureStoreClient, FeatureStoreConfig
from services.common.kafka_client import Message
from services.common.milvus_store import ListingVectorStore
from services.common.settings import MilvusConfig
from services.ingest.settings import DATA_DIR

FASHION = DATA_DIR / "fashion-products" / "images"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DIM = 48


class PixelEmbedder:
    """A real (if weak) image embedding: 4x4 RGB thumbnail, L2-normalised (48 dims).
    Decodes the bytes the worker fetched, so corrupt images fail as they would in the model."""

    model_version = "pixels-v1"
    needs_images = True

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, images: Sequence[bytes], uris: Sequence[str]) -> list[np.ndarray | EmbedderError]:
        self.calls += 1
        out: list[np.ndarray | EmbedderError] = []
        for data in images:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    v = np.asarray(im.convert("RGB").resize((4, 4)), np.float32).ravel() + 1.0
                out.append(v / np.linalg.norm(v))
            except Exception as exc:  # noqa: BLE001
                out.append(EmbedderError(f"cannot decode image: {exc}", permanent=True))
        return out


def upsert(lid: str, minutes: int = 0, image: str | None = None, **over: object) -> ListingUpserted:
    fields = dict(id=lid, shop_id="shop-1", title=f"title {lid}", category="Tshirts", price=Decimal("10.00"),
                  image_uri=image or str(sorted(FASHION.glob("*.jpg"))[abs(hash(lid)) % 50]),
                  updated_at=T0 + timedelta(minutes=minutes))
    fields.update(over)
    return ListingUpserted(**fields)


def delete(lid: str, minutes: int) -> ListingDeleted:
    return ListingDeleted(id=lid, deleted_at=T0 + timedelta(minutes=minutes))


def as_messages(events: list, topic: str = "listings") -> list[Message]:
    out = []
    for i, e in enumerate(events):
        raw = e if isinstance(e, bytes) else e.to_json()
        try:
            ev, err = parse_event(raw), None
        except Exception as exc:  # noqa: BLE001
            ev, err = None, exc
        out.append(Message(topic, 0, i, None, raw, 0, ev, err))
    return out


@pytest.fixture
def features(tmp_path: Path) -> FeatureStoreClient:
    client = FeatureStoreClient(FeatureStoreConfig(registry_path=str(tmp_path / "registry.db"),
                                                   sqlite_path=str(tmp_path / "online.db")))
    client.apply()
    return client


@pytest.fixture
def vectors(tmp_path: Path) -> ListingVectorStore:
    store = ListingVectorStore(MilvusConfig(uri=str(tmp_path / "milvus.db"), dim=DIM))
    store.point_alias(store.create_collection(store.collection_name("pixels-v1")))
    yield store
    store.close()
