"""Feature definitions (applied by `feast apply` in this folder, or by FeatureStoreClient.apply).

Streaming writers (the ingest worker, the A/B aggregator) push to the *_push sources; the
recommender reads the online store. Offline (batch) sources are parquet files that a backfill
or a training job writes; they are not needed for online serving.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String

DATA = Path(__file__).resolve().parent / "data"

listing = Entity(name="listing", join_keys=["listing_id"], value_type=ValueType.STRING,
                 description="a marketplace listing (ad candidate)")
shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.STRING, description="a seller")
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="a buyer")


def _push(name: str) -> PushSource:
    return PushSource(
        name=f"{name}_push",
        batch_source=FileSource(name=f"{name}_batch", path=str(DATA / f"{name}.parquet"),
                                timestamp_field="event_timestamp"),
    )


item_embedding_push = _push("item_embedding")
item_metadata_push = _push("item_metadata")
item_ctr_push = _push("item_ctr")

item_embedding = FeatureView(
    name="item_embedding",
    entities=[listing],
    ttl=timedelta(days=365),
    schema=[
        Field(name="embedding", dtype=Array(Float32), description="L2-normalised visual embedding"),
        Field(name="model_version", dtype=String),
        Field(name="updated_at", dtype=Int64, description="listing version, epoch ms"),
    ],
    source=item_embedding_push,
    online=True,
)

item_metadata = FeatureView(
    name="item_metadata",
    entities=[listing],
    ttl=timedelta(days=365),
    schema=[
        Field(name="shop_id", dtype=String),
        Field(name="title", dtype=String),
        Field(name="category", dtype=String),
        Field(name="price", dtype=Float64),
        Field(name="currency", dtype=String),
        Field(name="image_uri", dtype=String),
        Field(name="active", dtype=Bool),
        Field(name="updated_at", dtype=Int64),
    ],
    source=item_metadata_push,
    online=True,
)

item_ctr = FeatureView(
    name="item_ctr",
    entities=[listing],
    ttl=timedelta(days=30),
    schema=[
        Field(name="impressions", dtype=Int64),
        Field(name="clicks", dtype=Int64),
        Field(name="ctr", dtype=Float64, description="smoothed click-through rate"),
    ],
    source=item_ctr_push,
    online=True,
)

ALL = [listing, shop, user, item_embedding_push, item_metadata_push, item_ctr_push,
       item_embedding, item_metadata, item_ctr]
