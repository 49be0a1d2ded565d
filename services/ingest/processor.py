"""One batch of listing events -> Milvus + Feast, idempotent and order-safe.

Rules:
- per listing only the newest event counts, by `updated_at` / `deleted_at`; on a tie a delete
  beats an upsert, and between equal upserts the first in partition order wins (so a replay
  of the same version, in this batch or a later one, is skipped); when the newest is
  dead-lettered (its image), the next newest counts, as if each had come in its own batch;
- an event not newer than what the feature store already holds for the listing is skipped,
  so replays and late, older events change nothing;
- Milvus is written first, Feast last: Feast's `item_metadata.updated_at` is the version
  marker, so a crash between the two writes is repaired by the replay;
- a delete removes the vector and leaves an inactive tombstone in Feast (which keeps an older
  upsert that arrives later from resurrecting the listing);
- an event dated more than `max_future_s` ahead of the clock is refused: as the version marker
  it would make every later real update of the listing stale.
Messages that can never succeed come back as dead letters with a reason (a bad image too: any
error fetching it fails that event only). Transient errors are retried here; then an image fetch
is dead-lettered, while an embedder that is down (restarting, model not loaded) is raised like a
sink that is down: the batch is not committed and the worker retries it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from services.common.embedder_client import EmbedderError
from services.common.events import ListingDeleted, ListingUpserted
from services.common.kafka_client import Message
from services.common.milvus_store import ListingVector, VectorStoreError

from .embedding import Embedder
from services.common.image_fetch import FetchError, ImageFetcher

log = logging.getLogger(__name__)
META_FEATURES = ["shop_id", "title", "category", "price", "currency", "image_uri", "active", "updated_at"]


class VectorSink(Protocol):
    def upsert(self, rows: Sequence[ListingVector], collection: str | None = None) -> int: ...
    def delete(self, listing_ids: Sequence[str], collection: str | None = None) -> None: ...


class FeatureSink(Protocol):
    def push(self, source: str, rows: Sequence[dict[str, Any]]) -> int: ...
    def read(self, features: Sequence[str], entity_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]: ...


def epoch_ms(dt: Any) -> int:
    return int(dt.timestamp() * 1000)


@dataclass
class DeadLetterItem:
    message: Message
    reason: str
    kind: str
    attempts: int = 1


@dataclass
class BatchResult:
    upserted: int = 0
    deleted: int = 0
    stale: int = 0
    superseded: int = 0
    dead: list[DeadLetterItem] = field(default_factory=list)
    freshness_s: list[float] = field(default_factory=list)


class ListingProcessor:
    def __init__(self, vectors: VectorSink, features: FeatureSink, embedder: Embedder, fetcher: ImageFetcher,
                 *, fetch_workers: int = 8, max_attempts: int = 3, backoff_s: float = 0.2,
                 max_future_s: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.vectors = vectors
        self.features = features
        self.embedder = embedder
        self.fetcher = fetcher
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_future_s = max_future_s
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=fetch_workers, thread_name_prefix="fetch")
        self._sinks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink")

    # -- the batch -------------------------------------------------------------------------

    def process(self, messages: Sequence[Message]) -> BatchResult:
        result = BatchResult()
        by_listing: dict[str, list[tuple[Message, ListingUpserted | ListingDeleted]]] = {}
        now = self.clock()
        for m in messages:
            if not m.ok:
                result.dead.append(DeadLetterItem(m, m.error.reason, m.error.kind))
                continue
            ev = m.event
            if not isinstance(ev, ListingUpserted | ListingDeleted):
                result.dead.append(DeadLetterItem(m, f"unexpected event type {ev.type!r} on the listings topic",
                                                  "schema"))
                continue
            name = "updated_at" if isinstance(ev, ListingUpserted) else "deleted_at"
            ts = getattr(ev, name)
            if ts.timestamp() - now > self.max_future_s:
                clock = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
                result.dead.append(DeadLetterItem(m, f"{name} {ts.isoformat()} is more than {self.max_future_s:g}s "
                                                     f"ahead of the clock ({clock})", "schema"))
                continue
            by_listing.setdefault(ev.id, []).append((m, ev))
        if not by_listing:
            return result
        for evs in by_listing.values():  # newest first; on a tie the earlier offset (a stable sort)
            evs.sort(key=lambda me: _order(me[1]), reverse=True)

        current = self._current(list(by_listing))
        rows: list[ListingVector] = []
        meta_rows: list[dict[str, Any]] = []
        emb_rows: list[dict[str, Any]] = []
        events_written: list[tuple[Message, ListingUpserted]] = []
        deletes: list[tuple[Message, ListingDeleted, dict | None]] = []
        # the newest event of each listing; when its image cannot be fetched or embedded (dead-lettered),
        # the next newest, as if the two had come in separate batches: a batch boundary changes nothing
        todo = list(by_listing)
        while todo:
            upserts = []
            for lid in todo:
                m, ev = by_listing[lid].pop(0)
                cur = current.get(lid)
                cur_ts = cur["updated_at"] if cur and cur.get("updated_at") is not None else None
                if isinstance(ev, ListingUpserted):
                    if cur_ts is not None and epoch_ms(ev.updated_at) <= cur_ts:
                        result.stale += 1
                    else:
                        upserts.append((m, ev))
                elif cur_ts is not None and epoch_ms(ev.deleted_at) < cur_ts:
                    result.stale += 1
                else:
                    deletes.append((m, ev, cur))
            failed = self._embed(upserts, result, rows, meta_rows, emb_rows, events_written)
            todo = [lid for lid in failed if by_listing[lid]]
        result.superseded = sum(len(evs) for evs in by_listing.values())  # older events never needed

        # Milvus and the embedding view in parallel; the metadata view (version marker) after both
        pending = [self._sinks.submit(self.features.push, "item_embedding_push", emb_rows)] if emb_rows else []
        if rows:
            self.vectors.upsert(rows)
        if deletes:
            self.vectors.delete([ev.id for _, ev, _ in deletes])
        for fut in pending:
            fut.result()
        now = self.clock()
        for m, ev in events_written:
            result.freshness_s.append(max(0.0, now - ev.occurred_at.timestamp()))
        for m, ev, _ in deletes:
            result.freshness_s.append(max(0.0, now - ev.occurred_at.timestamp()))
        meta_rows += [_tombstone(ev, cur) for _, ev, cur in deletes]
        if meta_rows:
            self.features.push("item_metadata_push", meta_rows)  # last: the version marker
        result.upserted, result.deleted = len(rows), len(deletes)
        return result

    def _current(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = self.features.read([f"item_metadata:{f}" for f in META_FEATURES],
                                  [{"listing_id": i} for i in ids])
        return {r["listing_id"]: r for r in rows if r.get("updated_at") is not None}

    # -- images and vectors ------------------------------------------------------------------

    def _embed(self, upserts: list[tuple[Message, ListingUpserted]], result: BatchResult, rows: list[ListingVector],
               meta_rows: list[dict[str, Any]], emb_rows: list[dict[str, Any]],
               written: list[tuple[Message, ListingUpserted]]) -> list[str]:
        """Fetch and embed `upserts`, appending the rows to write; dead-letters the failures and
        returns their listing ids."""
        failed: list[str] = []
        if not upserts:
            return failed
        needs_images = getattr(self.embedder, "needs_images", True)
        fetched = list(self._pool.map(self._fetch_with_retry, [ev.image_uri for _, ev in upserts])) \
            if needs_images else [(b"", None)] * len(upserts)
        ok = []
        for (m, ev), (data, err) in zip(upserts, fetched, strict=True):
            if err is not None:
                result.dead.append(DeadLetterItem(m, f"image: {err.reason}", "fetch", err.attempts))
                failed.append(ev.id)
            else:
                ok.append((m, ev, data))
        vectors = self._embed_with_retry([d for _, _, d in ok], [ev.image_uri for _, ev, _ in ok])
        version = self.embedder.model_version
        for (m, ev, _), vec in zip(ok, vectors, strict=True):
            if isinstance(vec, EmbedderError):
                result.dead.append(DeadLetterItem(m, f"embedder: {vec.reason}", "embedder"))
                failed.append(ev.id)
                continue
            vec = np.asarray(vec, np.float32)
            if not np.all(np.isfinite(vec)):
                result.dead.append(DeadLetterItem(m, "embedder returned NaN/inf", "embedder"))
                failed.append(ev.id)
                continue
            ts = epoch_ms(ev.updated_at)
            rows.append(ListingVector(ev.id, vec.tolist(), ev.shop_id, ev.category, float(ev.price),
                                      ev.active, ts, version, ev.title, ev.image_uri, ev.currency))
            emb_rows.append({"listing_id": ev.id, "embedding": vec.tolist(), "model_version": version,
                             "updated_at": ts})
            meta_rows.append({"listing_id": ev.id, "shop_id": ev.shop_id, "title": ev.title,
                              "category": ev.category, "price": float(ev.price), "currency": ev.currency,
                              "image_uri": ev.image_uri, "active": ev.active, "updated_at": ts})
            written.append((m, ev))
        return failed

    def _fetch_with_retry(self, uri: str) -> tuple[bytes, _Failure | None]:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self.fetcher.fetch(uri), None
            except FetchError as exc:
                if exc.permanent or attempt == self.max_attempts:
                    return b"", _Failure(exc.reason, attempt)
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            except Exception as exc:  # noqa: BLE001 - unforeseen: this image fails, never the batch
                log.warning("unexpected error fetching %r", uri, exc_info=True)
                return b"", _Failure(f"unexpected {type(exc).__name__} fetching {uri!r}: {exc}", attempt)
        raise AssertionError("unreachable")

    def _embed_with_retry(self, images: list[bytes], uris: list[str]) -> list[np.ndarray | EmbedderError]:
        """A vector or a permanent error per image. A transient error (the embedder unreachable, 5xx,
        404 while a model loads) is retried, then raised: the batch must not be dead-lettered for it."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                out = self.embedder.embed(images, uris)
                transient = next((v for v in out if isinstance(v, EmbedderError) and not v.permanent), None)
                if transient is None:
                    return out
                raise transient
            except EmbedderError as exc:
                if exc.permanent:  # the whole batch refused for good
                    return [exc] * len(images)
                if attempt == self.max_attempts:
                    raise EmbedderError(f"{exc.reason} (after {attempt} attempts)", permanent=False,
                                        status=exc.status) from exc
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sinks.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Failure:
    reason: str
    attempts: int


def _order(ev: ListingUpserted | ListingDeleted) -> tuple[int, int]:
    if isinstance(ev, ListingDeleted):
        return epoch_ms(ev.deleted_at), 1
    return epoch_ms(ev.updated_at), 0


def _tombstone(ev: ListingDeleted, cur: dict[str, Any] | None) -> dict[str, Any]:
    cur = cur or {}
    return {"listing_id": ev.id, "shop_id": cur.get("shop_id") or "", "title": cur.get("title") or "",
            "category": cur.get("category") or "", "price": float(cur.get("price") or 0.0),
            "currency": cur.get("currency") or "USD", "image_uri": cur.get("image_uri") or "",
            "active": False, "updated_at": epoch_ms(ev.deleted_at)}


__all__ = ["BatchResult", "DeadLetterItem", "ListingProcessor", "VectorStoreError"]
