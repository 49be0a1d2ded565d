"""The floor for `make bench-api`: the thinnest FastAPI endpoint over the same search.

`GET /v1/listings/{id}/similar` with the seed vector and shop already in memory (no Feast read),
one `MilvusClient.search` in a worker thread exactly as the raw path issues it, the first k hits
as JSON; no A/B assignment, re-rank, impression, metrics or request id. It runs under uvicorn like
the recommender, so the gap raw -> floor is the web stack itself and floor -> API is the work the
endpoint does on top (see benchmarks/api/bench.py).

Env: FLOOR_SEEDS (JSON {listing_id: [vector, shop_id]}), FLOOR_URI (Milvus), FLOOR_COLLECTION,
FLOOR_LIMIT, FLOOR_K, FLOOR_SEARCH_PARAMS (JSON).
"""

from __future__ import annotations

import asyncio
import json
import os

import orjson

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from pymilvus import MilvusClient

from services.common.milvus_store import SearchFilter
from services.recommender.retrieval import RENDER_FIELDS

SEEDS: dict[str, list] = json.loads(open(os.environ["FLOOR_SEEDS"], encoding="utf-8").read())
CLIENT = MilvusClient(os.environ["FLOOR_URI"])
COLLECTION = os.environ.get("FLOOR_COLLECTION", "listings")
LIMIT, K = int(os.environ.get("FLOOR_LIMIT", "48")), int(os.environ.get("FLOOR_K", "12"))
PARAMS = {"metric_type": "COSINE", "params": json.loads(os.environ.get("FLOOR_SEARCH_PARAMS", "{}"))}
app = FastAPI()


def search(listing_id: str) -> list[dict]:
    vector, shop = SEEDS[listing_id]
    flt = SearchFilter(exclude_ids=[listing_id], exclude_shop_ids=[shop])
    res = CLIENT.search(COLLECTION, data=[vector], limit=LIMIT, filter=flt.expression(), output_fields=RENDER_FIELDS,
                        search_params=PARAMS, consistency_level="Bounded")
    # the primary key comes back as "id" from Milvus 2.3 and under its field name from milvus-lite
    return [{"listing_id": h.get("id") or h.get("listing_id"), "score": h["distance"], **h["entity"]}
            for h in res[0][:K]]


@app.get("/v1/listings/{listing_id}/similar")
async def similar(listing_id: str) -> Response:
    if listing_id not in SEEDS:
        raise HTTPException(404, "unknown seed")
    return Response(orjson.dumps({"items": await asyncio.to_thread(search, listing_id)}), media_type="application/json")
