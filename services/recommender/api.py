"""FastAPI adapter: HTTP <-> SimilarListings, A/B assignment, impression logging, errors, metrics."""


import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.embedder_client import EmbedderClient, EmbedderError
from services.common.events import ID_PATTERN
from services.common.image_fetch import FetchError, ImageFetcher
from services.common.metrics import Metrics
from services.experiments.assignment import Assigned, Assigner

from .clicks import ClickService, click_router
from .demo import demo_router
from .impressions import ImpressionLogger
from .retrieval import DependencyDown, NotFound, Query as SearchQuery, Result, SimilarListings
from .schemas import ErrorResponse, SimilarResponse
from .settings import RecommendConfig

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9\-]{8,64}$")
ERRORS = {404: "not_found", 413: "payload_too_large", 422: "invalid_request", 503: "dependency_unavailable"}


@dataclass
class Dependencies:
    similar: SimilarListings
    assigner: Assigner
    impressions: ImpressionLogger | None
    embedder: EmbedderClient | None
    fetcher: ImageFetcher
    metrics: Metrics
    cfg: RecommendConfig
    ready: Any = None  # callable -> (bool, detail)
    clicks: ClickService | None = None  # POST /v1/events/click (validated against served requests)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code or ERRORS.get(status, "error")


def _error(request: Request, status: int, code: str, message: str) -> JSONResponse:
    rid = getattr(request.state, "request_id", "unknown")
    return JSONResponse({"error": {"code": code, "message": message, "request_id": rid}}, status_code=status,
                        headers={"x-request-id": rid})


