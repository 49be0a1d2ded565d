"""Item CTR written back to Feast (`item_ctr_push`: impressions, clicks, ctr) for the re-ranker.

The aggregator marks a listing dirty whenever its impressions or clicks change; the pusher
pops a batch of dirty listings, reads their counters and pushes the smoothed CTR
    ctr = (clicks + prior * m) / (impressions + m)
(a Beta prior with mean `prior`, weight `m` impressions), so a listing shown twice and
clicked once does not outrank one with a long record. A failed push puts the listings back.
`push_all()` re-pushes every listing (e.g. after the online store was rebuilt).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from services.common.feature_store import FeatureStoreClient
from services.common.metrics import Metrics

from .state import AbState

log = logging.getLogger(__name__)
PUSH_SOURCE = "item_ctr_push"


def smoothed_ctr(clicks: int, impressions: int, prior: float, strength: float) -> float:
    return (clicks + prior * strength) / (impressions + strength) if impressions + strength > 0 else prior


class ItemCtrPusher:
    def __init__(self, state: AbState, features: FeatureStoreClient, metrics: Metrics | None = None, *,
                 prior: float = 0.02, strength: float = 100.0, batch: int = 1000) -> None:
        self.state = state
        self.features = features
        self.prior = prior
        self.strength = strength
        self.batch = batch
        self.stopping = threading.Event()
        self.pushed = metrics.counter("item_ctr_pushed_total", "item CTR rows pushed to Feast") if metrics else None

    def rows(self, listing_ids: Sequence[str]) -> list[dict]:
        return [{"listing_id": lid, "impressions": c["impressions"], "clicks": c["clicks"],
                 "ctr": smoothed_ctr(c["clicks"], c["impressions"], self.prior, self.strength)}
                for lid, c in zip(listing_ids, self.state.items(listing_ids))]

    def _push(self, ids: list[str]) -> int:
        try:
            n = self.features.push(PUSH_SOURCE, self.rows(ids))
        except Exception:
            self.state.mark_dirty(ids)  # try again next round
            raise
        if self.pushed is not None:
            self.pushed.inc(n)
        return n

    def push_dirty(self) -> int:
        """Push every listing changed since the last round; returns rows pushed."""
        total = 0
        while True:
            ids = self.state.pop_dirty_items(self.batch)
            if not ids:
                return total
            total += self._push(ids)

    def push_all(self) -> int:
        ids = self.state.all_item_ids()
        return sum(self._push(ids[i:i + self.batch]) for i in range(0, len(ids), self.batch))

    def run(self, interval_s: float) -> None:
        while not self.stopping.wait(interval_s):
            try:
                n = self.push_dirty()
                if n:
                    log.info("item CTR pushed", extra={"rows": n})
            except Exception as exc:  # noqa: BLE001 - Feast down: keep aggregating, retry later
                log.warning("item CTR push failed: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
