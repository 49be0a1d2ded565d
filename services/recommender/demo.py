"""The demo page (`GET /demo`): pick a listing or upload an image, see the similar ads with their
scores and the A/B variant, click one (a real click event), follow the link to the dashboard.

Plain HTML/JS/CSS from `static/` (no build step, nothing fetched from outside this server),
driving the public API (`/v1/listings/{id}/similar`, `/v1/similar`, `/v1/events/click`). Three
helper endpoints exist for the page only:

- `GET /demo/api/config`: dashboard URL, experiments and their variants, k limits;
- `GET /demo/api/listings`: a sample of indexed listings to pick from (a Milvus query, cached);
- `GET /demo/images/{listing_id}`: the listing's image when its `image_uri` is a local file
  inside the configured image roots (`recommend.image_roots`, the ImageFetcher's roots);
  anything else is refused. http(s) image URIs are used by the page directly.

Wiring: `app.include_router(demo_router(deps))` (on unless `recommend.demo_page` is false).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlparse

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from services.common.events import ID_PATTERN
from services.common.image_fetch import FetchError

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"demo.js": "text/javascript; charset=utf-8", "demo.css": "text/css; charset=utf-8"}
_ID = re.compile(ID_PATTERN)
POOL_FIELDS = ["listing_id", "title", "category", "price", "currency", "shop_id", "image_uri"]
POOL_LIMIT = 5000  # listings the picker samples from (one scalar query, cached)
POOL_TTL_S = 60.0
IMAGE_TYPES = [(b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF87a", "image/gif"),
               (b"GIF89a", "image/gif")]
# the page loads only this server's scripts and styles; images may come from http(s) image URIs
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' http: https: blob: data:; object-src 'none'; base-uri 'none'; form-action 'self'")


def image_url(listing_id: str, image_uri: str | None) -> str | None:
    """What the page puts in <img src>: an http(s) URI as is, a local file through /demo/images."""
    if not image_uri:
        return None
    if urlparse(image_uri).scheme in ("http", "https"):
        return image_uri
    return f"/demo/images/{listing_id}"


def _sniff(data: bytes) -> str | None:
    for magic, ctype in IMAGE_TYPES:
        if data.startswith(magic):
            return ctype
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class ListingPool:
    """Active listings for the picker: one Milvus scalar query, refreshed at most every POOL_TTL_S."""

    def __init__(self, vectors: Any) -> None:
        self.vectors = vectors
        self._rows: list[dict] = []
        self._at = -1e9
        self._lock = threading.Lock()

    def rows(self) -> list[dict]:
        with self._lock:
            if time.monotonic() - self._at > POOL_TTL_S:
                rows = self.vectors.query("active == true", limit=POOL_LIMIT, output_fields=POOL_FIELDS)
                self._rows = sorted(rows, key=lambda r: str(r["listing_id"]))
                self._at = time.monotonic()
            return self._rows


def demo_router(deps) -> APIRouter:
    """Needs deps.similar.vectors (ListingVectorStore), deps.fetcher (ImageFetcher), deps.assigner, deps.cfg."""
    cfg = deps.cfg
    vectors = deps.similar.vectors
    fetcher = deps.fetcher
    pool = ListingPool(vectors)
    router = APIRouter(tags=["demo"])

    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/demo", status_code=307)

    @router.get("/demo", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "demo.html", media_type="text/html; charset=utf-8",
                            headers={"cache-control": "no-cache", "content-security-policy": CSP,
                                     "x-content-type-options": "nosniff"})

    @router.get("/demo/static/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:  # a fixed list: no path ever reaches the file system
            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(STATIC / name, media_type=ASSETS[name],
                            headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})

    @router.get("/demo/api/config", summary="What the demo page needs to know")
    async def config() -> dict:
        experiments = [{"id": e.id, "variants": [v.name for v in e.variants]}
                       for e in deps.assigner.config.all_experiments()]
        return {"dashboard_url": cfg.dashboard_url, "default_k": cfg.default_k, "max_k": cfg.max_k,
                "max_upload_bytes": cfg.max_upload_bytes, "experiments": experiments}

    @router.get("/demo/api/listings", summary="A sample of indexed listings to pick from")
    async def listings(limit: Annotated[int, Query(ge=1, le=200)] = 24,
                       category: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
                       seed: Annotated[int, Query(ge=0, le=2**31, description="sample seed (shuffle)")] = 0) -> dict:
        try:
            rows = await asyncio.to_thread(pool.rows)
        except Exception as exc:  # noqa: BLE001 - any client error: the index is down for us
            raise HTTPException(503, f"vector index unavailable: {str(exc)[:200]}") from exc
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.get("category") or ""] = counts.get(r.get("category") or "", 0) + 1
        chosen = [r for r in rows if category is None or r.get("category") == category]
        sample = random.Random(seed).sample(chosen, min(limit, len(chosen)))
        items = [{"listing_id": str(r["listing_id"]), "title": r.get("title"), "category": r.get("category"),
                  "price": r.get("price"), "currency": r.get("currency"), "shop_id": r.get("shop_id"),
                  "image_uri": r.get("image_uri"), "image_url": image_url(str(r["listing_id"]), r.get("image_uri"))}
                 for r in sample]
        return {"items": items, "total": len(chosen),
                "categories": [{"name": c, "count": n} for c, n in sorted(counts.items()) if c]}

    @router.get("/demo/images/{listing_id}", summary="A listing's local image (inside the image roots only)",
                responses={403: {"description": "the image is outside the allowed roots"},
                           404: {"description": "unknown listing, or no local image"}})
    async def image(listing_id: str, request: Request) -> Response:
        if not _ID.match(listing_id):
            raise HTTPException(404, "unknown listing")
        try:
            rows = await asyncio.to_thread(vectors.get, [listing_id], None, False)
        except Exception as exc:  # noqa: BLE001
            raise HTTPException(503, f"vector index unavailable: {str(exc)[:200]}") from exc
        if not rows:
            raise HTTPException(404, f"listing {listing_id} not found")
        uri = rows[0].get("image_uri") or ""
        parsed = urlparse(uri)
        if not uri or parsed.scheme not in ("", "file"):
            raise HTTPException(404, f"listing {listing_id} has no local image (use its image_uri)")
        # the ImageFetcher's own roots and check; resolve() first: no `..`, no symlink out of a root
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri).resolve()
        if not any(path.is_relative_to(root) for root in fetcher.allowed_roots):
            raise HTTPException(403, f"the image of listing {listing_id} is outside the allowed image roots")
        try:
            data = await asyncio.to_thread(fetcher.fetch, str(path))
        except FetchError as exc:
            raise HTTPException(404 if exc.permanent else 503, f"image of listing {listing_id}: {exc.reason}") \
                from exc
        ctype = _sniff(data)
        if ctype is None:
            raise HTTPException(404, f"the file of listing {listing_id} is not an image")
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        headers = {"cache-control": "public, max-age=3600", "etag": etag, "x-content-type-options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=ctype, headers=headers)

    return router