class RequestContext:
    """Every request gets a request id of the server's own on `request.state` and on the response
    (X-Request-Id), its latency in the histogram, and a JSON 500 instead of a stack trace. The id
    keys the impression, the clicks and the aggregator's dedupe, so it must be unique: a client's
    X-Request-Id (a trace id a frontend may reuse across pages) is not taken for it but echoed
    as X-Correlation-Id and logged with errors. Plain ASGI:
    `@app.middleware("http")` (BaseHTTPMiddleware) adds a task group and a memory stream to every
    request, which cost about a fifth of the API's CPU per request."""

    def __init__(self, app: ASGIApp, latency) -> None:
        self.app, self.latency = app, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        corr = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        corr = corr if _REQUEST_ID.match(corr) else ""
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = rid
                if corr:
                    headers["x-correlation-id"] = corr
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            log.exception("unhandled error", extra={"request_id": rid, "correlation_id": corr or None})
            if started:
                raise
            await _error(Request(scope), 500, "internal", "internal error; quote the request id to support")(
                scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            self.latency.labels(route=getattr(route, "path", "unmatched"), status=str(status)).observe(
                time.perf_counter() - start)


def create_app(deps: Dependencies, lifespan=None) -> FastAPI:
    app = FastAPI(lifespan=lifespan, title="adrec recommender", version="1.0",
                  description="Listings visually similar to a listing or an image, with A/B variants.",
                  responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
                             503: {"model": ErrorResponse}})
    cfg = deps.cfg
    latency = deps.metrics.histogram("request_seconds", "request latency", ["route", "status"])
    served = deps.metrics.counter("responses_total", "responses by fallback and variant", ["fallback", "variant"])

    app.add_middleware(RequestContext, latency=latency)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(request, exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p not in ('query', 'path', 'body'))}: {e['msg']}"
                 for e in exc.errors()[:10]]
        return _error(request, 422, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(request, exc.status_code, ERRORS.get(exc.status_code, "error"), str(exc.detail))

    def assign(user_id: str | None) -> tuple[str, Assigned]:
        uid = user_id or f"anon-{uuid.uuid4().hex[:16]}"
        return uid, deps.assigner.assign(uid)

    def make_query(assigned: Assigned, k: int | None, page: int, category: str | None, min_price: float | None,
                   max_price: float | None, exclude_shop: bool) -> SearchQuery:
        if min_price is not None and max_price is not None and min_price > max_price:
            raise ApiError(422, "min_price must not exceed max_price")
        p = assigned.params
        return SearchQuery(k=k or p.k or cfg.default_k, page=page, category=category, min_price=min_price,
                           max_price=max_price, exclude_seed_shop=exclude_shop,
                           max_per_shop=p.max_per_shop or cfg.max_per_shop, overfetch=p.overfetch or cfg.overfetch,
                           collection=p.collection)

    def respond(request: Request, uid: str, assigned: Assigned, q: SearchQuery, result: Result) -> Response:
        """Built as plain dicts and serialised with orjson: the response model documents the shape
        (OpenAPI) and tests check it; validating it again on every request would double the cost."""
        rid = request.state.request_id
        items = [{"listing_id": h.listing_id, "score": h.score, "title": h.fields.get("title"),
                  "price": h.fields.get("price"), "currency": h.fields.get("currency"),
                  "image_uri": h.fields.get("image_uri"), "shop_id": h.fields.get("shop_id"),
                  "category": h.fields.get("category")} for h in result.items]
        experiments = [a.model_dump() for a in assigned.assignments]
        if deps.impressions is not None and items:
            deps.impressions.log_shown(request_id=rid, user_id=uid,
                                       seed_listing_id=result.seed["listing_id"] if result.seed else None,
                                       assignments=experiments, start=(q.page - 1) * q.k,
                                       shown=[(i["listing_id"], i["score"]) for i in items], fallback=result.fallback)
        if deps.clicks is not None and items:
            deps.clicks.remember(rid, uid, [i["listing_id"] for i in items], start=(q.page - 1) * q.k)
        served.labels(fallback=result.fallback or "none", variant=assigned.label()).inc()
        return Response(orjson.dumps({"request_id": rid, "user_id": uid, "experiments": experiments,
                                      "seed": result.seed, "k": q.k, "page": q.page, "items": items,
                                      "fallback": result.fallback, "model_version": result.model_version}),
                        media_type="application/json")

    async def run(fn, *args):
        try:
            return await asyncio.to_thread(fn, *args)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from exc
        except DependencyDown as exc:
            raise ApiError(503, str(exc)) from exc

    K = Annotated[int | None, Query(ge=1, le=cfg.max_k, description="results per page")]
    Page = Annotated[int, Query(ge=1, le=cfg.max_page)]
    Category = Annotated[str | None, Query(min_length=1, max_length=128,
                                           description="a category, or `same` for the seed's category")]
    Price = Annotated[float | None, Query(ge=0, le=1e9)]
    UserId = Annotated[str | None, Query(pattern=ID_PATTERN, description="A/B unit (or header X-User-Id)")]

    @app.get("/v1/listings/{listing_id}/similar", response_model=SimilarResponse, tags=["recommendations"],
             summary="Listings that look like this one")
    async def similar_to_listing(
            request: Request,
            listing_id: Annotated[str, Path(pattern=ID_PATTERN)],
            k: K = None, page: Page = 1, category: Category = None, min_price: Price = None,
            max_price: Price = None,
            exclude_shop: Annotated[bool, Query(description="exclude the seed listing's shop")] = True,
            user_id: UserId = None,
            x_user_id: Annotated[str | None, Header(pattern=ID_PATTERN)] = None) -> Response:
        uid, assigned = assign(user_id or x_user_id)
        q = make_query(assigned, k, page, category, min_price, max_price, exclude_shop)
        result = await run(deps.similar.for_listing, listing_id, q)
        return respond(request, uid, assigned, q, result)

    @app.post("/v1/similar", response_model=SimilarResponse, tags=["recommendations"],
              summary="Listings that look like an uploaded image or an image URI")
    async def similar_to_image(
            request: Request,
            image: Annotated[UploadFile | None, File(description="an encoded image (JPEG, PNG, WebP)")] = None,
            image_uri: Annotated[str | None, Form(max_length=2048)] = None,
            k: K = None, page: Page = 1, category: Category = None, min_price: Price = None,
            max_price: Price = None, user_id: UserId = None,
            x_user_id: Annotated[str | None, Header(pattern=ID_PATTERN)] = None) -> Response:
        if (image is None) == (image_uri is None):
            raise ApiError(422, "send exactly one of: an `image` file or an `image_uri` form field")
        if category == "same":
            raise ApiError(422, "category: `same` needs a seed listing (GET /v1/listings/{id}/similar); "
                                "name a category instead")
        if image is not None:
            data = await image.read(cfg.max_upload_bytes + 1)
            if len(data) > cfg.max_upload_bytes:
                raise ApiError(413, f"image larger than {cfg.max_upload_bytes} bytes")
            if not data:
                raise ApiError(422, "image: empty file")
        else:
            try:
                data = await asyncio.to_thread(deps.fetcher.fetch, image_uri)
            except FetchError as exc:
                raise ApiError(422 if exc.permanent else 503, f"image_uri: {exc.reason}") from exc
        if deps.embedder is None:
            raise ApiError(503, "embedder not configured")
        try:
            vector = (await asyncio.to_thread(deps.embedder.embed_images, [data]))[0]
        except EmbedderError as exc:
            raise ApiError(422 if exc.permanent else 503, f"embedder: {exc.reason}") from exc
        uid, assigned = assign(user_id or x_user_id)
        q = make_query(assigned, k, page, category, min_price, max_price, True)
        result = await run(deps.similar.for_vector, vector.tolist(), q, deps.embedder.cfg.model_name)
        return respond(request, uid, assigned, q, result)

    if deps.clicks is not None:
        app.include_router(click_router(deps))
    if cfg.demo_page:
        app.include_router(demo_router(deps))

    @app.get("/healthz", tags=["ops"], summary="liveness")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="readiness: the vector index and feature store answer")
    async def readyz(request: Request):
        ok, detail = await asyncio.to_thread(deps.ready) if deps.ready else (True, {})
        if not ok:
            return _error(request, 503, "not_ready", str(detail))
        return {"status": "ready", **detail}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        body, ctype = deps.metrics.exposition()
        return Response(body, media_type=ctype)

    return app
